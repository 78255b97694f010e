"""`medsyn data info|prepare|download`."""

from __future__ import annotations

import json
from pathlib import Path

from medsyn.cli.flags import add_data_arguments, data_config


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
