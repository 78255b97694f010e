"""Time one classifier run per arm at the `quick` preset on the bundled 28 px PneumoniaMNIST.

Synthetic arms draw from a STAND-IN pool (noisy, horizontally flipped copies of the real train images), since
only their cost is measured here. Prints seconds, epochs, real passes and synthetic images seen and peak memory
per run side by side with the real VALIDATION metrics (benchmarks never print test metrics: nothing is chosen on
them).

    PYTHONPATH=src python benchmarks/classify_quick.py [--arms real real+aug ...] [--seed 0] [--threads 1] [--note TEXT]

Writes benchmarks/results/classify_quick_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from medsyn import data
from medsyn.classify import ARMS, train_arm
from medsyn.config import preset
from medsyn.fileio import read_json

from common import add_note_argument, dated, write_results


def stand_in_pool(real: data.ImageSet, copies: int = 3) -> data.ImageSet:
    train = real.subset("train")
    rng = np.random.default_rng(0)
    images = np.concatenate([train.images[:, :, ::-1]] * copies).astype(np.int16)
    images = np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)
    n = len(images)
    return dataclasses.replace(train, images=images, labels=np.tile(train.labels, copies), split=np.full(n, "train"),
                               groups=np.full(n, ""), paths=np.full(n, "stand-in"), given_split=None,
                               source="stand-in: noisy flipped real train copies")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    add_note_argument(parser)
    args = parser.parse_args()
    config = preset("quick").classify
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    dataset = data.load(None, preset("quick").data)
    pool = stand_in_pool(dataset)
    print(f"quick preset: {config}\ndata: {dataset.source} {dataset.size}px, train/val/test "
          f"{[sum(c) for c in dataset.counts().values()]}")
    print(f"{'arm':<16}{'seconds':>8}{'epochs':>7}{'best':>5}{'real passes':>12}{'synth seen':>11}{'peak RSS GB':>12}"
          f"   VAL split: AUC   acc    bal.acc")
    total, runs = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            out = Path(tmp) / arm
            start = time.perf_counter()
            train_arm(dataset, arm, args.seed, config, out, synthetic=pool)
            seconds = time.perf_counter() - start
            total += seconds
            val = read_json(out / "val_metrics.json")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(f"{arm:<16}{seconds:8.1f}{val['epochs_run']:7d}{val['best_epoch']:5d}{val['real_passes']:12.2f}"
                  f"{val['synthetic_seen']:11d}{rss:12.2f}   {val['auc']:15.4f} {val['accuracy']:.4f} "
                  f"{val['balanced_accuracy']:.4f}", flush=True)
            runs.append({"arm": arm, "seconds": round(seconds, 1), "peak_rss_gb": round(rss, 2),
                         **{k: val[k] for k in ("epochs_run", "best_epoch", "real_passes", "synthetic_seen")},
                         "val": {k: val[k] for k in ("auc", "accuracy", "balanced_accuracy")}})
    print(f"total {total:.1f}s for {len(args.arms)} runs ({total / len(args.arms):.1f}s per run)")
    write_results(dated("classify_quick"), {"seed": args.seed, "config": dataclasses.asdict(config),
                                            "data": f"{dataset.source} {dataset.size}px", "runs": runs,
                                            "total_s": round(total, 1)}, note=args.note)


if __name__ == "__main__":
    main()
