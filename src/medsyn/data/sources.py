"""Read what a source holds: an npz in MedMNIST layout, an image folder tree, or a CSV manifest.

Folders and manifests give a `Listing` of files to decode; an npz gives arrays directly.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.data.images import CONVERSIONS, BadImage, conversion_rule, image_format, is_image_file, to_uint8
from medsyn.data.splits import patient_from_filename
from medsyn.errors import MedsynError
from medsyn.fileio import check_npz_budget, open_npz, read_npz_member

NPZ_KEYS = tuple(f"{s}_{kind}" for s in ("train", "val", "test") for kind in ("images", "labels"))
SPLIT_FOLDERS = ("train", "val", "test")
SPLIT_LOOKALIKES = frozenset({"training", "testing", "validation", "valid", "validate", "dev", "eval", "holdout"})
HELD_OUT_ORDER = ("test", "val", "train", "")  # where a repeated image is kept: the most held-out split


@dataclass(frozen=True)
class Listing:
    paths: tuple[Path, ...]
    labels: np.ndarray
    given_split: np.ndarray     # "" where the source gives no split
    groups: np.ndarray
    class_names: tuple[str, ...]
    ignored: int                # non-image files left out
    fingerprint: str            # changes whenever a listed file changes
    notes: tuple[str, ...] = ()  # what was normalised or dropped, for data.json


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

NPZ_FIX = "save the splits with numpy.savez in the MedMNIST layout (train_images, train_labels, ...)"
MAX_CLASSES = 10_000            # labels are checked against this (or the class list) before anything is sized by them


def read_npz(path: Path, min_classes: int = 2) -> NpzArrays:
    with open_npz(path, str(path), NPZ_FIX) as archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise MedsynError(f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST-layout npz needs "
                              f"{', '.join(NPZ_KEYS)} (a split may have 0 rows).")
        keys = list(NPZ_KEYS) + (["class_names"] if "class_names" in archive.files else [])
        check_npz_budget(archive, keys, str(path), NPZ_FIX)
        images, labels, split = [], [], []
        for s in ("train", "val", "test"):
            x = read_npz_member(archive, f"{s}_images", str(path), NPZ_FIX)
            y = normalise_labels(read_npz_member(archive, f"{s}_labels", str(path), NPZ_FIX), f"{path}: {s}_labels")
            if len(x) != len(y):
                raise MedsynError(f"{path}: {s}_images has {len(x)} rows but {s}_labels has {len(y)}; "
                                  "each image needs exactly one label.")
            images.append(x)
            labels.append(y)
            split += [s] * len(x)
        names = _npz_class_names(read_npz_member(archive, "class_names", str(path), NPZ_FIX), path) \
            if "class_names" in archive.files else None
    if not sum(map(len, images)):
        raise MedsynError(f"{path}: every split has 0 images; the file holds no data.")
    shapes = {x.shape[1:] for x in images if len(x)}
    if len(shapes) > 1:
        raise MedsynError(f"{path}: the splits hold images of different shapes {sorted(shapes)}.")
    shape = shapes.pop() if shapes else ()
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise MedsynError(f"{path}: images of shape {shape} are not 2D grayscale (H, W) or RGB (H, W, 3); "
                          "3D MedMNIST volumes are not supported.")
    _check_one_conversion(images, path)
    all_labels = np.concatenate(labels)
    class_names = names or medmnist_class_names(path) or _numbered_classes(all_labels, path)
    _check_label_range(all_labels, len(class_names), path, min_classes)
    all_images = to_uint8(np.concatenate([x.reshape((-1,) + shape) for x in images]), f"{path}: images")
    return NpzArrays(all_images, all_labels, np.array(split, dtype="<U5"), class_names)


def _check_one_conversion(images: list[np.ndarray], path: Path) -> None:
    """One dtype rule per file: every split must convert to uint8 the same way (a uint8 train split beside float
    val/test splits in [0, 1] would otherwise turn val and test black)."""
    rules = {s: conversion_rule(x, f"{path}: {s}_images") for s, x in zip(("train", "val", "test"), images)}
    rules = {s: r for s, r in rules.items() if r != "empty"}
    if len(set(rules.values())) > 1:
        found = "; ".join(f"{s}_images are {images[i].dtype} ({CONVERSIONS[r]})"
                          for i, (s, r) in enumerate(rules.items()))
        raise MedsynError(f"{path}: the splits hold images on different scales ({found}); medsyn converts every "
                          "split of a file one way, so save all splits with one dtype and range (uint8 0..255 "
                          "best).")


def _npz_class_names(values: np.ndarray, path: Path) -> tuple[str, ...]:
    if values.ndim != 1 or values.dtype.kind not in "US":
        raise MedsynError(f"{path}: class_names is a {values.ndim}-d {values.dtype} array; save it as a 1-d array "
                          "of strings, one name per class index.")
    names = tuple(str(n) for n in values)
    check_class_names(names, f"{path}: class_names")
    return names


def medmnist_class_names(path: Path) -> tuple[str, ...] | None:
    """Class names from the medmnist package's INFO when the file name is a dataset flag
    (`pneumoniamnist.npz`, `pneumoniamnist_64.npz`)."""
    flag = path.stem.split("_")[0].lower()
    from medmnist import INFO

    if flag not in INFO:
        return None
    label_map = INFO[flag]["label"]
    return tuple(label_map[str(i)] for i in range(len(label_map)))


def normalise_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices of any numeric dtype -> int64, one per image; text, fractions, NaN or several labels per
    image are refused (never truncated or wrapped)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise MedsynError(f"{where} has shape {labels.shape}; medsyn needs one class per image (multi-label "
                          "datasets such as ChestMNIST are not supported).")
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    if labels.dtype.kind not in "iuf":
        raise MedsynError(f"{where} are {labels.dtype} values; labels must be class indices 0..K-1 (put the "
                          "names in a class_names array).")
    if labels.dtype.kind in "iu" and len(labels) and (labels.max() > 2 ** 31 or labels.min() < -2 ** 31):
        value = labels.max() if labels.max() > 2 ** 31 else labels.min()
        raise MedsynError(f"{where}: label {int(value)} (row {int(np.argmax(labels == value))}) is not a class "
                          "index; labels must be 0..K-1.")
    if labels.dtype.kind == "f":
        with np.errstate(invalid="ignore"):  # NaN compares as unequal: it is counted, not warned about
            bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (np.abs(labels) > 2 ** 31)
        if bad.any():
            raise MedsynError(f"{where}: {int(bad.sum())} label(s) are not whole class indices (row "
                              f"{int(np.argmax(bad))} is {float(labels[bad][0])}); labels must be 0..K-1.")
    return labels.astype(np.int64)


def _numbered_classes(labels: np.ndarray, path: Path) -> tuple[str, ...]:
    """class_0..class_K-1 for a file without class names; a label beyond MAX_CLASSES is refused before K names
    are made."""
    top = int(labels.max()) if len(labels) else -1
    if top >= MAX_CLASSES:
        raise MedsynError(f"{path}: label {top} with no class_names: medsyn supports at most {MAX_CLASSES:,} "
                          "classes; labels must be 0..K-1 (fix the labels, or add a class_names array).")
    return tuple(f"class_{i}" for i in range(top + 1))


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
    subdirs = _visible_dirs(root)
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
        raw_names = sorted({c.name for d in split_dirs for c in _visible_dirs(d)})
        groups = [(d.name.lower(), d) for d in split_dirs]
    else:
        raw_names = [d.name for d in subdirs]
        groups = [("", root)]
    split_like = [n for n in raw_names if n.lower() in SPLIT_LOOKALIKES]
    if split_like:
        raise MedsynError(f"{root}: the folder(s) {', '.join(split_like)} look like splits, not classes; name "
                          "split folders train, val and test (ROOT/{train,val,test}/<CLASS>/*), or give a manifest.")
    class_names, index, notes = unify_labels(raw_names, str(root))
    if len(class_names) < 2:
        raise MedsynError(f"{root}: found only the class folder(s) {class_names}; a classifier needs at least "
                          "two classes.")
    paths, labels, splits, ignored = [], [], [], 0
    for split, base in groups:
        for name in raw_names:
            class_dir = base / name
            if not class_dir.is_dir():
                continue
            files = sorted(p for p in class_dir.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))
            images = [p for p in files if is_image_file(p)]
            ignored += len(files) - len(images)
            if not images:
                raise MedsynError(f"{class_dir}: class folder holds no images (PNG, JPEG, BMP, TIFF, GIF or DICOM); "
                                  "add images or remove the folder.")
            paths += images
            labels += [index[name]] * len(images)
            splits += [split] * len(images)
    return _listing(paths, labels, splits, [patient_from_filename(p.name) for p in paths], class_names, ignored,
                    notes)


def _visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders that can be classes or splits: hidden ones (`.thumbnails`, `.git`) never are."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _listing(paths, labels, splits, groups, class_names, ignored, notes=()) -> Listing:
    groups, patient_notes = unify_patients(groups)
    return Listing(tuple(paths), np.array(labels, dtype=np.int64), np.array(splits, dtype="<U5"),
                   np.array(groups, dtype=str), tuple(class_names), ignored, fingerprint_files(paths),
                   tuple(notes) + tuple(patient_notes))


def unify_patients(groups) -> tuple[list[str], list[str]]:
    """Patient ids compared ignoring case and surrounding spaces (`N07`, ` n07` are one patient, so never in two
    splits); each is written in one spelling, and the merged spellings are reported in the notes."""
    spellings = {}
    for group in groups:
        if group.strip():
            spellings.setdefault(group.strip().casefold(), set()).add(group)
    chosen = {key: min(v).strip() for key, v in spellings.items()}
    merged = [" / ".join(map(repr, sorted(v))) for v in spellings.values() if len(v) > 1]
    notes = [f"{len(merged)} patient id(s) spelt more than one way were taken as one patient each (ids are compared "
             f"ignoring case and surrounding spaces): {'; '.join(merged[:10])}{' ...' if len(merged) > 10 else ''}"] \
        if merged else []
    return [chosen[g.strip().casefold()] if g.strip() else "" for g in groups], notes


def without_copies(listing: Listing) -> Listing:
    """The listing with no image in two splits (see `_keep_copies_together`); reads every file, so it runs only
    when the source is decoded, not for each cache lookup."""
    keep, groups, notes = _keep_copies_together(listing.paths, listing.labels, listing.given_split,
                                                listing.groups.tolist(), listing.class_names)
    return dataclasses.replace(listing, paths=tuple(listing.paths[i] for i in keep), labels=listing.labels[keep],
                               given_split=listing.given_split[keep], groups=np.array(groups, dtype=str)[keep],
                               notes=listing.notes + tuple(notes))


def canonical_label(name: str) -> str:
    """A label's one spelling: a number written with leading zeros is that number (`01` is `1`)."""
    return str(int(name)) if name.isascii() and name.isdigit() else name


