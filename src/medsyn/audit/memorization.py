"""Memorization: is a synthetic image a copy of a patient's training image, perhaps moved, mirrored, zoomed, rotated,
blurred or with another gamma or contrast?

For every synthetic image, the training image it matches best by the one near-copy detector medsyn has
(`medsyn.data.nearcopy`, also the leak guard's): the highest normalised correlation of rank-equalised, lightly
blurred thumbnails over a left-right flip and a warp of zoom (a zoom-crop of up to 10%), rotation and shift, so a
copy scores about 0.999 whatever was done to it; normalising and rank-equalising also ignore brightness, contrast
and gamma. The yardstick is what genuinely new images give: the best correlation of every real VAL image (never
test, which only the final evaluation reads) with the training images. A synthetic image is a near-copy when its
best correlation is above the (100 - `near_copy_percentile`)-th percentile of the val correlations (by default the
99th: only 1 in 100 new real images matches a training image that well), or above `exact_copy_correlation`
(an exact copy). Val images that duplicate a training image (above `exact_copy_correlation`) are counted and left
out of the percentile: they are the data's own duplicates, not new images. The yardstick is the same for every
audit of one dataset: it is searched once and cached beside the label-trained CNN.

Also reported, as before: the nearest training image in raw pixel space (RMS difference on a 0..1 scale) and in
the label-trained CNN's feature space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.data import nearcopy
from medsyn.errors import MedsynError
from medsyn.fileio import atomic_path, open_npz, read_npz_member

@dataclass
class Neighbours:
    """Per query row: the best shift/flip-tolerant match, and the nearest training image in pixels and features."""

    correlation: np.ndarray        # best normalised correlation over flips and warps (medsyn.data.nearcopy)
    correlation_index: np.ndarray  # the training image it came from
    transform: list                # the warp that maps it back, e.g. "flip, zoom 1.050, rotate +3.0 deg, shift ..."
    pixel_distance: np.ndarray
    pixel_index: np.ndarray
    feature_distance: np.ndarray
    feature_index: np.ndarray


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, H*W*C) on a 0..1 scale."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def nearest(queries: np.ndarray, references: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance to, and index of, the nearest reference row of every query row."""
    import torch

    refs = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32))
    distances, indices = [], []
    for start in range(0, len(queries), batch_size):
        block = torch.from_numpy(np.ascontiguousarray(queries[start:start + batch_size], dtype=np.float32))
        d, i = torch.cdist(block, refs).min(dim=1)
        distances.append(d.double().numpy())
        indices.append(i.numpy())
    return np.concatenate(distances), np.concatenate(indices)


def best_matches(queries: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """For each query image, its best-matching training image by the near-copy detector: (correlation, training
    index, transform)."""
    found = nearcopy.best_matches(nearcopy.thumbnails(queries), nearcopy.thumbnails(train))
    return found.best, found.best_index, found.transform


def neighbours(query_images: np.ndarray, query_features: np.ndarray, train_images: np.ndarray,
               train_features: np.ndarray) -> Neighbours:
    correlation, correlation_index, transform = best_matches(query_images, train_images)
    query_pixels, train_pixels = pixels(query_images), pixels(train_images)
    pixel_distance, pixel_index = nearest(query_pixels, train_pixels)
    feature_distance, feature_index = nearest(query_features, train_features)
    rms = np.sqrt(query_pixels.shape[1])  # L2 over D pixels -> RMS difference per pixel
    return Neighbours(correlation, correlation_index, transform, pixel_distance / rms, pixel_index,
                      feature_distance, feature_index)


BASELINE_FILE = "memorization-baseline-v{version}.npz"
NEIGHBOUR_ARRAYS = ("correlation", "correlation_index", "transform", "pixel_distance", "pixel_index",
                    "feature_distance", "feature_index")


def cached_baseline(folder: Path, val_images: np.ndarray, val_features: np.ndarray, train_images: np.ndarray,
                    train_features: np.ndarray) -> Neighbours:
    """The val images' neighbours among the training images: the same for every audit of one dataset, so kept in
    `folder` (the label-trained CNN's cache folder, keyed by the train and val content and the encoder's settings)
    and searched once per dataset and detector version."""
    path = Path(folder) / BASELINE_FILE.format(version=nearcopy.DETECTOR_VERSION)
    if path.is_file():
        return _read_neighbours(path, len(val_images), len(train_images))
    found = neighbours(val_images, val_features, train_images, train_features)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{name: np.asarray(getattr(found, name)) for name in NEIGHBOUR_ARRAYS})
    return found


