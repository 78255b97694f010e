"""From generator outputs to uint8 images, seeded sampling, and sample grids (one row per class)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medsyn.generators.families import FAMILIES
from medsyn.tensors import normalize

CHUNK = 256  # noise is drawn in fixed chunks, so the same seed gives the same images at any output count
OUTPUT_RANGES = {"tanh": {"scale": 127.5, "mean": [1.0], "std": [1.0]},     # pixels to [-1, 1]
                 "sigmoid": {"scale": 255.0, "mean": [0.0], "std": [1.0]}}  # pixels to [0, 1]


def to_model(images: torch.Tensor, normalization: str) -> torch.Tensor:
    """uint8 NCHW -> float in the generator's output range."""
    return normalize(images, OUTPUT_RANGES[normalization])


def to_uint8(x: torch.Tensor, normalization: str) -> np.ndarray:
    """Generator output NCHW -> uint8 NHWC."""
    x = (x.float() + 1) / 2 if normalization == "tanh" else x.float()
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(generator: nn.Module, info: dict, labels: np.ndarray, seed: int) -> np.ndarray:
    """Images (uint8 N, H, W, C) for `labels`, from noise seeded by `seed` (deterministic)."""
    module = FAMILIES[info["model"]].module
    device = next(generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(labels), CHUNK):
        y = torch.as_tensor(labels[start:start + CHUNK], dtype=torch.long, device=device)
        z = module.latent(len(y), info["latent_dim"], device, generator=noise)
        out.append(to_uint8(generator(z, y), info["normalization"]))
    size, channels = info["size"], info["channels"]
    return np.concatenate(out) if out else np.zeros((0, size, size, channels), np.uint8)


def grid(images: np.ndarray, rows: int, gap: int = 2) -> np.ndarray:
    """Tile N images row by row into `rows` rows, separated by `gap` black pixels: uint8 (H', W', C)."""
    n, h, w, c = images.shape
    cols = -(-n // rows)
    canvas = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = image
    return canvas


def class_grid(generator: nn.Module, info: dict, n_per_class: int, seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(len(info["class_names"])), n_per_class)
    return grid(generate(generator, info, labels, seed), rows=len(info["class_names"]))


def save_png(image: np.ndarray, path) -> None:
    from PIL import Image

    from medsyn.fileio import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