def unify_labels(raw_names, where: str) -> tuple[tuple[str, ...], dict[str, int], list[str]]:
    """The one label rule for folders and manifests: (class names, the class index of each raw spelling, notes).
    Numeric spellings of one number are one class (reported); names differing only by case or spaces, and empty
    names, are refused (`check_class_names`)."""
    canonical = {raw: canonical_label(raw) for raw in raw_names}
    check_class_names(sorted(set(canonical.values())), where)
    names = sorted({c.strip() for c in canonical.values()})
    index = {raw: names.index(c.strip()) for raw, c in canonical.items()}
    merged = {}
    for raw, c in canonical.items():
        merged.setdefault(c.strip(), set()).add(raw)
    notes = [f"labels {' / '.join(map(repr, sorted(v)))} in {where} were read as one class {c!r} (one number)"
             for c, v in merged.items() if len(v) > 1 and len({x.strip() for x in v}) > 1]
    return tuple(names), index, notes


def check_class_names(names, where: str) -> None:
    """Class names must be non-empty and distinct even ignoring case, surrounding spaces and leading zeros:
    `Normal`, `normal ` and `NORMAL` are one class misspelt, never three. The rule for every source."""
    if any(not name.strip() for name in names):
        raise MedsynError(f"{where}: an empty class name; every image needs a label.")
    spellings = {}
    for name in names:
        spellings.setdefault(canonical_label(name.strip()).casefold(), []).append(name)
    clashes = [sorted(v) for v in spellings.values() if len(v) > 1]
    if clashes:
        raise MedsynError(f"{where}: class names differ only by case or spaces: "
                          f"{'; '.join(' / '.join(map(repr, c)) for c in clashes)}; spell each class one way.")


