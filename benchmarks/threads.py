"""Threads per process on this machine: one process with 1 thread, one with 2 threads, and two 1-thread processes
side by side, for the quick cgan (training steps/s) and the quick classifier (training images/s). Prints the
throughput of each layout and its ratio to one 1-thread process, which is how `medsyn run` chooses its default
(one thread per job, as many workers as cores).

    python benchmarks/threads.py [--gan-steps 150] [--classify-steps 60]

Measured on this project's 2-core machine (idle, 2026-11-25): see the table in the closing note of the execution
issue and the README's Execution paragraph.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def gan_rate(threads: int, steps: int) -> float:
    import dataclasses
    import tempfile

    import torch

    from medsyn import data, generators
    from medsyn.config import gan_preset, preset

    torch.set_num_threads(threads)
    dataset = data.load(None, preset("quick").data)
    config = dataclasses.replace(gan_preset("quick"), steps=steps, snapshot_every=10 ** 6)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generators.train(dataset, config, tmp, progress=False)
        return steps / (time.perf_counter() - start)


def classify_rate(threads: int, steps: int) -> float:
    import dataclasses

    import torch

    from medsyn import data
    from medsyn.classify import fit
    from medsyn.classify.arms import parse_arm, training_data
    from medsyn.config import preset

    dataset = data.load(None, preset("quick").data)
    config = dataclasses.replace(preset("quick").classify, epochs=1, patience=1, threads=threads)
    train = dataset.subset("train")
    subset = dataclasses.replace(train, **{k: getattr(train, k)[:steps * config.batch_size]
                                           for k in ("images", "labels", "split", "groups", "paths")},
                                 given_split=None)
    batches = training_data(parse_arm("real"), subset, None, 0)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    fit(batches, dataset.subset("val"), 2, config, 0)
    return steps * config.batch_size / (time.perf_counter() - start)


def _child(kind: str, threads: int, steps: int) -> subprocess.Popen:
    code = f"import json, benchmarks.threads as b; print(json.dumps(b.{kind}_rate({threads}, {steps})))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def layout(kind: str, processes: int, threads: int, steps: int) -> float:
    children = [_child(kind, threads, steps) for _ in range(processes)]
    return sum(json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gan-steps", type=int, default=150)
    parser.add_argument("--classify-steps", type=int, default=60)
    args = parser.parse_args()
    print(f"{'job':<10}{'layout':<26}{'throughput':>14}{'ratio':>8}")
    for kind, steps, unit in (("gan", args.gan_steps, "steps/s"), ("classify", args.classify_steps, "images/s")):
        base = None
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            rate = layout(kind, processes, threads, steps)
            base = base or rate
            print(f"{kind:<10}{f'{processes} process(es) x {threads} thread(s)':<26}{rate:>9.1f} {unit:<5}"
                  f"{rate / base:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
