"""Threads per process on this machine: one process with 1 thread, one with 2 threads, and two 1-thread processes
side by side, for the reference cgan (training steps/s; benchmarks/common.py) and the quick classifier (training
images/s). Prints the throughput of each layout and its ratio to one 1-thread process, which is how `medsyn run`
chooses its default (one thread per job, as many workers as cores).

    python benchmarks/threads.py [--gan-steps 150] [--classify-steps 60] [--note TEXT]

Writes benchmarks/results/threads_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import add_note_argument, dated, write_results


def _child(kind: str, threads: int, steps: int) -> subprocess.Popen:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import common; "
            f"print(json.dumps(common.{kind}_rate({threads}, {steps})))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def layout(kind: str, processes: int, threads: int, steps: int) -> float:
    children = [_child(kind, threads, steps) for _ in range(processes)]
    return sum(json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gan-steps", type=int, default=150)
    parser.add_argument("--classify-steps", type=int, default=60)
    add_note_argument(parser)
    args = parser.parse_args()
    rows = []
    print(f"{'job':<10}{'layout':<26}{'throughput':>14}{'ratio':>8}")
    for kind, steps, unit in (("gan", args.gan_steps, "steps/s"), ("classify", args.classify_steps, "images/s")):
        base = None
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            rate = layout(kind, processes, threads, steps)
            base = base or rate
            print(f"{kind:<10}{f'{processes} process(es) x {threads} thread(s)':<26}{rate:>9.1f} {unit:<5}"
                  f"{rate / base:>7.2f}x", flush=True)
            rows.append({"job": kind, "processes": processes, "threads": threads, "steps": steps,
                         unit.replace("/", "_per_"): round(rate, 2), "ratio": round(rate / base, 3)})
    write_results(dated("threads"), {"rows": rows}, note=args.note)


if __name__ == "__main__":
    main()
