"""Choose the small-data classifier recipe on VALIDATION data only: does `real` rise with the data, and does the
positive control (real+heldout@1) see its certain help, under each candidate recipe?

At each learning-curve size the run is built as `medsyn run` builds it (nested train subset, val subset in
proportion), and the val images OUTSIDE the point's val subset stand in for the test split: the test split
itself is never loaded into the runs, so nothing here reads a test metric.

    python benchmarks/small_data_recipe.py [--fractions 0.02,0.05,0.1] [--seeds 0-4] [--workers 2]
                                           [--recipes 0,1,4] [--out benchmarks/results/small_data_recipe.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import add_note_argument, write_results

# Candidate recipes: changes to the study preset's classifier settings.
RECIPES = {
    "study (8 epochs, patience 2)": {},
    "20 epochs, patience 5": dict(epochs=20, patience=5),
    "20 epochs, patience 5, EMA 0.99": dict(epochs=20, patience=5, ema_decay=0.99),
    "20 epochs, patience 5, EMA 0.99, weight decay 5e-4": dict(epochs=20, patience=5, ema_decay=0.99,
                                                               weight_decay=5e-4),
    "40 epochs, patience 10": dict(epochs=40, patience=10),
    "20 epochs, patience 5, 40 steps per epoch": dict(epochs=20, patience=5, min_epoch_steps=40),
    "20 epochs, patience 5, lr 3e-4": dict(epochs=20, patience=5, lr=3e-4),
    # No choice on a few val images: train every epoch, keep the final weight average.
    "20 epochs, last, EMA 0.99": dict(epochs=20, selection="last", ema_decay=0.99),
    "10 epochs, last, EMA 0.99": dict(epochs=10, selection="last", ema_decay=0.99),
    "20 epochs, last, EMA 0.99, weight decay 5e-4": dict(epochs=20, selection="last", ema_decay=0.99,
                                                         weight_decay=5e-4),
    # Round 3 found the EMA of these BN networks far from the live weights for most of training (val AUC 0.2-0.7
    # at 94 images until the last epochs): the final live weights, then.
    "20 epochs, last": dict(epochs=20, selection="last"),
    "10 epochs, last": dict(epochs=10, selection="last"),
}
ARMS = ("real", "real+heldout@1")


def point_without_test(fraction: float):
    """(point, pool): the learning-curve point with the val rows outside its val subset relabelled as its test
    split (the real test split dropped), and the positive control's pool (train outside the subset, no image
    that also stands in val or test)."""
    from medsyn import data
    from medsyn.data.splits import heldout_train_rows, learning_curve_point

    full = data.load()
    kept = learning_curve_point(full.labels, full.groups, full.split, fraction)
    split = full.split.copy()
    split[(full.split == "val") & ~kept] = "test"
    split[full.split == "test"] = "dropped"
    point = dataclasses.replace(full, split=split).select((split != "dropped") & (kept | (split == "test")))
    return point, full.select(heldout_train_rows(full.images, full.split, kept))


def one_run(job: tuple) -> dict:
    import torch

    from medsyn.classify import train_arm
    from medsyn.config import preset

    recipe, fraction, arm, seed = job
    torch.set_num_threads(1)
    config = dataclasses.replace(preset("study").classify, **RECIPES[recipe])
    point, pool = point_without_test(fraction)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        judged = train_arm(point, arm, seed, config, Path(folder), synthetic=pool)
        epochs = json.loads((Path(folder) / "val_metrics.json").read_text())["best_epoch"]
    return {"recipe": recipe, "fraction": fraction, "arm": arm, "seed": seed, "n_train": int(
        (point.split == "train").sum()), "n_val": int((point.split == "val").sum()),
        "held_out_val_auc": judged["auc"], "best_epoch": epochs, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    from medsyn.cli.flags import parse_fractions, parse_seeds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", default="0.02,0.05,0.1")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipes", default=None, help="indices into RECIPES, e.g. 0,1,4 (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "small_data_recipe.json")
    add_note_argument(parser)
    args = parser.parse_args()
    recipes = list(RECIPES) if args.recipes is None else [list(RECIPES)[int(i)] for i in args.recipes.split(",")]
    jobs = [(recipe, f, arm, s) for recipe in recipes for f in parse_fractions(args.fractions) for arm in ARMS
            for s in parse_seeds(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_run, jobs))
    print(f"{'recipe':<52}{'train':>6}{'val':>5}{'real AUC':>10}{'heldout gain':>14}{'paired sd':>10}{'s/run':>7}")
    for recipe in recipes:
        for f in sorted({r["fraction"] for r in rows}):
            cell = {arm: {r["seed"]: r for r in rows if (r["recipe"], r["fraction"], r["arm"]) == (recipe, f, arm)}
                    for arm in ARMS}
            real = np.array([cell["real"][s]["held_out_val_auc"] for s in sorted(cell["real"])])
            gain = np.array([cell["real+heldout@1"][s]["held_out_val_auc"] for s in sorted(cell["real"])]) - real
            first = next(iter(cell["real"].values()))
            print(f"{recipe:<52}{first['n_train']:>6}{first['n_val']:>5}{real.mean():>10.4f}{gain.mean():>+14.4f}"
                  f"{gain.std(ddof=1):>10.4f}{np.mean([r['seconds'] for r in cell['real'].values()]):>7.1f}")
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
    write_results(args.out.stem, {"seconds": round(time.perf_counter() - start, 1), "runs": rows},
                  note=" ".join(filter(None, ["AUC on the val images outside each point's val subset; no test data.",
                                              args.note])),
                  folder=args.out.parent)


if __name__ == "__main__":
    main()
