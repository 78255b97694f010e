"""Patient ids from file names, and seeded, stratified, patient-grouped splits."""

from __future__ import annotations

import re
import warnings

import numpy as np

from medsyn.errors import MedsynError

# Kaggle chest_xray names: person123_bacteria_456.jpeg (patient 123), IM-0115-0001.jpeg and
# NORMAL2-IM-0115-0001.jpeg (IM id 0115). Both IM forms map to one group: merging can only prevent leakage.
_PATIENT_PATTERNS = (
    (re.compile(r"^(person\d+)_", re.IGNORECASE), lambda m: m.group(1).lower()),
    (re.compile(r"(?:^|-)IM-(\d+)-", re.IGNORECASE), lambda m: f"IM-{m.group(1)}"),
)


def patient_from_filename(name: str) -> str:
    """The patient id a Kaggle chest_xray file name carries, or "" when it carries none."""
    for pattern, make_id in _PATIENT_PATTERNS:
        match = pattern.search(name)
        if match:
            return make_id(match)
    return ""


def carve(labels: np.ndarray, groups: np.ndarray, pool: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about `fraction` of the `pool` rows, stratified by label, never splitting a group.

    Rows without a group id count as their own group.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    index = np.flatnonzero(pool)
    smallest_class = min(c for c in np.bincount(labels[index]) if c > 0) if len(index) else 0
    # A tiny dataset cannot hold out 1/n_folds of every class; hold out one member per class instead.
    n_folds = max(2, min(int(round(1.0 / fraction)), smallest_class))
    pool_groups = np.array([g if g else f"__row{i}" for i, g in zip(index, groups[index])])
    lonely = [c for c, n in enumerate(np.bincount(labels[index])) if n == 1]
    if lonely:
        raise MedsynError(f"class(es) {', '.join(map(str, lonely))} (by index, in class order) have only one image "
                          f"to split; each class needs at least 2 images to carve a {fraction:.0%} split: add "
                          "images or leave the class out.")
    if len(np.unique(pool_groups)) < n_folds:
        raise MedsynError(f"too few patients ({len(np.unique(pool_groups))}) to carve a {fraction:.0%} split; "
                          "add images or give the split explicitly (split folders or a manifest `split` column).")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        _, held_out = next(splitter.split(np.zeros(len(index)), labels[index], pool_groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[index[held_out]] = True
    return mask


def assign_splits(labels: np.ndarray, groups: np.ndarray, given: np.ndarray, n_classes: int,
                  val_policy: str, val_fraction: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """Final train/val/test per row, from the source's own splits ("" where it gives none), and notes on what
    was decided."""
    split = given.astype("<U5").copy()
    notes = []
    if (split == "").any():
        if not (split == "").all():
            raise MedsynError("some images have a split and some do not; give a split for every row or for none.")
        test = carve(labels, groups, np.ones(len(split), bool), 0.2, seed)
        split[:] = "train"
        split[test] = "test"
        notes.append(f"no splits given: carved a stratified, patient-grouped test split of {int(test.sum())} "
                     f"images (target 20%, seed {seed})")
    n_train, n_val = int((split == "train").sum()), int((split == "val").sum())
    val_classes = len(np.unique(labels[split == "val"]))
    keep = val_policy == "given" or (val_policy == "auto" and n_val >= 0.05 * n_train and val_classes == n_classes)
    if keep:
        return split, notes
    pool = (split == "train") | (split == "val")
    val = carve(labels, groups, pool, val_fraction, seed)
    split[pool] = "train"
    split[val] = "val"
    notes.append(f"validation split carved from train{' + the given val' if n_val else ''} "
                 f"({int(val.sum())} images, {val_fraction:.0%}, stratified by class, grouped by patient, "
                 f"seed {seed}); the given val had {n_val} images")
    return split, notes


def nested_train_subset(labels: np.ndarray, groups: np.ndarray, split: np.ndarray, size: float,
                        imbalance: float = 1.0, seed: int = 0) -> np.ndarray:
    """A mask of the train rows kept for a learning-curve point: `size` <= 1 is a fraction of the train split,
    > 1 a number of images. Stratified (each class keeps its share, times `imbalance` for every class but the
    largest), grouped (a patient's images stay together) and nested: every class's patients are taken in one
    seeded order, so a smaller subset is always inside a larger one. Val and test rows are never touched."""
    train = split == "train"
    counts = np.bincount(labels[train])
    fraction = size if size <= 1 else size / train.sum()
    shares = np.where(counts == counts.max(), fraction, fraction * imbalance)
    return _nested(labels, groups, train, shares, np.random.default_rng([seed, 20260101]), min_per_class=1)


def is_whole_split(size: float, n_train: int) -> bool:
    """Whether a learning-curve `size` (a fraction <= 1 or an image count) asks for the whole train split: the one
    rule for "no images lie outside this point's subset"."""
    return size == 1.0 or size >= n_train


def learning_curve_point(labels: np.ndarray, groups: np.ndarray, split: np.ndarray, size: float,
                         imbalance: float = 1.0, seed: int = 0, scale_val: bool = True) -> np.ndarray:
    """The rows of one learning-curve point: the nested train subset of `size`, the whole test split, and a val
    split that keeps each class in the same share as the train subset keeps it (nested, patient-grouped, at least
    VAL_FLOOR_PER_CLASS images per class where val has them), so that a point with 94 labelled train images is not
    tuned on hundreds of val images no such user would have. `scale_val=False` keeps the whole val split at every
    size (optimistic at small sizes)."""
    train = nested_train_subset(labels, groups, split, size, imbalance, seed)
    if not scale_val:
        return train | (split != "train")
    n_classes = int(labels.max()) + 1
    shares = np.bincount(labels[train], minlength=n_classes) / \
        np.maximum(1, np.bincount(labels[split == "train"], minlength=n_classes))
    val = _nested(labels, groups, split == "val", shares, np.random.default_rng([seed, 20260101, 1]),
                  min_per_class=VAL_FLOOR_PER_CLASS)
    return train | val | (split == "test")


VAL_FLOOR_PER_CLASS = 5  # early stopping, the threshold and the filter need a few val images of every class


def _nested(labels: np.ndarray, groups: np.ndarray, pool: np.ndarray, shares: np.ndarray,
            rng: np.random.Generator, min_per_class: int) -> np.ndarray:
    """Each class's `shares` of the `pool` rows, whole patients at a time in one seeded order per class (so a
    smaller share is inside a larger one), at least `min_per_class` images where the class has them."""
    rows_of_pool = np.flatnonzero(pool)
    kept = np.zeros(len(labels), dtype=bool)
    for cls, n in enumerate(np.bincount(labels[rows_of_pool])):
        if n == 0:
            continue
        rows = rows_of_pool[labels[rows_of_pool] == cls]
        ids = np.array([g if g else f"__row{i}" for i, g in zip(rows, groups[rows])])
        order = rng.permutation(np.unique(ids))
        cumulative = np.cumsum([np.sum(ids == g) for g in order])
        target = max(1, int(round(shares[cls] * n)))
        take = max(int(np.searchsorted(cumulative, target, side="right")),          # never above the share ...
                   int(np.searchsorted(cumulative, min(min_per_class, n))) + 1)   # ... but up to the floor
        kept[rows[np.isin(ids, order[:take])]] = True
    return kept


def heldout_train_rows(images: np.ndarray, split: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The train rows outside `kept` (a learning-curve point's rows) whose pixels stand in no val or test row: the
    positive control's pool, which must never hold a val or test image, even one the source duplicates across
    splits."""
    from medsyn.data.info import pixel_digest

    held = {pixel_digest(image) for image in images[split != "train"]}
    outside = (split == "train") & ~kept
    outside[outside] = [pixel_digest(image) not in held for image in images[outside]]
    return outside
