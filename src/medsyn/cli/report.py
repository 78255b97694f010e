"""`medsyn report RUN_DIR`: rebuild report.html and summary.md from a run folder."""

from __future__ import annotations

from pathlib import Path

from medsyn.errors import MedsynError
from medsyn.fileio import check_writable


def register(verbs) -> None:
    parser = verbs.add_parser("report", help="rebuild report.html and summary.md of a run folder")
    parser.add_argument("run_dir", type=Path, help="a folder written by `medsyn run`")
    parser.set_defaults(func=run_report)


def run_report(args) -> int:
    from medsyn.report import build_report

    missing = [f for f in ("config.json", "data.json", "results.json") if not (args.run_dir / f).exists()]
    if missing:
        raise MedsynError(f"{args.run_dir}: not a finished run folder (missing {', '.join(missing)}); run "
                          f"`medsyn run --out {args.run_dir} --resume` to finish it first.")
    check_writable(args.run_dir)
    print(f"report: {build_report(args.run_dir)}")
    return 0
