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
from medsyn.data import cache, nearcopy
from medsyn.data.dataset import SPLITS, ImageSet
from medsyn.data import leaks as leak_guard
from medsyn.data.images import BadImage, load_image, native_size, resize_square, to_channels
from medsyn.data.nearcopy import thumbnail, thumbnails
from medsyn.data.sources import Listing, fingerprint_files, list_folder, list_manifest, read_npz, without_copies
from medsyn.data.splits import assign_splits
from medsyn.errors import MedsynError
from medsyn.fileio import NUMBER, Field, read_json, write_json, write_text

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
    given, leak, leak_notes = _leak_guard(path, config, decoded)
    split, notes = assign_splits(decoded["labels"], decoded["groups"], given,
                                 len(meta["class_names"]), config.val, config.val_fraction, config.split_seed)
    dataset = ImageSet(images=images, labels=decoded["labels"], split=split,
                       class_names=tuple(meta["class_names"]), groups=decoded["groups"], paths=decoded["paths"],
                       source=str(path), aspect=config.aspect, given_split=decoded["given_split"],
                       skipped=tuple(meta["skipped"]), ignored=meta["ignored"],
                       notes=tuple(meta["notes"]) + tuple(leak_notes) + tuple(notes), leak=leak)
    _save_split_file(entry, config, dataset)
    return dataset


def split_file(entry: Path, config: DataConfig) -> Path:
    resplit = "-resplit" if config.leak == "resplit" else ""
    return entry / f"splits-{config.val}-{config.val_fraction:g}-seed{config.split_seed}{resplit}.csv"


# The leak guard's cache: leaks.json (data/leaks.py find_leaks) and resplit-seed<k>.json
LEAKS = {"threshold": NUMBER, "counts": Field(dict), "n_copies": Field(int, low=0),
         "pairs": Field(list, items=Field(dict, fields={"splits": str, "a": str, "b": str, "correlation": NUMBER}))}
RESPLIT = {"split": Field(list, items=Field(str, choices=(*SPLITS, ""))),
           "resplit": Field(dict, fields={"moved": Field(int, low=0)})}


def _leak_guard(path: Path, config: DataConfig, decoded: dict) -> tuple[np.ndarray, dict | None, list[str]]:
    """Near-copies across the splits the source gives (see data/leaks.py): an error, or the given splits re-split
    (`--resplit`), or kept with a warning (`--allow-leak`). Returns the splits to use, the record for data.json and
    notes. The search runs once per source and detector version (cached beside the decoded arrays)."""
    given = decoded["given_split"]
    if len({s for s in given.tolist() if s}) < 2:
        return given, None, []
    key = {k: v for k, v in _cache_key(path, config).items() if k not in ("size", "channels", "aspect")}
    folder = cache.entry_dir(f"{path.stem or path.name}-leaks", {**key, "detector": nearcopy.DETECTOR_VERSION,
                                                                    "threshold": nearcopy.SAME_IMAGE_CORRELATION})
    fix = f"medsyn's leak-guard cache {folder} is damaged or was not written by medsyn: remove that folder"
    found = read_json(folder / "leaks.json", LEAKS, fix) if (folder / "leaks.json").is_file() else None
    if found is None:
        folder.mkdir(parents=True, exist_ok=True)
        found = leak_guard.find_leaks(decoded["thumbs"], given, decoded["paths"])
        write_json(folder / "leaks.json", found)
    record = {k: v for k, v in found.items() if k != "pairs"}
    record["examples"] = leak_guard._examples(found, 10)
    if not found["n_copies"]:
        return given, {**record, "policy": "none found"}, []
    policy = config.leak
    if policy == "error" and path == bundled_path():
        policy = "allow"  # MedMNIST's own file: 8 val images repeat a train image; the official splits are kept
    if policy == "error":
        raise leak_guard.leak_error(found, path)
    if policy == "allow":
        note = (f"leak guard: {found['n_copies']} held-out image(s) are near-copies of images in another split; "
                "kept as given" + (" (--allow-leak)" if config.leak == "allow" else
                                   " (the bundled PneumoniaMNIST's own duplicates, as in the official MedMNIST file)"))
        return given, {**record, "policy": "allow",
                       "allowed_by": "--allow-leak" if config.leak == "allow" else "the bundled data"}, [note]
    target = folder / f"resplit-seed{config.split_seed}.json"
    if target.is_file():
        saved = read_json(target, RESPLIT, fix)
        if len(saved["split"]) != len(given):
            raise MedsynError(f"{target}: {len(saved['split'])} splits for {len(given)} images; {fix}.")
    else:
        new, done = leak_guard.resplit(decoded["thumbs"], decoded["labels"], decoded["groups"], given,
                                       decoded["paths"], found, config.split_seed)
        saved = {"split": new.tolist(), "resplit": done}
        write_json(target, saved)
    note = (f"leak guard: {found['n_copies']} held-out image(s) were near-copies of images in another split; the "
            f"given splits were merged and re-split grouped by content and patient (--resplit, seed "
            f"{config.split_seed}): {saved['resplit']['moved']} image(s) changed split")
    return np.array(saved["split"], dtype="<U5"), {**record, "policy": "resplit", "resplit": saved["resplit"]}, [note]


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
    if config.leak not in leak_guard.LEAK_POLICIES:
        raise MedsynError(f"unknown leak policy {config.leak!r}; choose {', '.join(leak_guard.LEAK_POLICIES)}.")
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
    arrays = {"images": images, "thumbs": thumbnails(raw.images), "labels": raw.labels, "given_split": raw.split,
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
    thumbs = np.stack([r[1] for r in results if not isinstance(r, str)])
    results = [r if isinstance(r, str) else r[0] for r in results]
    if bad and not config.skip_bad:
        raise MedsynError(f"{len(bad)} image(s) cannot be used:\n  " + "\n  ".join(bad) +
                          "\nfix or remove them, or pass --skip-bad to leave them out (they are recorded).")
    for line in bad:
        print(f"medsyn: warning: skipped {line}", file=sys.stderr)
    keep = np.array([not isinstance(r, str) for r in results], dtype=bool)
    decoded = [r for r in results if not isinstance(r, str)]
    channels = config.channels or (3 if any(im.ndim == 3 for im in decoded) else 1)
    images = np.stack([to_channels(im, channels) for im in decoded])
    arrays = {"images": images, "thumbs": thumbs, "labels": listing.labels[keep], "given_split": listing.given_split[keep],
              "groups": listing.groups[keep], "paths": np.array([str(p) for p in listing.paths])[keep]}
    if listing.ignored:
        notes.append(f"{listing.ignored} non-image file(s) in class folders were ignored")
    meta = {"class_names": list(listing.class_names), "skipped": bad, "ignored": listing.ignored, "notes": notes}
    return arrays, meta


def _decode_one(path: Path, size: int, aspect: str) -> tuple[np.ndarray, np.ndarray] | str:
    """The image made square at `size`, and the leak guard's aspect-free thumbnail of the image as decoded."""
    try:
        image = load_image(path)
        return resize_square(image, size, aspect), thumbnail(image)
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