def _keep_copies_together(paths, labels, splits, groups, class_names) -> tuple[list[int], list[str], list[str]]:
    """No image in two splits: a row repeating a path is left out; byte-identical files share one patient group
    (so a carved split keeps them together), and where the source gives them different splits only the copies in
    the most held-out one are kept. Returns the rows kept, the groups and notes on what was done."""
    keep, notes = _one_row_per_file(paths, labels, splits, class_names)
    by_content = {}
    for i in keep:
        digest = _content_hash(paths[i])
        if digest is not None:
            by_content.setdefault(digest, []).append(i)
    key = [g or f"__row{i}" for i, g in enumerate(groups)]  # rows without a patient id are their own group
    parent = {}

    def root(k):
        while parent.get(k, k) != k:
            k = parent[k]
        return k

    dropped = set()
    for rows in (r for r in by_content.values() if len(r) > 1):
        for i in rows[1:]:  # one group for the copies and every other image of their patients
            parent[root(key[i])] = root(key[rows[0]])
        held_out = min(rows, key=lambda i: HELD_OUT_ORDER.index(splits[i]))
        dropped |= {i for i in rows if splits[i] != splits[held_out]}
    merged = set(parent) | set(parent.values())
    groups = [root(k) if k in merged else g for k, g in zip(key, groups)]
    copies = sum(len(r) - 1 for r in by_content.values())
    if copies:
        notes.append(f"{copies} byte-identical file(s) found: each set of copies is kept in one split"
                     + (f"; {len(dropped)} copies the source put in another split than the test/val copy were "
                        "left out" if dropped else ""))
    return [i for i in keep if i not in dropped], groups, notes


