"""Unlabelled images: a pool of images without labels, and the one check that a pool holds no val or test image.

A pool is a folder of images (any layout, every image file under it) or an .npz (every array whose key ends in
`images`); labels an .npz may carry are never read, so nothing downstream can see them. In a learning-curve study
the pool `rest` is the train images outside a point's subset, stripped of their labels: the rows of the positive
control's pool. A pool never holds a val or test image: `check_no_held_out` refuses one that does, by content
(pixel-identical, or a near-copy by the leak guard's detector, data/nearcopy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.data import nearcopy
from medsyn.data.dataset import ImageSet
from medsyn.data.images import BadImage, is_image_file, load_image, resize_square, to_channels, to_uint8
from medsyn.data.info import pixel_digest
from medsyn.errors import MedsynError
from medsyn.fileio import check_npz_budget, open_npz, read_npz_member

REST = "rest"  # --unlabelled rest: a learning-curve point's train images outside its subset, without labels


@dataclass(frozen=True)
class UnlabelledPool:
    """Images without labels, aligned on the first axis. images: uint8 (N, H, W, C)."""
    images: np.ndarray
    paths: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class PseudoLabelled:
    """Pool images given labels by a classifier, and how (the classify stage makes them: classify.pseudo_label).
    record: source, n_pool, kept_per_class, thresholds, rule, labeller."""
    images: ImageSet
    record: dict


def load_unlabelled(src: str | Path, size: int, channels: int, aspect: str) -> UnlabelledPool:
    """The pool at `src` (a folder or an .npz), made square at `size` with `aspect` and `channels`, as the labelled
    data is loaded."""
    path = Path(src).expanduser()
    if path.is_dir():
        images, paths = _read_folder(path)
    elif path.is_file() and path.suffix.lower() == ".npz":
        images, paths = _read_npz(path)
    else:
        raise MedsynError(f"--unlabelled {src}: give a folder of images, an .npz (its labels, if any, are ignored), "
                          f"or `{REST}` (a learning curve's train images outside each subset).")
    if not images:
        raise MedsynError(f"--unlabelled {src}: holds no images.")
    squared = np.stack([to_channels(resize_square(image, size, aspect), channels) for image in images])
    return UnlabelledPool(squared, np.array(paths), str(path))


def rest_of_train(dataset: ImageSet, kept: np.ndarray) -> UnlabelledPool:
    """The train rows of `dataset` outside `kept` (a learning-curve point's rows), without their labels: the rows
    of the positive control's pool (splits.heldout_train_rows, which leaves out any whose pixels stand in val or
    test)."""
    from medsyn.data.splits import heldout_train_rows

    rows = heldout_train_rows(dataset.images, dataset.split, kept)
    return UnlabelledPool(dataset.images[rows], dataset.paths[rows],
                          f"{REST}: {dataset.source} train images outside the subset, labels dropped")


def check_no_held_out(pool: UnlabelledPool, dataset: ImageSet) -> None:
    """Refuse a pool that holds a val or test image of `dataset`: pixel-identical, or a near-copy (resized,
    re-encoded, shifted, mirrored ...) by the leak guard's detector and threshold."""
    held = dataset.select(dataset.split != "train")
    if not len(pool) or not len(held):
        return
    digests = {pixel_digest(image): i for i, image in enumerate(held.images)}
    copies = {p: digests[d] for p, d in enumerate(pixel_digest(image) for image in pool.images) if d in digests}
    found = nearcopy.best_matches(nearcopy.thumbnails(pool.images), nearcopy.thumbnails(held.images), candidates=1)
    for p in np.flatnonzero(found.best > nearcopy.SAME_IMAGE_CORRELATION):
        copies.setdefault(int(p), int(found.best_index[p]))
    if copies:
        examples = "\n  ".join(f"{pool.paths[p]}  ~  {held.paths[h]} ({held.split[h]})"
                               for p, h in list(copies.items())[:6])
        raise MedsynError(f"the unlabelled pool {pool.source} holds {len(copies)} image(s) that are val or test images "
                          f"of {dataset.source} (pixel-identical or near-copies, correlation above "
                          f"{nearcopy.SAME_IMAGE_CORRELATION:g}), so the generator or the pseudo-labelled arm would "
                          f"learn from images they are judged on. For example:\n  {examples}\nRemove them from the "
                          "pool.")


def _read_folder(root: Path) -> tuple[list[np.ndarray], list[str]]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    images, bad = [], []
    for path in files:
        try:
            images.append(load_image(path))
        except BadImage as err:
            bad.append(f"{path}: {err}")
    if bad:
        raise MedsynError(f"--unlabelled {root}: {len(bad)} image(s) cannot be used:\n  " + "\n  ".join(bad[:10]) +
                          "\nfix or remove them.")
    return images, [str(p) for p in files]


def _read_npz(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Every `*images` array of the file; any other array (labels included) is never read."""
    where, fix = f"--unlabelled {path}", "save the images with numpy.savez(images=...)"
    with open_npz(path, where, fix) as archive:
        keys = sorted(k for k in archive.files if k.endswith("images"))
        if not keys:
            raise MedsynError(f"--unlabelled {path}: no array named `images` or `<split>_images` (it holds "
                              f"{', '.join(archive.files) or 'nothing'}).")
        check_npz_budget(archive, keys, where, fix)
        arrays = {k: read_npz_member(archive, k, where, fix) for k in keys}
    images, paths = [], []
    for key, array in arrays.items():
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3)):
            raise MedsynError(f"--unlabelled {path}: {key} has shape {array.shape}; give (N, H, W) or (N, H, W, C) "
                              "with C 1 or 3.")
        converted = to_uint8(array, f"{path}: {key}")
        images += [image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image for image in converted]
        paths += [f"{path.name}:{key}[{i}]" for i in range(len(array))]
    return images, paths
