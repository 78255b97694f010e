"""Choose the quick classifier's width at a folder's run size on VALIDATION data only: the `real` arm trained as a
quick run trains it (its epochs, early stopping on val), per width and seed, with its val AUC, balanced accuracy and
seconds. The test split is never passed to training or scoring.

    python benchmarks/classify_width.py --data ../shared/data/chest_xray_224 --size 64 --widths 0.125,0.0625 --seeds 0,1

Writes benchmarks/results/classify_width_<data>_<size>px_<date>.json (with the machine's reference speed); run the
widths side by side as separate processes (one thread each) when comparing their seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from common import add_note_argument, dated, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--widths", default="0.125,0.0625", help="classifier widths (the quick preset's: 0.125)")
    parser.add_argument("--seeds", default="0,1")
    add_note_argument(parser)
    args = parser.parse_args()
    rows = [row for width in map(float, args.widths.split(",")) for row in
            width_rows(args.data, args.size, width, [int(s) for s in args.seeds.split(",")])]
    write_results(dated(f"classify_width_{args.data.name}_{args.size}px"),
                  {"data": str(args.data), "size": args.size, "arm": "real", "rows": rows}, note=args.note)
    return 0


def width_rows(folder: Path, size: int, width: float, seeds: list[int]) -> list[dict]:
    import torch

    from medsyn import data
    from medsyn.classify.arms import parse_arm, training_data
    from medsyn.classify.train import fit
    from medsyn.config import DataConfig, preset

    torch.set_num_threads(1)
    dataset = data.load(folder, DataConfig(size=size))
    train, val = dataset.subset("train"), dataset.subset("val")
    config = dataclasses.replace(preset("quick", size).classify, width=width, threads=1)
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        fitted = fit(training_data(parse_arm("real"), train, None, seed), val, len(dataset.class_names), config, seed)
        rows.append({"width": width, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
                     "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch,
                     "val_auc": fitted.val_metrics["auc"], "val_balanced_accuracy": fitted.val_metrics["balanced_accuracy"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
