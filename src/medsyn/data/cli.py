"""`medsyn data info|prepare|download`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medsyn.config import ASPECT_POLICIES, DataConfig, count, real, seed


def add_data_arguments(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """The data-source flags every verb that reads data shares."""
    if positional:
        parser.add_argument("src", nargs="?", default=None,
                            help="an .npz file, an image folder or a .csv manifest (default: bundled PneumoniaMNIST)")
    else:
        parser.add_argument("--data", dest="src", default=None,
                            help="an .npz file, an image folder or a .csv manifest (default: bundled PneumoniaMNIST)")
    parser.add_argument("--size", type=count("--size", 4096), default=None, help="resize to SIZE x SIZE pixels")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 = grayscale, 3 = RGB")
    parser.add_argument("--aspect", choices=ASPECT_POLICIES, default="center-crop",
                        help="how non-square images become square (default: center-crop)")
    parser.add_argument("--val", choices=("auto", "given", "carve"), default="auto",
                        help="keep the source's val split (given), carve one from train (carve), or carve only when "
                             "the given one is too small (auto, default)")
    parser.add_argument("--val-fraction", type=real("--val-fraction", 0, 0.9, above=True), default=0.1, help="share of train carved as val (default 0.1)")
    parser.add_argument("--split-seed", type=seed("--split-seed"), default=0, help="seed of the splits medsyn carves")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (recorded) instead of failing")
    leak = parser.add_mutually_exclusive_group()
    leak.add_argument("--resplit", action="store_true",
                      help="when images of one given split are near-copies of another's: merge the splits and re-split "
                           "them grouped by content and patient (recorded in data.json)")
    leak.add_argument("--allow-leak", action="store_true",
                      help="when images of one given split are near-copies of another's: continue anyway (every page "
                           "of the report then carries a warning)")


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(size=args.size, channels=args.channels, aspect=args.aspect, val=args.val,
                      val_fraction=args.val_fraction, split_seed=args.split_seed, skip_bad=args.skip_bad,
                      leak="resplit" if args.resplit else "allow" if args.allow_leak else "error")


def register(verbs) -> None:
    parser = verbs.add_parser("data", help="inspect, convert or download datasets")
    sub = parser.add_subparsers(dest="data_verb", metavar="ACTION")
    sub.required = True

    info = sub.add_parser("info", help="counts per split and class, duplicates, patient overlap")
    add_data_arguments(info, positional=True)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    prepare = sub.add_parser("prepare", help="decode, resize and split a source into a MedMNIST-layout .npz")
    add_data_arguments(prepare, positional=True)
    prepare.add_argument("--out", required=True, type=Path, help="output .npz path")
    prepare.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    prepare.set_defaults(func=run_prepare)

    download = sub.add_parser("download", help="download an official MedMNIST 2D file (needs the internet)")
    download.add_argument("flag", help="dataset flag, e.g. pneumoniamnist, bloodmnist, dermamnist")
    download.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224), help="image size (default 28)")
    download.add_argument("--root", type=Path, default=Path("."), help="folder to save into (default: here)")
    download.set_defaults(func=run_download)


def run_info(args) -> int:
    from medsyn import data

    dataset = data.load(args.src, data_config(args))
    summary = data.summarize(dataset)
    summary["cache"] = str(data.cache_entry(args.src, data_config(args)))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(data.format_summary(summary, summary["cache"]))
    return 0


def run_prepare(args) -> int:
    from medsyn import data
    from medsyn.fileio import refuse_overwrite

    refuse_overwrite(args.out, args.overwrite)
    dataset = data.load(args.src, data_config(args))
    data.save_npz(dataset, args.out)
    counts = {s: sum(c) for s, c in dataset.counts().items()}
    print(f"wrote {args.out}: {dataset.size}x{dataset.size}x{dataset.channels}, classes {list(dataset.class_names)}, "
          f"train {counts['train']}, val {counts['val']}, test {counts['test']}")
    return 0


def run_download(args) -> int:
    from medsyn import data

    path = data.download_medmnist(args.flag, args.size, args.root)
    print(f"downloaded {path}")
    return 0
