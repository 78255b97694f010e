"""Write labelled synthetic images: DIR/<CLASS>/*.png, DIR/synthetic.npz (MedMNIST layout, everything in the
train split, readable by `medsyn.data.load`) and DIR/manifest.json (checkpoint sha256, model, seed, counts)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from medsyn.config import resolve_device
from medsyn.data import top_up_to_majority
from medsyn.errors import MedsynError
from medsyn.fileio import check_out_dir, claim_out_dir, release_out_dirs, write_json


MAX_IMAGES = 10_000_000


def plan_counts(n_classes: int, n: int | None = None, per_class: Sequence[int] | None = None,
                balance_counts: Sequence[int] | None = None) -> list[int]:
    """Images per class: `per_class` as given; `n` split evenly (remainder to the first classes); or
    `balance_counts` (real train counts) topped up to the largest class, plus `n` more split evenly if given."""
    if per_class is not None:
        if n is not None or balance_counts is not None:
            raise MedsynError("give either --per-class, or --n (optionally with --balance-to), not both.")
        counts = [int(c) for c in per_class]
        if len(counts) != n_classes:
            raise MedsynError(f"--per-class has {len(counts)} numbers but the checkpoint has {n_classes} classes; "
                              "give one count per class, in the checkpoint's class order.")
    else:
        counts = [0] * n_classes
        if balance_counts is not None:
            if len(balance_counts) != n_classes:
                raise MedsynError(f"the --balance-to data has {len(balance_counts)} classes but the checkpoint has "
                                  f"{n_classes}.")
            counts = top_up_to_majority(balance_counts).tolist()
        elif n is None:
            raise MedsynError("say how many images to make: --n N, --per-class a,b,... or --balance-to SRC.")
        if n is not None:
            if n < 0:
                raise MedsynError(f"--n must be at least 0, not {n}.")
            counts = [c + n // n_classes + (i < n % n_classes) for i, c in enumerate(counts)]
    if sum(counts) > MAX_IMAGES:
        raise MedsynError(f"{sum(counts):,} images is over the limit of {MAX_IMAGES:,} per call (they are held in "
                          "memory and written as PNGs); generate fewer, or several sets with different --seed.")
    if any(c < 0 for c in counts) or sum(counts) == 0:
        raise MedsynError(f"image counts {counts} must be non-negative with at least one image.")
    return counts


def parse_per_class(text: str, class_names: Sequence[str]) -> list[int]:
    """`100,50` (one count per class, in the checkpoint's order) or `NORMAL=100,PNEUMONIA=50` (missing classes: 0)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        if all("=" not in item for item in items):
            return [int(item) for item in items]
        counts = dict.fromkeys(class_names, 0)
        for item in items:
            name, _, value = item.partition("=")
            if name.strip() not in counts:
                raise MedsynError(f"--per-class names unknown class {name.strip()!r}; the checkpoint's classes are "
                                  f"{', '.join(class_names)}.")
            counts[name.strip()] = int(value)
    except ValueError as err:
        raise MedsynError(f"--per-class {text!r}: give whole numbers, like 100,50 or {class_names[0]}=100.") from err
    return list(counts.values())


def balance_counts(src: str, class_names: Sequence[str]) -> list[int]:
    """Train-split counts of a data source, in the checkpoint's class order (the classes must be the same)."""
    from medsyn import data

    dataset = data.load(src)
    counts, names = dataset.counts()["train"], list(dataset.class_names)
    if sorted(names) != sorted(class_names):
        raise MedsynError(f"--balance-to {src} has classes {', '.join(names)} but the checkpoint has "
                          f"{', '.join(class_names)}.")
    return [counts[names.index(name)] for name in class_names]


def generate(checkpoint: Path, per_class: Sequence[int], seed: int, out_dir: Path, overwrite: bool = False,
             sampler: dict | None = None, guidance_choice: dict | None = None, device: str = "auto") -> Path:
    """`sampler` overrides a ddpm checkpoint's guidance / sampling_steps (recorded in the manifest). Nothing is
    chosen here: `guidance_choice`, the record of a scale chosen on real val (medsyn.audit.guidance), is written
    beside the images as DIR/guidance.json."""
    from medsyn import data, generators

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise MedsynError(f"{out_dir} exists and is not empty; pass --overwrite to replace it, or choose another "
                          "--out.")
    generator, info = generators.load_generator(checkpoint, device=resolve_device(device), sampler=sampler)
    class_names = info["class_names"]
    counts = plan_counts(len(class_names), per_class=per_class)
    labels = np.repeat(np.arange(len(class_names)), counts)
    images = generators.generate_images(generator, info, labels, seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        paths = _write_pngs(staging, images, labels, class_names)
        n = len(images)
        dataset = data.ImageSet(images=images, labels=labels.astype(np.int64), split=np.full(n, "train", "<U5"),
                                class_names=tuple(class_names), groups=np.full(n, ""), paths=np.array(paths),
                                source=str(checkpoint))
        data.save_npz(dataset, staging / "synthetic.npz")
        if guidance_choice:
            write_json(staging / "guidance.json", guidance_choice)
        write_json(staging / "manifest.json", {
            "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": info["sha256"],
            "checkpoint_step": info["step"], "model": info["model"], "seed": seed, "size": info["size"],
            "channels": info["channels"], "class_names": class_names, "counts": counts, "total": n,
            "normalization": info["normalization"], "sampler": info.get("sampler"), "npz": "synthetic.npz",
            "guidance_chosen_on_val": "guidance.json" if guidance_choice else None,
            "note": "all images are in the train split of synthetic.npz; read it with "
                    "medsyn.synth.load_synthetic(DIR)"})
        claim_out_dir(staging, "gan generate", record=True)
        if out_dir.exists():
            check_out_dir(out_dir, "gan generate", replaces=True)  # again: a file may have been put there since
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        staging.rename(out_dir)
    finally:
        release_out_dirs(staging)  # written (or failed): free the folder for the next writer
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def sample_grid(checkpoint: Path, n_per_class: int, seed: int) -> np.ndarray:
    from medsyn import generators

    if n_per_class < 1:
        raise MedsynError(f"n_per_class must be at least 1, not {n_per_class}.")
    generator, info = generators.load_generator(checkpoint)
    return generators.class_grid(generator, info, n_per_class, seed)


def folder_name(class_name: str) -> str:
    """A class name as a safe folder name (no path separators, not hidden)."""
    name = class_name.replace("/", "_").replace("\\", "_").strip() or "class"
    return "_" + name if name.startswith(".") else name


def _write_pngs(root: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> list[str]:
    from PIL import Image

    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        relative = Path(folder_name(class_names[label])) / f"{i:06d}.png"
        (root / relative.parent).mkdir(exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(root / relative)
        paths.append(str(relative))
    return paths
