"""Read what a source holds: an npz in MedMNIST layout, an image folder tree, or a CSV manifest.

Folders and manifests give a `Listing` of files to decode; an npz gives arrays directly.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.data.images import is_image_file
from medsyn.data.splits import patient_from_filename
from medsyn.errors import MedsynError

NPZ_KEYS = tuple(f"{s}_{kind}" for s in ("train", "val", "test") for kind in ("images", "labels"))
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class Listing:
    paths: tuple[Path, ...]
    labels: np.ndarray
    given_split: np.ndarray     # "" where the source gives no split
    groups: np.ndarray
    class_names: tuple[str, ...]
    ignored: int                # non-image files left out
    fingerprint: str            # changes whenever a listed file changes


@dataclass(frozen=True)
class NpzArrays:
    images: np.ndarray          # (N, H, W) or (N, H, W, C)
    labels: np.ndarray
    split: np.ndarray
    class_names: tuple[str, ...]


def fingerprint_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- npz

def read_npz(path: Path, min_classes: int = 2) -> NpzArrays:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise MedsynError(f"{path}: not a readable .npz file ({err}); expected numpy's savez format.") from err
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise MedsynError(f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST-layout npz needs "
                              f"{', '.join(NPZ_KEYS)} (a split may have 0 rows).")
        images, labels, split = [], [], []
        for s in ("train", "val", "test"):
            x, y = archive[f"{s}_images"], _label_vector(archive[f"{s}_labels"], path, s)
            if len(x) != len(y):
                raise MedsynError(f"{path}: {s}_images has {len(x)} rows but {s}_labels has {len(y)}; "
                                  "each image needs exactly one label.")
            images.append(x)
            labels.append(y)
            split += [s] * len(x)
        names = tuple(str(n) for n in archive["class_names"]) if "class_names" in archive.files else None
    shapes = {x.shape[1:] for x in images if len(x)}
    if len(shapes) > 1:
        raise MedsynError(f"{path}: the splits hold images of different shapes {sorted(shapes)}.")
    shape = shapes.pop() if shapes else ()
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise MedsynError(f"{path}: images of shape {shape} are not 2D grayscale (H, W) or RGB (H, W, 3); "
                          "3D MedMNIST volumes are not supported.")
    all_labels = np.concatenate(labels).astype(np.int64)
    class_names = names or medmnist_class_names(path) or _numbered_classes(all_labels)
    _check_label_range(all_labels, len(class_names), path, min_classes)
    all_images = np.concatenate([x.reshape((-1,) + shape) for x in images]).astype(np.uint8, copy=False)
    return NpzArrays(all_images, all_labels, np.array(split, dtype="<U5"), class_names)


def _label_vector(labels: np.ndarray, path: Path, split: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise MedsynError(f"{path}: {split}_labels has shape {labels.shape}; medsyn needs one class per image "
                          "(multi-label datasets such as ChestMNIST are not supported).")
    return labels


def medmnist_class_names(path: Path) -> tuple[str, ...] | None:
    """Class names from the medmnist package's INFO when the file name is a dataset flag
    (`pneumoniamnist.npz`, `pneumoniamnist_64.npz`)."""
    flag = path.stem.split("_")[0].lower()
    from medmnist import INFO

    if flag not in INFO:
        return None
    label_map = INFO[flag]["label"]
    return tuple(label_map[str(i)] for i in range(len(label_map)))


def _numbered_classes(labels: np.ndarray) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(int(labels.max()) + 1 if len(labels) else 0))


def _check_label_range(labels: np.ndarray, n_classes: int, path: Path, min_classes: int) -> None:
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise MedsynError(f"{path}: {int(bad.sum())} label(s) outside [0, {n_classes}) (for example "
                          f"{int(labels[bad][0])}); fix the labels or the class list.")
    if len(np.unique(labels)) < min_classes:
        raise MedsynError(f"{path}: only one class is present; a classifier needs at least two.")


# ---------------------------------------------------------------- folders

def list_folder(root: Path) -> Listing:
    """ROOT/{train,val,test}/<CLASS>/* (splits given) or ROOT/<CLASS>/* (medsyn makes the splits)."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise MedsynError(f"{root}: no class or split folders inside; expected ROOT/<CLASS>/*.png or "
                          "ROOT/{train,val,test}/<CLASS>/*.png.")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) != len(subdirs):
        unknown = [d.name for d in subdirs if d not in split_dirs]
        raise MedsynError(f"{root}: unknown split folder(s) {', '.join(unknown)} beside "
                          f"{', '.join(d.name for d in split_dirs)}; split folders must be named train, val or "
                          "test (move or rename the others).")
    if split_dirs:
        class_names = sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()})
        groups = [(d.name.lower(), d) for d in split_dirs]
    else:
        class_names = [d.name for d in subdirs]
        groups = [("", root)]
    if len(class_names) < 2:
        raise MedsynError(f"{root}: found only the class folder(s) {class_names}; a classifier needs at least "
                          "two classes.")
    paths, labels, splits, ignored = [], [], [], 0
    for split, base in groups:
        for label, name in enumerate(class_names):
            class_dir = base / name
            if not class_dir.is_dir():
                continue
            files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
            images = [p for p in files if is_image_file(p)]
            ignored += len(files) - len(images)
            if not images:
                raise MedsynError(f"{class_dir}: class folder holds no images (PNG, JPEG, BMP, TIFF or DICOM); "
                                  "add images or remove the folder.")
            paths += images
            labels += [label] * len(images)
            splits += [split] * len(images)
    return _listing(paths, labels, splits, [patient_from_filename(p.name) for p in paths], class_names, ignored)


def _listing(paths, labels, splits, groups, class_names, ignored) -> Listing:
    return Listing(tuple(paths), np.array(labels, dtype=np.int64), np.array(splits, dtype="<U5"),
                   np.array(groups, dtype=str), tuple(class_names), ignored, fingerprint_files(paths))


# ---------------------------------------------------------------- manifest

def list_manifest(path: Path) -> Listing:
    """A CSV with columns path,label[,split][,patient_id]; paths relative to the CSV's folder."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if not {"path", "label"} <= columns:
        raise MedsynError(f"{path}: a manifest needs a header with columns path,label[,split][,patient_id]; "
                          f"found {sorted(columns) or 'no rows'}.")
    class_names = sorted({r["label"] for r in rows})
    if len(class_names) < 2:
        raise MedsynError(f"{path}: only the class {class_names} appears; a classifier needs at least two.")
    paths, missing = [], []
    for r in rows:
        file = (path.parent / r["path"]).resolve()
        (paths if file.is_file() else missing).append(file)
    if missing:
        raise MedsynError(f"{path}: {len(missing)} listed file(s) do not exist, e.g. {missing[0]}; "
                          "paths are relative to the manifest's folder.")
    splits = [(r.get("split") or "").strip().lower() for r in rows]
    unknown = sorted(set(splits) - {"", *SPLIT_FOLDERS})
    if unknown:
        raise MedsynError(f"{path}: unknown split value(s) {unknown}; use train, val, test or leave it empty.")
    groups = [(r.get("patient_id") or "").strip() or patient_from_filename(Path(r["path"]).name) for r in rows]
    labels = [class_names.index(r["label"]) for r in rows]
    return _listing(paths, labels, splits, groups, class_names, 0)
