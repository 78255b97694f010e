"""Audit stand-in "synthetic" sets built from the bundled PneumoniaMNIST, and time each audit.

Stand-ins (the real GAN's output is audited the same way by `medsyn audit`):
  real-test      real test images scored as if synthetic: what a perfect generator of new patients would get
  train-copies   5000 real training images copied (with replacement): pure memorization
  blurry-mix     5000 per-class averages of two random training images, blurred (sigma 1 px) and noised (std 20):
                 a bad generator whose images are nobody's copy
  collapsed      5000 noisy (std 6) copies of only 10 training images per class: mode collapse plus memorization

Usage: MEDSYN_CACHE=/tmp/mc PYTHONPATH=src python benchmarks/audit_standins.py [--preset quick] [--out DIR]
Writes benchmarks/results/audit_standins_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medsyn import data
from medsyn.config import preset
from medsyn.audit.run import as_synthetic, run_audit, table_rows

from common import add_note_argument, dated, write_results


def standins(real: data.ImageSet, n: int, seed: int = 0) -> dict[str, data.ImageSet]:
    rng = np.random.default_rng(seed)
    train, test, names = real.subset("train"), real.subset("test"), real.class_names
    copies = rng.choice(len(train), n)
    pairs = rng.choice(len(train), (n, 2))
    labels = train.labels[pairs[:, 0]]
    # the partner of each image is drawn from the same class, so the mix keeps its label
    by_class = {c: np.flatnonzero(train.labels == c) for c in range(real.n_classes)}
    partners = np.array([rng.choice(by_class[c]) for c in labels])
    mixed = (train.images[pairs[:, 0]].astype(float) + train.images[partners].astype(float)) / 2
    mixed = gaussian_filter(mixed, sigma=(0, 1, 1, 0)) + rng.normal(0, 20, mixed.shape)
    few = np.concatenate([rng.choice(by_class[c], 10, replace=False) for c in range(real.n_classes)])
    collapsed = few[rng.integers(0, len(few), n)]
    collapsed_images = train.images[collapsed].astype(float) + rng.normal(0, 6, train.images[collapsed].shape)
    return {
        "real-test": test,
        "train-copies": as_synthetic(train.images[copies], train.labels[copies], names, "train-copies"),
        "blurry-mix": as_synthetic(np.clip(mixed, 0, 255), labels, names, "blurry-mix"),
        "collapsed": as_synthetic(np.clip(collapsed_images, 0, 255), train.labels[collapsed], names, "collapsed"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--n", type=int, default=5000, help="images per generated stand-in")
    parser.add_argument("--out", type=Path, default=None, help="keep the audit folders here")
    add_note_argument(parser)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-audit-"))
    real = data.load(None, preset(args.preset).data)
    config = preset(args.preset).audit
    keys = ("fid", "kid", "precision", "recall", "density", "coverage", "diversity_ratio", "label_accuracy",
            "label_accuracy_real_test", "near_copy_share")
    print(f"real: bundled PneumoniaMNIST {real.size}px, counts {real.counts()}; preset {args.preset}; out {out}")
    print(f"{'set':22s} {'class':10s} " + " ".join(f"{k[:10]:>10s}" for k in keys) + f" {'seconds':>8s}")
    audits = []
    for name, synthetic in standins(real, args.n).items():
        started = time.perf_counter()
        audit = run_audit(real, synthetic, out / name, config, name, overwrite=True)
        seconds = time.perf_counter() - started
        rows = []
        for row in table_rows(audit):
            if row["features"] != "label-trained-cnn" or (row["set"] != name and name != "real-test"):
                continue
            values = " ".join(f"{row[k]:10.4f}" if isinstance(row.get(k), float) else f"{'':>10s}" for k in keys)
            print(f"{row['set'][:22]:22s} {row['class'][:10]:10s} {values} {seconds:8.1f}")
            rows.append({"set": row["set"], "class": row["class"], **{k: row.get(k) for k in keys}})
        print(f"{'':22s} timings {audit['timing_s']}")
        audits.append({"stand_in": name, "seconds": round(seconds, 1), "timing_s": audit["timing_s"], "rows": rows})
    write_results(dated("audit_standins"), {"preset": args.preset, "n": args.n, "audits": audits}, note=args.note)


if __name__ == "__main__":
    main()
