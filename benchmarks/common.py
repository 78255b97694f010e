"""What every benchmark shares: this machine's reference speed, and the results file that carries it.

A timing alone says little: the same run takes 1x or 2x as long on one machine as on another, or on one shared
machine from one hour to the next. So every results file records, measured in the same invocation, the
**reference speed**: a fixed cgan (`REFERENCE_GAN`, training steps/s) and the quick preset's classifier (training
images/s), each on ONE torch thread in one process (the first layout of benchmarks/threads.py). A figure from
another machine compares through it: a machine at half the reference speed takes about twice the time.

    from common import add_note_argument, dated, write_results     # a script in benchmarks/ imports its sibling
    write_results(dated("threads"), {"rows": rows}, note=args.note)   # -> benchmarks/results/threads_<date>.json
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REFERENCE_FIELDS = ("cgan_steps_per_s", "classify_images_per_s")
HEADER_FIELDS = ("benchmark", "date", "machine", "python", "torch", "command", "threads", "load_average", "note",
                 "reference_speed")
# Steps of the reference measurement: about 20 s on an idle 2-core machine of this project; the start-up (model
# building, the final checkpoint) stays in the time, as benchmarks/threads.py measures it.
REFERENCE_GAN_STEPS = 60
REFERENCE_CLASSIFY_STEPS = 40
# The reference cgan: the quick preset's cgan of 2026-12-01 before its minibatch standard deviation layer, fixed here
# so that the reference speeds of older and newer results files measure the same work.
REFERENCE_GAN = dict(model="cgan", size=28, batch_size=32, base_width=12, diffaugment="translation", ema_decay=0.995,
                     aux_weight=0.3, lr_g=5e-4, lr_d=5e-4)


def gan_rate(threads: int, steps: int) -> float:
    """Training steps/s of the reference cgan on `threads` torch threads (start-up included)."""
    import torch

    from medsyn import data, generators
    from medsyn.config import GanConfig, preset

    torch.set_num_threads(threads)
    dataset = data.load(None, preset("quick").data)
    config = GanConfig(**REFERENCE_GAN, steps=steps, snapshot_every=10 ** 6)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generators.train(dataset, config, tmp, progress=False)
        return steps / (time.perf_counter() - start)


def classify_rate(threads: int, steps: int) -> float:
    """Training images/s of the quick preset's classifier on `threads` torch threads: one epoch of `steps` batches
    of real train images, its validation included."""
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


def reference_speed() -> dict:
    """This machine's reference speed, now (about 20-40 s); the caller's torch thread count is kept."""
    import torch

    previous = torch.get_num_threads()
    start = time.perf_counter()
    try:
        gan = gan_rate(1, REFERENCE_GAN_STEPS)
        classify = classify_rate(1, REFERENCE_CLASSIFY_STEPS)
    finally:
        torch.set_num_threads(previous)
    return {"cgan_steps_per_s": round(gan, 2), "classify_images_per_s": round(classify, 1), "threads": 1,
            "cgan_steps": REFERENCE_GAN_STEPS, "classify_steps": REFERENCE_CLASSIFY_STEPS,
            "seconds": round(time.perf_counter() - start, 1), "load_average": _load_average()}


def dated(name: str) -> str:
    """`name` with today's date, the results files' naming: threads -> threads_2026-11-30."""
    return f"{name}_{time.strftime('%Y-%m-%d')}"


def add_note_argument(parser) -> None:
    parser.add_argument("--note", default=None,
                        help="recorded in the results file, e.g. what else loaded the machine during the run")


def write_results(name: str, payload: dict, note: str | None = None, folder: Path = RESULTS,
                  reference: dict | None = None) -> Path:
    """Write FOLDER/<name>.json atomically: when and where it ran (date, host, CPU, Python and torch versions,
    thread settings, load average), the reference speed (measured now unless given) and `payload`'s keys beside
    them. Returns the path."""
    from medsyn.fileio import write_json

    clash = sorted(set(payload) & set(HEADER_FIELDS))
    if clash:
        raise ValueError(f"payload keys {clash} would hide the results file's own fields; rename them")
    path = Path(folder) / f"{name}.json"
    write_json(path, {**_header(name, note, reference or reference_speed()), **payload})
    print(f"wrote {path}")
    return path


def _header(name, note, reference) -> dict:
    import torch

    from medsyn.study.calibrate import machine

    return {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
            "python": platform.python_version(), "torch": torch.__version__, "command": " ".join(sys.argv),
            "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                        "cpus_usable": len(os.sched_getaffinity(0)),
                        **{var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}},
            "load_average": _load_average(), "note": note, "reference_speed": reference}


def _load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the machine was (a 2-core machine at 4 is twice overloaded)."""
    return [round(x, 2) for x in os.getloadavg()]
