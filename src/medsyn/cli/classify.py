"""`medsyn classify train`: one arm x seed run into a run folder."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from medsyn.config import PRESETS, count, real, seed
from medsyn.cli.flags import CLASSIFY_FLAGS, add_data_arguments, add_selection_argument, apply_flags, data_config


def register(verbs) -> None:
    parser = verbs.add_parser("classify", help="train and evaluate classifiers on real and synthetic data")
    sub = parser.add_subparsers(dest="classify_verb", metavar="ACTION")
    sub.required = True

    train = sub.add_parser(
        "train", help="train one arm with one seed; select on real val; evaluate once on real test",
        description="Train a classifier on one arm's data (real, real+aug, synth, real+synth@R, real+balance, "
                    "real+aug+synth), pick the epoch and threshold on the REAL validation split, then score it "
                    "once on the real test split. Writes config.json, history.csv, model.pt, val_metrics.json, "
                    "test_metrics.json and predictions.csv into --out. A finished --out is kept and reported.")
    add_data_arguments(train)
    train.add_argument("--synthetic", type=Path, default=None,
                       help="synthetic images: a folder holding synthetic.npz (from `medsyn gan generate`) or an .npz")
    train.add_argument("--arm", required=True, help="real | real+aug | synth | real+synth@R | real+balance | "
                                                    "real+aug+synth (parts joined by '+')")
    train.add_argument("--seed", type=seed(), default=0, help="seed of weights, data order and synthetic draws")
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--overwrite", action="store_true", help="retrain even if --out holds a finished run")
    train.add_argument("--preset", choices=PRESETS, default="quick",
                       help="classifier and image-size defaults (default quick: 28 px, VGG16 at width 1/8)")
    train.add_argument("--arch", choices=("vgg16", "resnet18"), default=None, help="default: vgg16 (the original)")
    train.add_argument("--width", type=real("--width", 0, 8, above=True), default=None, help="vgg16 channel multiplier (1 = the original)")
    train.add_argument("--no-batch-norm", dest="batch_norm", action="store_false", default=None,
                       help="vgg16 conv stack without batch norm (as the original)")
    train.add_argument("--pretrained", action="store_true", default=None,
                       help="start from ImageNet weights in the torchvision cache (needs --width 1)")
    train.add_argument("--epochs", type=count("--epochs", 10_000), default=None, help="at most this many epochs (early stopping on real val)")
    train.add_argument("--patience", type=count("--patience", 10_000), default=None,
                       help="epochs without a lower real-val loss before stopping")
    add_selection_argument(train)
    train.add_argument("--batch-size", type=count("--batch-size", 65_536), default=None, help="images per step")
    train.add_argument("--lr", type=real("--lr", 0, 10, above=True), default=None, help="Adam learning rate")
    train.add_argument("--class-weighting", action="store_true", default=None,
                       help="weight the loss by inverse class frequency")
    train.add_argument("--device", default=None, help="auto (default) | cpu | cuda | cuda:N")
    train.set_defaults(func=run_train)


def classify_config(args: argparse.Namespace):
    """The preset's ClassifyConfig with the flags the user gave replacing single fields."""
    from medsyn.config import preset

    config = apply_flags(preset(args.preset).classify, args, CLASSIFY_FLAGS)
    if (args.arch == "resnet18" or args.pretrained) and args.width is None:
        # resnet18 is always full width; ImageNet weights exist for the full VGG16 only
        config = dataclasses.replace(config, width=1.0)
    return config


def run_train(args) -> int:
    from medsyn import data
    from medsyn.classify import check_config, parse_arm, train_arm
    from medsyn.classify.files import RUN_FILES
    from medsyn.config import preset
    from medsyn.fileio import check_out_dir, claim_out_dir, read_json

    from medsyn.errors import MedsynError

    arm = parse_arm(args.arm)  # a typo fails before any data is loaded
    if arm.synth_ratio and not arm.heldout and args.synthetic is None:
        raise MedsynError(f"arm {args.arm!r} trains on synthetic images: pass --synthetic DIR (a folder from "
                          "`medsyn gan generate`, or its synthetic.npz).")
    config = classify_config(args)
    check_config(config)
    check_out_dir(args.out, "classify train", overwrite=args.overwrite)
    dconfig = data_config(args)
    if dconfig.size is None:
        dconfig = dataclasses.replace(dconfig, size=preset(args.preset).data.size)
    dataset = data.load(args.src, dconfig)
    synthetic = None
    if args.synthetic is not None:
        from medsyn.synth import load_synthetic

        synthetic = load_synthetic(args.synthetic, dataset)
    claim_out_dir(args.out, "classify train")
    if args.overwrite:
        for name in RUN_FILES:
            (args.out / name).unlink(missing_ok=True)
    elif (args.out / "test_metrics.json").is_file():
        print(f"{args.out} holds a finished run; reporting it (pass --overwrite to retrain).")
    train_arm(dataset, args.arm, args.seed, config, args.out, synthetic)
    print(format_result({"arm": args.arm, "seed": args.seed, **read_json(args.out / "val_metrics.json")}))
    print(f"test metrics: {args.out / 'test_metrics.json'} (read them once you are done choosing; they are not "
          "printed, so that nothing is tuned on them)")
    return 0


def format_result(result: dict) -> str:
    """A run's VALIDATION metrics: what a user may look at while choosing settings."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    threshold = "" if result["threshold"] is None else f", threshold {result['threshold']:.3f}"
    return (f"{result['arm']} seed {result['seed']}: VALIDATION split, n={result['n']}{threshold}, best epoch "
            f"{result.get('best_epoch')}\n"
            f"  accuracy {fmt(result['accuracy'])}  balanced accuracy {fmt(result['balanced_accuracy'])}  "
            f"AUC {fmt(result['auc'])}\n  sensitivity {fmt(result['sensitivity'])}  specificity "
            f"{fmt(result['specificity'])}  precision {fmt(result['precision'])}  F1 {fmt(result['f1'])}")
