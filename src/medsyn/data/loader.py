"""`load(src, config) -> ImageSet`: any source, decoded once, cached, split without patient leakage."""

from __future__ import annotations

import collections
import csv
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np

from medsyn.config import ASPECT_POLICIES, DataConfig
from medsyn.data import cache
from medsyn.data.dataset import ImageSet
from medsyn.data.images import BadImage, load_image, native_size, resize_square, to_channels
from medsyn.data.sources import Listing, fingerprint_files, list_folder, list_manifest, read_npz, without_copies
from medsyn.data.splits import assign_splits
from medsyn.errors import MedsynError
from medsyn.fileio import write_text

MAX_DEFAULT_SIZE = 224  # a folder of large images is not decoded at full size unless --size asks


def bundled_path() -> Path:
    return Path(str(resources.files("medsyn") / "bundled" / "pneumoniamnist.npz"))


def resolve(src: str | os.PathLike | None) -> Path:
    if src is None or str(src) == "":
        return bundled_path()
    path = Path(src).expanduser()
    if not path.exists():
        raise MedsynError(f"{path}: no such file or folder; give an .npz file, an image folder, a .csv manifest, "
                          "or nothing for the bundled PneumoniaMNIST.")
    return path


def load(src: str | os.PathLike | None = None, config: DataConfig = DataConfig(), min_classes: int = 2) -> ImageSet:
    """Load, decode (once: later calls read the cache), split. `src=None` is the bundled PneumoniaMNIST.

    `min_classes=1` admits an npz in which only some of its classes occur (a minority-only synthetic top-up)."""
    _validate(config)
    path = resolve(src)
    decoded, meta, entry = _decoded(path, config, min_classes)
    images = decoded["images"]
    split, notes = assign_splits(decoded["labels"], decoded["groups"], decoded["given_split"],
                                 len(meta["class_names"]), config.val, config.val_fraction, config.split_seed)
    dataset = ImageSet(images=images, labels=decoded["labels"], split=split,
                       class_names=tuple(meta["class_names"]), groups=decoded["groups"], paths=decoded["paths"],
                       source=str(path), aspect=config.aspect, given_split=decoded["given_split"],
                       skipped=tuple(meta["skipped"]), ignored=meta["ignored"],
                       notes=tuple(meta["notes"]) + tuple(notes))
    _save_split_file(entry, config, dataset)
    return dataset


def split_file(entry: Path, config: DataConfig) -> Path:
    return entry / f"splits-{config.val}-{config.val_fraction:g}-seed{config.split_seed}.csv"


def cache_entry(src: str | os.PathLike | None, config: DataConfig = DataConfig()) -> Path:
    path = resolve(src)
    return cache.entry_dir(path.stem or path.name, _cache_key(path, config))


def _validate(config: DataConfig) -> None:
    if config.aspect not in ASPECT_POLICIES:
        raise MedsynError(f"unknown aspect policy {config.aspect!r}; choose {', '.join(ASPECT_POLICIES)}.")
    if config.size is not None and not 8 <= config.size <= 1024:
        raise MedsynError(f"--size {config.size} is out of range; choose 8 to 1024 pixels.")
    if config.channels not in (None, 1, 3):
        raise MedsynError(f"--channels {config.channels}: choose 1 (grayscale) or 3 (RGB).")
    if config.val not in ("auto", "given", "carve"):
        raise MedsynError(f"--val {config.val}: choose auto, given or carve.")
    if not 0.01 <= config.val_fraction <= 0.5:
        raise MedsynError(f"--val-fraction {config.val_fraction} is out of range; choose 0.01 to 0.5.")


def source_kind(path: Path) -> str:
    """"npz", "manifest" or "folder"; anything else (an image file, a device, ...) is refused with the fix."""
    if path.is_dir():
        return "folder"
    if path.is_file() and path.suffix.lower() in (".npz", ".csv"):
        return "npz" if path.suffix.lower() == ".npz" else "manifest"
    raise MedsynError(f"{path}: not a data source; give an .npz file, an image folder or a .csv manifest (to "
                      "classify single images, use `medsyn predict`).")


def _cache_key(path: Path, config: DataConfig) -> dict:
    kind = source_kind(path)
    if kind == "npz":
        fingerprint = fingerprint_files([path])
    elif kind == "manifest":
        fingerprint = fingerprint_files([path]) + list_manifest(path).fingerprint
    else:
        fingerprint = list_folder(path).fingerprint
    return {"source": str(path.resolve()), "fingerprint": fingerprint, "size": config.size,
            "channels": config.channels, "aspect": config.aspect, "skip_bad": config.skip_bad}


