"""Figures for the report, each computed from the run's files and returned as a PNG data URI."""

from __future__ import annotations

import base64
import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def array_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.squeeze() if image.ndim == 3 and image.shape[2] == 1 else image).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_uri(path) -> str:
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode()


def class_grid(images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """One row per class of `per_class` randomly chosen images (uint8 NHWC in, uint8 HWC out)."""
    from medsyn.generators import image_grid

    rng = np.random.default_rng(seed)
    blank = np.zeros_like(images[:1])
    rows = []
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        chosen = images[rng.choice(members, size=min(per_class, len(members)), replace=False)]
        rows.append(np.concatenate([chosen] + [blank] * (per_class - len(chosen))))
    return image_grid(np.concatenate(rows), rows=n_classes)


def loss_curves(rows: list[dict], title: str) -> str:
    plt = _pyplot()
    keys = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
    fig, ax = plt.subplots(figsize=(6, 3))
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    for key in keys:
        ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key, linewidth=1)
    ax.set_xlabel("generator step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return figure_uri(fig)


def forest_plot(rows: list[tuple[str, float, float, float]], metric: str, reference: str) -> str:
    """rows: (arm, difference, ci_low, ci_high) of arm minus reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1))
    for i, (label, estimate, low, high) in enumerate(rows):
        colour = "tab:green" if low > 0 else "tab:red" if high < 0 else "tab:gray"
        ax.errorbar(estimate, i, xerr=[[estimate - low], [high - estimate]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} difference vs {reference} (test split, 95% CI over replicates and test sampling)")
    return figure_uri(fig)


def learning_curves(curve: list[dict], metric: str) -> str:
    """Test metric (mean over replicates, 95% CI) against the number of labelled images (train + val), one line per
    arm, drawn where it ran (the positive control has no point at the full size)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in dict.fromkeys(a for p in curve for a in p["arms"]):
        sizes = np.array([p["n_labelled"] for p in curve if arm in p["arms"]])
        stats = [p["arms"][arm][metric] for p in curve if arm in p["arms"]]
        mean = np.array([s["mean"] for s in stats], dtype=float)
        low = np.array([s["ci_low"] for s in stats], dtype=float)
        high = np.array([s["ci_high"] for s in stats], dtype=float)
        ax.errorbar(sizes, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, linewidth=1, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("labelled images, train + val (log scale)")
    ax.set_ylabel(f"test {metric} (mean over replicates, 95% CI)")
    ax.legend(fontsize=7)
    return figure_uri(fig)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for arm, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, linewidth=1, label=f"{arm} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return figure_uri(fig)


def confusion_matrices(matrices: dict[str, np.ndarray], class_names: list[str], title: str) -> str:
    plt = _pyplot()
    n = len(matrices)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (arm, matrix) in zip(axes.ravel(), matrices.items()):
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                    color="white" if value > matrix.max() / 2 else "black")
        ax.set_title(arm, fontsize=8)
        ax.set_xticks(range(len(class_names)), class_names, fontsize=6, rotation=30)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_uri(fig)
