"""Flag parsers every verb shares: the data-source flags, seeds, learning-curve sizes and guidance scales.

Numbers are checked by the one numeric validator (`medsyn.config.check_number`) as flags are parsed, so a bad value
is refused before any folder is made.
"""

from __future__ import annotations

import argparse
import dataclasses

from medsyn import config as configs
from medsyn.config import ASPECT_POLICIES, MAX_SIZE, SELECTIONS, DataConfig, count, real, seed
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
    parser.add_argument("--aspect", choices=ASPECT_POLICIES, default=None,
                        help="how non-square images become square (default: center-crop)")
    parser.add_argument("--val", choices=("auto", "given", "carve"), default=None,
                        help="keep the source's val split (given), carve one from train (carve), or carve only when "
                             "the given one is too small (auto, default)")
    parser.add_argument("--val-fraction", type=real("--val-fraction", 0, 0.9, above=True), default=None,
                        help="share of train carved as val (default 0.1)")
    parser.add_argument("--split-seed", type=seed("--split-seed"), default=None,
                        help="seed of the splits medsyn carves (default 0)")
    parser.add_argument("--skip-bad", action="store_true", default=None,
                        help="skip unreadable images (recorded) instead of failing")
    leak = parser.add_mutually_exclusive_group()
    leak.add_argument("--resplit", dest="leak", action="store_const", const="resplit", default=None,
                      help="when images of one given split are near-copies of another's: merge the splits and re-split "
                           "them grouped by content and patient (recorded in data.json)")
    leak.add_argument("--allow-leak", dest="leak", action="store_const", const="allow",
                      help="when images of one given split are near-copies of another's: continue anyway (every page "
                           "of the report then carries a warning)")


def add_pool_arguments(parser: argparse.ArgumentParser, curve: bool) -> None:
    """What a generator learns from beyond the labelled train split: an unlabelled pool and starting weights
    (`gan train` and `run`; `curve`: the verb runs learning curves, so the pool `rest` exists)."""
    rest = "; rest: each learning-curve size's train images outside its subset, without their labels" if curve else ""
    arms = (" In a run, the generators of the unlabelled-synth arms (real+unlabelled-synth@R) learn from them beside "
            "labelled-only generators, and real+pseudo@R adds them directly; without --arms, the preset's arms gain "
            "both.") if curve else ""
    parser.add_argument("--unlabelled", metavar="SRC", default=None,
                        help="unlabelled images: a folder or an .npz (labels in it are ignored)" + rest + ". The "
                             "real-only classifier labels them where it is confident (a per-class threshold chosen "
                             "on val) and the generator learns from those too; refused if it holds a val or test "
                             "image." + arms)
    parser.add_argument("--generator-init", metavar="CKPT", default=None,
                        help="start the generator from this checkpoint of another source (RUN/final.pt of `medsyn "
                             "gan train`, same model, size and channels) and fine-tune it: classes mapped by name "
                             "(unmatched ones re-initialised), GANs with the discriminator's first layers frozen")


# Every flag a verb shares, and the config fields it sets (dotted paths), as stylegan2-ada's one function from flags
# to options: a flag's default is None, so a flag given on the command line, even at its default value, always
# overrides the preset, and one that is not given never does.
def add_selection_argument(parser: argparse.ArgumentParser) -> None:
    """How a classifier run chooses the weights it keeps (`classify train` and `run`)."""
    parser.add_argument("--selection", choices=SELECTIONS, default=None,
                        help="val-loss: the epoch with the lowest real-val loss, early stopping; last: every epoch, "
                             "the final weights (averaged when the preset keeps a weight average), no choice made "
                             "on a small val split (default: the preset's)")


DATA_FLAGS = {name: (name,) for name in ("size", "channels", "aspect", "val", "val_fraction", "split_seed",
                                         "skip_bad", "leak")}
RUN_FLAGS = {
    **{name: (f"data.{name}",) for name in DATA_FLAGS}, "size": ("data.size", "gan.size"),
    "arms": ("arms",), "seeds": ("seeds",), "n_generators": ("n_generators",), "train_sizes": ("train_sizes",),
    "imbalance": ("imbalance",), "scale_val": ("scale_val",), "exposure": ("classify.exposure",),
    "guidance_scales": ("guidance_scales",), "min_effect": ("min_effect",), "gan_steps": ("gan.steps",),
    "epochs": ("classify.epochs",), "selection": ("classify.selection",),
    "device": ("gan.device", "classify.device", "audit.device"),
    "unlabelled": ("unlabelled",), "generator_init": ("gan.init",),
}
CLASSIFY_FLAGS = {name: (name,) for name in ("arch", "width", "batch_norm", "pretrained", "epochs", "patience",
                                             "selection", "batch_size", "lr", "class_weighting", "device")}
GAN_FLAGS = {**{name: (name,) for name in ("size", "steps", "batch_size", "base_width", "snapshot_every", "r1_gamma",
                                           "ada_target", "guidance", "sampling_steps", "device", "seed")},
             "generator_init": ("init",)}


def apply_flags(config, args: argparse.Namespace, table: dict[str, tuple[str, ...]]):
    """`config` with every flag of `table` that was given (not None) set at its fields."""
    for name, fields in table.items():
        value = getattr(args, name, None)
        if value is not None:
            for field in fields:
                config = _set(config, field.split("."), value)
    return config


def _set(config, path: list[str], value):
    if len(path) == 1:
        return dataclasses.replace(config, **{path[0]: value})
    return dataclasses.replace(config, **{path[0]: _set(getattr(config, path[0]), path[1:], value)})


def data_config(args: argparse.Namespace) -> DataConfig:
    return apply_flags(DataConfig(), args, DATA_FLAGS)


def names(text: str) -> tuple[str, ...]:
    """'real, real+aug' -> ('real', 'real+aug'): a comma-separated list of names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


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


def parse_fractions(text: str) -> tuple[float, ...]:
    """--fractions 0.02,0.1,1 -> fractions of the train split in increasing order."""
    return _sizes(text, "--fractions", lambda v: configs.check_number("--fractions", v, 0, 1, above=True))


def parse_train_sizes(text: str) -> tuple[float, ...]:
    """--train-sizes 100,250,1000 -> image counts in increasing order."""
    return _sizes(text, "--train-sizes", lambda v: configs.check_number("--train-sizes", v, 2, configs.COUNT_MAX,
                                                                         whole=True))


def _sizes(text: str, flag: str, check) -> tuple[float, ...]:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise MedsynError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.02,0.05,0.1,0.25,1 or "
                          "100,250,1000.") from None
    if not values:
        raise MedsynError(f"{flag} {text!r}: give at least one size.")
    for value in values:
        check(value)
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
