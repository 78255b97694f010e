"""Images as network inputs: the one place uint8 images become float tensors, and networks run over many images.

A normalisation is a dict {"scale", "mean", "std"}: pixel / scale, then (x - mean) / std per channel (a list with
one value per channel, or one value for all). The classifiers store theirs in model.pt; the audit's CNNs and the
generators name their own ranges.

    normalize(uint8 (N, C, H, W) tensor, norm) -> float tensor, on the images' device
    to_tensor(uint8 (N, H, W, C) array, norm) -> float (N, C, H, W) tensor
    infer(network, uint8 (N, H, W, C) array, norm, batch_size, call) -> the outputs, float, on the CPU
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import nn


def normalize(images: torch.Tensor, norm: dict) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float: scaled by 1 / norm["scale"], then (x - mean) / std per channel."""
    mean = _per_channel(tuple(norm["mean"]), images.device)
    std = _per_channel(tuple(norm["std"]), images.device)
    return (images.float() / norm["scale"] - mean) / std


@functools.lru_cache(maxsize=32)
def _per_channel(values: tuple, device: torch.device) -> torch.Tensor:
    """(1, C, 1, 1), made once per device: a copy to a GPU at every training step would wait for the GPU."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1)


def channels_first(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) array -> uint8 (N, C, H, W) tensor (a view of the array's memory when it can be)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def to_tensor(images: np.ndarray, norm: dict) -> torch.Tensor:
    """uint8 (N, H, W, C) array -> normalised float (N, C, H, W) tensor."""
    return normalize(channels_first(images), norm)


def infer(network: nn.Module, images: np.ndarray, norm: dict | None, batch_size: int,
          call: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda network, x: network(x)) -> torch.Tensor:
    """`call(network, batch)` over uint8 (N, H, W, C) `images` in batches of `batch_size`, in eval mode, without
    gradients, on the network's device; the outputs as one float tensor on the CPU. Each batch is normalised by
    `norm` (None: handed over as uint8 (N, C, H, W), for a network that scales its input itself). No images give
    one empty batch, so the result still has the output's shape."""
    network.eval()
    device = next(network.parameters()).device
    prepare = channels_first if norm is None else lambda part: to_tensor(part, norm)
    with torch.no_grad():
        return torch.cat([call(network, prepare(images[i:i + batch_size]).to(device)).float().cpu()
                          for i in range(0, max(len(images), 1), batch_size)])
