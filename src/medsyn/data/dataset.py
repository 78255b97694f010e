"""`ImageSet`: the one in-memory form of every data source."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    """Labelled images with their split, patient group and source path, all aligned on the first axis.

    images: uint8 (N, H, W, C) with C = 1 (grayscale) or 3 (RGB)
    labels: int64 (N,), values in [0, len(class_names))
    split:  str (N,), one of SPLITS
    groups: str (N,), patient or group id, "" where the source gives none
    paths:  str (N,), where each image came from (a file, or `file.npz:train[12]`)
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray
    paths: np.ndarray
    source: str
    aspect: str = "center-crop"        # how the images were made square: what a model trained on them must repeat
    given_split: np.ndarray | None = None  # the split the source itself gave ("" where none), for the record
    skipped: tuple[str, ...] = ()       # unreadable files skipped with --skip-bad
    ignored: int = 0                    # non-image files found beside the images and left out
    notes: tuple[str, ...] = field(default=())  # decisions taken while loading, shown by `data info`
    leak: dict | None = None            # the leak guard's finding on the given splits and what was done (leaks.py)

    def __post_init__(self):
        n = len(self.images)
        for name in ("labels", "split", "groups", "paths", "given_split"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"ImageSet.{name} has {len(getattr(self, name))} rows, images has {n}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def select(self, mask: np.ndarray) -> "ImageSet":
        return replace(self, images=self.images[mask], labels=self.labels[mask], split=self.split[mask],
                       groups=self.groups[mask], paths=self.paths[mask],
                       given_split=None if self.given_split is None else self.given_split[mask])

    def subset(self, split: str) -> "ImageSet":
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.select(self.split == split)

    def without_test(self) -> "ImageSet":
        """The train and val rows only: what every stage before the final evaluation receives."""
        return self.select(self.split != "test")

    def counts(self, given: bool = False) -> dict[str, list[int]]:
        """Images per class for each split: {split: [n_class0, n_class1, ...]}; `given`: the source's own splits."""
        split = self.given_split if given else self.split
        return {s: np.bincount(self.labels[split == s], minlength=self.n_classes).astype(int).tolist()
                for s in SPLITS}


def top_up_to_majority(counts) -> np.ndarray:
    """Images per class that bring every class up to the largest class's count (a balancing top-up)."""
    counts = np.asarray(counts)
    return counts.max() - counts