def _read_neighbours(path: Path, n_queries: int, n_references: int) -> Neighbours:
    fix = f"it is medsyn's cache, damaged or not written by medsyn: remove the file {path} (the search runs again)"
    with open_npz(path, str(path), fix) as archive:
        arrays = {name: read_npz_member(archive, name, str(path), fix) for name in NEIGHBOUR_ARRAYS}
    indices = [arrays[name] for name in NEIGHBOUR_ARRAYS if name.endswith("_index")]
    if any(a.shape != (n_queries,) for a in arrays.values()) or \
            any(i.dtype.kind not in "iu" or (n_queries and not 0 <= i.min() <= i.max() < n_references) for i in indices):
        raise MedsynError(f"{path}: not the neighbours of {n_queries} val images among {n_references} training "
                          f"images; {fix}.")
    arrays["transform"] = arrays["transform"].tolist()
    return Neighbours(**arrays)


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None where b is 0 (every val image duplicates a training image): no NaN in a JSON file."""
    return float(a / b) if b else None


def _distribution(values: np.ndarray, high: bool = False) -> dict:
    """The tail that matters: the closest matches (lowest distances, or highest correlations when `high`)."""
    if high:
        return {"max": float(values.max()), "p99": float(np.percentile(values, 99)),
                "p95": float(np.percentile(values, 95)), "median": float(np.median(values))}
    return {"min": float(values.min()), "p1": float(np.percentile(values, 1)), "p5": float(np.percentile(values, 5)),
            "median": float(np.median(values))}


def summarize(synthetic: Neighbours, baseline: Neighbours, synthetic_labels: np.ndarray, class_names,
              percentile: float, exact_copy_correlation: float) -> tuple[dict, np.ndarray]:
    """The memorization summary and the near-copy flag of every checked synthetic image."""
    # Real datasets hold duplicates across splits (PneumoniaMNIST: about 1.5% of val repeats a training image);
    # they say nothing about how close a genuinely new image comes, so they are counted and left out of the yardstick.
    duplicate = baseline.correlation > exact_copy_correlation
    new_images = baseline.correlation[~duplicate]
    threshold = min(float(np.percentile(new_images, 100 - percentile)), exact_copy_correlation)
    near_copy = synthetic.correlation > threshold
    per_class = {}
    for label, name in enumerate(class_names):
        mine = synthetic_labels == label
        per_class[name] = {"n_checked": int(mine.sum()), "near_copies": int(near_copy[mine].sum()),
                           "near_copy_share": float(near_copy[mine].mean()) if mine.any() else None}
    summary = {
        "n_checked": int(len(near_copy)),
        "n_baseline": int(len(baseline.correlation)),
        "baseline_split": "val",
        "near_copies": int(near_copy.sum()),
        "near_copy_share": float(near_copy.mean()),
        # What genuinely new real images give under the same rule: the share to compare near_copy_share with.
        "baseline_near_copy_share": float((new_images > threshold).mean()),
        "baseline_duplicates_of_train": int(duplicate.sum()),
        "threshold": {
            "correlation": threshold,
            "rule": f"best normalised correlation with a real training image (medsyn.data.nearcopy: aspect-free "
                    f"rank-equalised thumbnails, over a left-right flip, zoom, rotation and shift), above the {100 - percentile:g}th percentile of the same for real val "
                    f"images (less val images that duplicate a training image), or above {exact_copy_correlation:g}, whichever is lower",
            "val_percentile": 100 - percentile,
            "exact_copy_correlation": exact_copy_correlation,
        },
        "correlation": {"synthetic": _distribution(synthetic.correlation, high=True),
                        "baseline_val": _distribution(baseline.correlation, high=True)},
        "pixel": {"synthetic": _distribution(synthetic.pixel_distance),
                  "baseline_val": _distribution(baseline.pixel_distance),
                  "median_ratio": _ratio(np.median(synthetic.pixel_distance), np.median(baseline.pixel_distance))},
        "feature": {"synthetic": _distribution(synthetic.feature_distance),
                    "baseline_val": _distribution(baseline.feature_distance),
                    "median_ratio": _ratio(np.median(synthetic.feature_distance),
                                           np.median(baseline.feature_distance))},
        "per_class": per_class,
    }
    return summary, near_copy


def gallery(path, synthetic_images: np.ndarray, train_images: np.ndarray, found: Neighbours, near_copy: np.ndarray,
            n_pairs: int, title: str) -> None:
    """PNG of the best matches: each synthetic image beside the training image it correlates with best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsyn.fileio import atomic_path

    order = np.argsort(-found.correlation, kind="stable")[:n_pairs]
    columns = 4
    rows = max(1, -(-len(order) // columns))
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.3, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    gray = synthetic_images.shape[-1] == 1
    for slot, row in enumerate(order):
        r, c = divmod(slot, columns)
        pair = (synthetic_images[row], train_images[found.correlation_index[row]])
        for offset, image in enumerate(pair):
            ax = axes[r, 2 * c + offset]
            ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
            ax.set_title(found.transform[row] if offset else f"r={found.correlation[row]:.3f}", fontsize=6,
                         color="red" if near_copy[row] and not offset else "black")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
