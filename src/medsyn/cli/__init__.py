"""The single `medsyn` command: verbs map to stage functions.

One module per verb in this package, each with `register(subparsers)`; this file only collects them, parses, and maps
errors to exit codes. Stage modules import torch lazily, so `medsyn --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medsyn import __version__, show_progress
from medsyn.errors import MedsynError

STAGE_CLIS = (  # in pipeline order, as `medsyn --help` lists them
    "medsyn.cli.data",
    "medsyn.cli.gan",
    "medsyn.cli.classify",
    "medsyn.cli.run",
    "medsyn.cli.audit",
    "medsyn.cli.report",
    "medsyn.cli.app",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsyn",
        description="Train a class-conditional GAN on medical images, synthesize labelled images, and measure on "
        "held-out real test data whether they make a classifier better.",
    )
    parser.add_argument("--version", action="version", version=f"medsyn {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    for module in STAGE_CLIS:
        importlib.import_module(module).register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    show_progress()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # numeric flags are validated here (medsyn.config.number)
        return args.func(args) or 0
    except MedsynError as err:
        print(f"medsyn: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("medsyn: interrupted; finished stages are kept and `--resume` continues from them.", file=sys.stderr)
        return 130
    finally:
        from medsyn.fileio import release_out_dirs

        release_out_dirs()  # the verb is over: its output folders are free for the next writer
