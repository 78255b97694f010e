"""Flag parsers every verb shares: the data-source flags, seeds, learning-curve sizes and guidance scales.

Numbers are checked by the one numeric validator (`medsyn.config.check_number`) as flags are parsed, so a bad value
is refused before any folder is made.
"""

from __future__ import annotations

import argparse

from medsyn import config as configs
from medsyn.config import ASPECT_POLICIES, MAX_SIZE, DataConfig, count, real, seed
from medsyn.errors import MedsynError


def add_data_arguments(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """The data-source flags every verb that reads data shares."""
    if positional:
        parser.add_argument("src", nargs="?", default=None,
                            help="an .npz file, an image folder or a .csv manifest (default: bundled PneumoniaMNIST)")
    else:
        parser.add_argument("--data", dest="src", default=None,
                            help="an .npz file, an image folder or a .csv manifest (default: bundled PneumoniaMNIST)")
    parser.add_argument("--size", type=count("--size", MAX_SIZE), default=None, help="resize to SIZE x SIZE pixels")
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


MAX_REPLICATES = 1000  # seeds of one run: the plan is sized by them, so more are refused before anything is made


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' or '10-14' (or a mix: '0-2,7') -> a tuple of distinct seeds in the given order; at most
    MAX_REPLICATES of them, each within 0..2^32-1, counted before any list is made."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-") if not part.startswith("-") else (part, "", "")
            low, high = int(low), int(high) if high else int(low)
            for value in (low, high):
                configs.check_number("--seeds", value, 0, configs.SEED_MAX, whole=True)
            if len(seeds) + (high - low + 1) > MAX_REPLICATES:
                raise MedsynError(f"--seeds {text!r}: {len(seeds) + high - low + 1:,} seeds, over the maximum of "
                                  f"{MAX_REPLICATES} replicates per run; give fewer seeds.")
            seeds += range(low, high + 1)
    except ValueError:
        raise MedsynError(f"--seeds {text!r}: give non-negative integers as a list or a range, e.g. 0,1,2 or "
                          "10-14.") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise MedsynError(f"--seeds {text!r}: give distinct non-negative seeds, e.g. 0,1,2 or 10-14.")
    return tuple(seeds)


def parse_sizes(fractions: str | None, train_sizes: str | None) -> tuple[float, ...]:
    """--fractions 0.02,0.1,1 or --train-sizes 100,250,1000 -> sizes in increasing order."""
    if fractions and train_sizes:
        raise MedsynError("give --fractions or --train-sizes, not both.")
    text, flag = (fractions, "--fractions") if fractions else (train_sizes, "--train-sizes")
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise MedsynError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.02,0.05,0.1,0.25,1.") from None
    for value in values:
        configs.check_number(flag, value, 0, 1, above=True) if fractions else \
            configs.check_number(flag, value, 2, configs.COUNT_MAX, whole=True)
    bad = [v for v in values if (v <= 0 or v > 1) if fractions] + \
          [v for v in values if (v < 2 or v != int(v)) if train_sizes]
    if not values or bad:
        raise MedsynError(f"{flag} {text!r}: fractions lie in (0, 1]; train sizes are whole numbers of images >= 2.")
    return tuple(values)


def parse_guidance(text: str) -> tuple[float, ...]:
    """--guidance: `2` (that scale), `auto` (choose among configs.AUTO_GUIDANCE_SCALES on val) or `0,1,2,4` (choose among these)."""
    if text.strip().lower() == "auto":
        return configs.AUTO_GUIDANCE_SCALES
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    configs.check_guidance_scales(scales, given=text)
    return scales
