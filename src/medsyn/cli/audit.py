"""`medsyn audit --synthetic DIR [--real SRC] [--out DIR]`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from medsyn.config import PRESETS, seed
from medsyn.cli.flags import add_data_arguments, data_config


def register(verbs) -> None:
    parser = verbs.add_parser(
        "audit", help="measure a synthetic dataset against the real one: FID/KID, precision/recall, density/"
                      "coverage, label fidelity, diversity, and near-copies of training images",
        description="Audit a synthetic dataset against the real training split in several feature spaces (a CNN "
                    "trained on the real labels, an untrained random CNN, Inception-v3 when its weights are on "
                    "disk), each beside the real-vs-real floor. Baselines come from the real val split; the test "
                    "split is never read. Writes audit.json, nn_gallery.png, nearest_neighbours.csv and config.json.")
    parser.add_argument("--synthetic", required=True, type=Path,
                        help="the folder `medsyn gan generate` wrote (holding synthetic.npz), or the npz itself")
    parser.add_argument("--real", dest="src", default=None, help="the real data (same as --data; default: bundled)")
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: SYNTHETIC/audit)")
    parser.add_argument("--name", default=None, help="the generator's name in the outputs (default: folder name)")
    parser.add_argument("--preset", choices=PRESETS, default="quick", help="audit settings preset (default: quick)")
    parser.add_argument("--seed", type=seed(), default=None, help="encoders' and subsampling seed (default: preset's)")
    parser.add_argument("--inception-weights", default=None,
                        help="torch-fidelity's Inception-v3 .pth, to add Inception features (never downloaded)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing audit in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsyn import data
    from medsyn.config import preset
    from medsyn.audit.run import run_audit
    from medsyn.audit.features import inception_weights_path
    from medsyn.fileio import check_out_dir, claim_out_dir, load_tensors
    from medsyn.synth import load_synthetic

    config = preset(args.preset).audit
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.inception_weights:
        config = dataclasses.replace(config, inception="auto", inception_weights=args.inception_weights)
        weights, _ = inception_weights_path(config)  # a missing or unsafe file fails before minutes of work
        load_tensors(weights, "--inception-weights")
    folder = args.synthetic if args.synthetic.is_dir() else args.synthetic.parent
    out = args.out or folder / "audit"
    check_out_dir(out, "audit", overwrite=args.overwrite)
    real = data.load(args.src, data_config(args))
    synthetic = load_synthetic(args.synthetic, real)
    claim_out_dir(out, "audit")
    audit = run_audit(real, synthetic, out, config, args.name or folder.resolve().name, overwrite=args.overwrite)
    print(format_summary(audit))
    return 0


def format_summary(audit: dict) -> str:
    """A few lines a user reads in the terminal; audit.json holds everything."""
    from medsyn.audit.run import table_rows

    metrics = ("fid", "kid", "precision", "recall", "density", "coverage", "diversity_ratio")
    lines = [f"{'features':18s} {'class':10s} {'set':26s} {'FID':>8s} {'KID':>8s} {'prec':>6s} {'recall':>6s} "
             f"{'dens':>6s} {'cover':>6s} {'divers':>6s}"]
    for row in table_rows(audit):
        cells = [f"{row[k]:{8 if i < 2 else 6}.3f}" if row.get(k) is not None else f"{'-':>{8 if i < 2 else 6}s}"
                 for i, k in enumerate(metrics)]
        lines.append(f"{row['features'][:18]:18s} {row['class'][:10]:10s} {row['set'][:26]:26s} {' '.join(cells)}")
    labels, memo = audit["label_fidelity"], audit["memorization"]
    lines.append(f"label fidelity: {labels['synthetic_accuracy']:.3f} on synthetic vs "
                 f"{labels['reference_real_val_accuracy']:.3f} on real val (same real-trained classifier)")
    lines.append(f"near-copies of training images (moved, mirrored, zoomed, rotated, blurred, gamma): {memo['near_copies']}/{memo['n_checked']} ({memo['near_copy_share']:.1%}; new real "
                 f"val images: {memo['baseline_near_copy_share']:.1%}) above correlation "
                 f"{memo['threshold']['correlation']:.4f}")
    lines.append("features: " + "; ".join(f"{name} ({info['trained_on']})"
                                          for name, info in audit["feature_extractors"].items()))
    return "\n".join(lines)
