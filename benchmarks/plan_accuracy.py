"""How close the plan's estimate comes to a real run on this machine: `medsyn run` with the given flags, its
estimate (calibrated on this machine, as the run prints it first) against the measured wall time, in total and per
job kind, with this machine's speeds beside it, the run's peak memory per job kind and the timed parts of each
audit (what study/plan.py's audit constants are fitted to).

    python benchmarks/plan_accuracy.py --tag bundled-quick -- [medsyn run flags]
    python benchmarks/plan_accuracy.py --tag xray64-quick -- --data ../shared/data/chest_xray_224 --size 64

Writes benchmarks/results/plan_accuracy_<tag>_<date>.json (with the machine's reference speed:
benchmarks/common.py); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_note_argument, dated, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True, help="names the results file")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    add_note_argument(parser)
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="after --: the flags of medsyn run")
    args = parser.parse_args()
    flags = [f for f in args.flags if f != "--"]
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "run"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "medsyn", "run", *flags, "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            print(done.stdout[-4000:], done.stderr[-4000:])
            return done.returncode
        result = _compare(flags, out, done.stdout, wall)
    write_results(dated(f"plan_accuracy_{args.tag}"), result, note=args.note)
    print(json.dumps({k: result[k] for k in ("estimated_min", "measured_min", "ratio")}))
    return 0


def _compare(flags: list[str], out: Path, printed: str, wall: float) -> dict:
    from medsyn.cli import build_parser
    from medsyn.fileio import read_json
    from medsyn.cli.run import run_config
    from medsyn.study import build_plan
    from medsyn.study.calibrate import cached_speeds
    from medsyn.study.plan import reference_speeds

    estimate = float(re.search(r"estimated wall time with \d+ worker\(s\): about ([\d.]+) min", printed)[1])
    measured = float(re.search(r"study finished in ([\d.]+) min", printed)[1])
    config = run_config(build_parser().parse_args(["run", *flags]))
    speeds = cached_speeds(config, reference_speeds(config))  # the run measured them: read back from the cache
    n_train = sum(read_json(out / "data.json")["counts"]["train"])
    plan = {j.name: j for j in build_plan(config, n_train, speeds)}
    kinds: dict[str, dict] = {}
    for name, job in read_json(out / "timings.json")["jobs"].items():
        kind = kinds.setdefault(job["kind"], {"jobs": 0, "estimated_s": 0.0, "measured_s": 0.0, "peak_rss_mib": 0.0})
        kind["jobs"] += 1
        kind["estimated_s"] = round(kind["estimated_s"] + plan[name].estimate_s, 1)
        kind["measured_s"] = round(kind["measured_s"] + job["seconds"], 1)
        kind["peak_rss_mib"] = max(kind["peak_rss_mib"], job["peak_rss_mib"])
    return {"flags": flags, "estimated_min": estimate, "measured_min": measured, "ratio": round(measured / estimate, 3),
            "wall_min_with_start_up": round(wall / 60, 2), "per_kind": kinds, "speeds": dataclasses.asdict(speeds),
            "audit_parts_s": {name: read_json(out / job.done_file)["timing_s"]
                              for name, job in plan.items() if job.kind == "audit"},
            "printed_first_lines": printed.splitlines()[:3],
            "verdict": _verdict(out / "summary.md")}


def _verdict(summary: Path) -> str:
    """The summary's verdict paragraph(s): what the run concluded, kept beside its timing."""
    text = summary.read_text(encoding="utf-8")
    return text.split("## Verdict", 1)[-1].split("\n## ", 1)[0].strip()


if __name__ == "__main__":
    sys.exit(main())