def _one_row_per_file(paths, labels, splits, class_names) -> tuple[list[int], list[str]]:
    """The rows to keep when a file is listed more than once: the one in the most held-out split."""
    by_path = {}
    for i, path in enumerate(paths):
        by_path.setdefault(path, []).append(i)
    keep = []
    for path, rows in by_path.items():
        if len({labels[i] for i in rows}) > 1:
            named = ", ".join(sorted({class_names[labels[i]] for i in rows}))
            raise MedsynError(f"{path} is listed with different labels ({named}); give each file one label.")
        keep.append(min(rows, key=lambda i: HELD_OUT_ORDER.index(splits[i])))
    notes = [f"{len(paths) - len(keep)} repeated row(s) naming a file already listed were left out (a file listed "
             "in several splits stays in the most held-out one)"] if len(keep) < len(paths) else []
    return sorted(keep), notes


def _content_hash(path: Path) -> str | None:
    """The sha256 of the file's bytes, read in blocks; None for a file refused by its type or size (`image_format`),
    which is never read whole here: decoding reports it."""
    try:
        image_format(path)
    except BadImage:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- manifest

def list_manifest(path: Path) -> Listing:
    """A CSV with columns path,label[,split][,patient_id]; paths relative to the CSV's folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise MedsynError(f"{path}: not UTF-8 text ({err}); save the manifest as UTF-8 CSV.") from err
    except (csv.Error, OSError) as err:
        raise MedsynError(f"{path}: not a readable CSV manifest ({err}).") from err
    columns = set(rows[0]) if rows else set()
    if not {"path", "label"} <= columns:
        raise MedsynError(f"{path}: a manifest needs a header with columns path,label[,split][,patient_id]; "
                          f"found {sorted(c for c in columns if c) or 'no rows'}.")
    unlabelled = [i + 2 for i, r in enumerate(rows) if not (r["label"] or "").strip() or not (r["path"] or "").strip()]
    if unlabelled:
        raise MedsynError(f"{path}: line(s) {', '.join(map(str, unlabelled[:10]))} have no path or no label; "
                          "every row needs both.")
    class_names, index, notes = unify_labels(sorted({r["label"] for r in rows}), str(path))
    if len(class_names) < 2:
        raise MedsynError(f"{path}: only the class {class_names} appears; a classifier needs at least two.")
    paths, missing = [], []
    for r in rows:
        file = (path.parent / r["path"]).resolve()
        (paths if file.is_file() else missing).append(file)
    folders = [file for file in missing if file.is_dir()]
    if folders:
        raise MedsynError(f"{path}: {len(folders)} row(s) name a folder, not an image file, e.g. {folders[0]}; "
                          "list one image file per row (or give the folder itself as the data source).")
    if missing:
        raise MedsynError(f"{path}: {len(missing)} listed file(s) do not exist, e.g. {missing[0]}; "
                          "paths are relative to the manifest's folder.")
    splits = [(r.get("split") or "").strip().lower() for r in rows]
    unknown = sorted(set(splits) - {"", *SPLIT_FOLDERS})
    if unknown:
        raise MedsynError(f"{path}: unknown split value(s) {unknown}; use train, val, test or leave it empty.")
    groups = [(r.get("patient_id") or "").strip() or patient_from_filename(Path(r["path"]).name) for r in rows]
    labels = [index[r["label"]] for r in rows]
    return _listing(paths, labels, splits, groups, class_names, 0, notes)
