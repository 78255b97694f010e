"""Memorization: is a synthetic image a copy of a patient's training image?

For every synthetic image, the nearest real TRAINING image in pixel space (RMS intensity difference on a 0..1
scale) and in the domain encoder's feature space. The yardstick is what genuinely new images give: the distance of
every real TEST image to its nearest training image. A synthetic image is a near-copy when its pixel distance is
below the `near_copy_percentile`-th percentile of those test distances (by default the 1st: only 1 in 100 new
real images comes that close to a training image), or below `near_copy_min_distance` (0.01, about 2.5 grey levels:
an exact copy, whatever the data's own duplicates do to the percentile).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Neighbours:
    """Nearest training image of each query row: distance and index, in pixel and in feature space."""

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


def neighbours(query_pixels: np.ndarray, query_features: np.ndarray, train_pixels: np.ndarray,
               train_features: np.ndarray) -> Neighbours:
    pixel_distance, pixel_index = nearest(query_pixels, train_pixels)
    feature_distance, feature_index = nearest(query_features, train_features)
    rms = np.sqrt(query_pixels.shape[1])  # L2 over D pixels -> RMS difference per pixel
    return Neighbours(pixel_distance / rms, pixel_index, feature_distance, feature_index)


def _distribution(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "p1": float(np.percentile(values, 1)), "p5": float(np.percentile(values, 5)),
            "median": float(np.median(values))}


def summarize(synthetic: Neighbours, baseline: Neighbours, synthetic_labels: np.ndarray, class_names,
              percentile: float, min_distance: float) -> tuple[dict, np.ndarray]:
    """The memorization summary and the near-copy flag of every checked synthetic image."""
    pixel_threshold = max(float(np.percentile(baseline.pixel_distance, percentile)), min_distance)
    feature_threshold = float(np.percentile(baseline.feature_distance, percentile))
    near_copy = synthetic.pixel_distance < pixel_threshold
    per_class = {}
    for label, name in enumerate(class_names):
        mine = synthetic_labels == label
        per_class[name] = {"n_checked": int(mine.sum()), "near_copies": int(near_copy[mine].sum()),
                           "near_copy_share": float(near_copy[mine].mean()) if mine.any() else None}
    summary = {
        "n_checked": int(len(near_copy)),
        "n_baseline": int(len(baseline.pixel_distance)),
        "near_copies": int(near_copy.sum()),
        "near_copy_share": float(near_copy.mean()),
        # What genuinely new real images give under the same rule: the share to compare near_copy_share with.
        "baseline_near_copy_share": float((baseline.pixel_distance < pixel_threshold).mean()),
        "threshold": {
            "pixel_rms": pixel_threshold,
            "rule": f"pixel-space RMS distance (0..1 scale) to the nearest real training image below the "
                    f"{percentile:g}th percentile of real-test-to-train nearest-neighbour distances, or below "
                    f"{min_distance:g}, whichever is larger",
            "test_percentile": percentile,
            "min_distance": min_distance,
        },
        "pixel": {"synthetic": _distribution(synthetic.pixel_distance),
                  "baseline_test": _distribution(baseline.pixel_distance),
                  "median_ratio": float(np.median(synthetic.pixel_distance) / np.median(baseline.pixel_distance))},
        "feature": {"synthetic": _distribution(synthetic.feature_distance),
                    "baseline_test": _distribution(baseline.feature_distance),
                    "median_ratio": float(np.median(synthetic.feature_distance)
                                          / np.median(baseline.feature_distance)),
                    "threshold": feature_threshold,
                    "below_threshold_share": float((synthetic.feature_distance < feature_threshold).mean()),
                    "baseline_below_threshold_share":
                        float((baseline.feature_distance < feature_threshold).mean())},
        "per_class": per_class,
    }
    return summary, near_copy


def gallery(path, synthetic_images: np.ndarray, train_images: np.ndarray, found: Neighbours, near_copy: np.ndarray,
            n_pairs: int, title: str) -> None:
    """PNG of the closest pairs in pixel space: each synthetic image beside its nearest real training image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsyn.fileio import atomic_path

    order = np.argsort(found.pixel_distance, kind="stable")[:n_pairs]
    columns = 4
    rows = max(1, -(-len(order) // columns))
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.3, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    gray = synthetic_images.shape[-1] == 1
    for slot, row in enumerate(order):
        r, c = divmod(slot, columns)
        pair = (synthetic_images[row], train_images[found.pixel_index[row]])
        for offset, (image, label) in enumerate(zip(pair, ("synthetic", "nearest train"))):
            ax = axes[r, 2 * c + offset]
            ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
            ax.set_title(label if offset else f"d={found.pixel_distance[row]:.3f}", fontsize=7,
                         color="red" if near_copy[row] and not offset else "black")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