def _decoded(path: Path, config: DataConfig, min_classes: int) -> tuple[dict[str, np.ndarray], dict, Path]:
    """Arrays (images, labels, given_split, groups, paths) and meta, from the cache or decoded now."""
    entry = cache.entry_dir(path.stem or path.name, _cache_key(path, config))
    hit = cache.load_entry(entry)
    if hit is not None:
        return hit[0], hit[1], entry
    kind = source_kind(path)
    if kind == "npz":
        arrays, meta = _decode_npz(path, config, min_classes)
    else:
        arrays, meta = _decode_listing(list_manifest(path) if kind == "manifest" else list_folder(path), config)
    cache.save_entry(entry, arrays, meta)
    return arrays, meta, entry


def _decode_npz(path: Path, config: DataConfig, min_classes: int) -> tuple[dict, dict]:
    raw = read_npz(path, min_classes)
    images = raw.images if raw.images.ndim == 4 else raw.images[..., None]
    channels = config.channels or images.shape[3]
    size = config.size or images.shape[1]
    images = np.stack([to_channels(resize_square(_squeeze(im), size, config.aspect), channels) for im in images]) \
        if len(images) else images
    counters = collections.Counter(raw.split.tolist())
    index = [f"{path.name}:{s}[{i}]" for s in ("train", "val", "test") for i in range(counters[s])]
    arrays = {"images": images, "labels": raw.labels, "given_split": raw.split,
              "groups": np.full(len(images), "", dtype="<U1"), "paths": np.array(index)}
    return arrays, {"class_names": list(raw.class_names), "skipped": [], "ignored": 0, "notes": []}


def _squeeze(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


def _decode_listing(listing: Listing, config: DataConfig) -> tuple[dict, dict]:
    listing = without_copies(listing)
    notes = list(listing.notes)
    size = config.size
    if size is None:
        size, note = _default_size(listing.paths)
        notes.append(note)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(lambda p: _decode_one(p, size, config.aspect), listing.paths))
    bad = [f"{p}: {r}" for p, r in zip(listing.paths, results) if isinstance(r, str)]
    if bad and not config.skip_bad:
        raise MedsynError(f"{len(bad)} image(s) cannot be used:\n  " + "\n  ".join(bad) +
                          "\nfix or remove them, or pass --skip-bad to leave them out (they are recorded).")
    for line in bad:
        print(f"medsyn: warning: skipped {line}", file=sys.stderr)
    keep = np.array([not isinstance(r, str) for r in results], dtype=bool)
    decoded = [r for r in results if not isinstance(r, str)]
    channels = config.channels or (3 if any(im.ndim == 3 for im in decoded) else 1)
    images = np.stack([to_channels(im, channels) for im in decoded])
    arrays = {"images": images, "labels": listing.labels[keep], "given_split": listing.given_split[keep],
              "groups": listing.groups[keep], "paths": np.array([str(p) for p in listing.paths])[keep]}
    if listing.ignored:
        notes.append(f"{listing.ignored} non-image file(s) in class folders were ignored")
    meta = {"class_names": list(listing.class_names), "skipped": bad, "ignored": listing.ignored, "notes": notes}
    return arrays, meta


def _decode_one(path: Path, size: int, aspect: str) -> np.ndarray | str:
    try:
        return resize_square(load_image(path), size, aspect)
    except BadImage as err:
        return str(err)


def _default_size(paths) -> tuple[int, str]:
    sides = collections.Counter()
    for path in paths:
        try:
            sides[min(native_size(path))] += 1
        except BadImage:
            continue  # reported with its reason when decoded
    common = sides.most_common(1)[0][0] if sides else MAX_DEFAULT_SIZE
    size = min(common, MAX_DEFAULT_SIZE)
    return size, f"no --size given: images resized to {size}x{size} (most common shorter side {common}px)"


def _save_split_file(entry: Path, config: DataConfig, dataset: ImageSet) -> None:
    target = split_file(entry, config)
    if target.exists():
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "class", "split", "patient_id"])
    for path, label, split, group in zip(dataset.paths, dataset.labels, dataset.split, dataset.groups):
        writer.writerow([path, int(label), dataset.class_names[label], split, group])
    write_text(target, buffer.getvalue())
