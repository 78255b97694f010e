"""Grad-CAM (Selvaraju et al., 2017) on a late convolution layer, with torch hooks, and a colour overlay.

The map says which regions raised the score of the target class; it is a picture of the model's attention,
not a localisation of disease.
"""

from __future__ import annotations

import numpy as np


MIN_SIDE = 7   # the map's layer: the last convolution whose output is at least 7 x 7 (VGG16 at 224 px: its last)


def grad_cam(model, inputs, target: int, min_side: int = MIN_SIDE) -> np.ndarray:
    """Heat-map (h, w) in [0, 1] for one input (1, C, H, W) and a class index, at the last Conv2d layer whose
    output is at least min_side pixels on each side (else the last one): small inputs such as 28 px would leave
    the very last layer of VGG16 at 2 x 2, too coarse to show anything.

    A model with one output (a sigmoid logit for class 1) scores class 0 by the negated logit.
    Hooks are added and removed here: callers sharing a model across threads must hold a lock.
    """
    import torch
    import torch.nn as nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional network; this model has no Conv2d layer")
    outputs = []   # in execution order
    handles = [c.register_forward_hook(lambda module, args, output: outputs.append(output)) for c in convs]
    try:
        with torch.enable_grad():
            x = inputs.detach().clone().requires_grad_(True)  # so the graph exists even for frozen weights
            logits = model(x)
            logits = logits.reshape(logits.shape[0], -1)
            score = logits[0, target] if logits.shape[1] > 1 else (logits[0, 0] if target == 1 else -logits[0, 0])
            large = [o for o in outputs if min(o.shape[-2:]) >= min_side]
            activations = large[-1] if large else outputs[-1]
            (gradients,) = torch.autograd.grad(score, activations)
    finally:
        for handle in handles:
            handle.remove()
    weights = gradients[0].mean(dim=(1, 2))                       # one weight per channel: pooled gradient
    cam = torch.relu((weights[:, None, None] * activations[0]).sum(dim=0)).detach().numpy()
    peak = float(cam.max())
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """An RGB uint8 picture: the image with the heat-map (upsampled, 'jet' colours) blended on top, more opaque
    where the map is hot, so regions that did not raise the score keep their own look."""
    from matplotlib import colormaps
    from PIL import Image

    gray = image if image.ndim == 2 else (image[..., 0] if image.shape[2] == 1 else None)
    rgb = np.repeat(gray[..., None], 3, axis=2) if gray is not None else image[..., :3]
    height, width = rgb.shape[:2]
    heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR))
    colours = colormaps["jet"](heat / 255.0)[..., :3] * 255.0
    weight = alpha * (heat[..., None] / 255.0)
    return np.clip((1 - weight) * rgb + weight * colours, 0, 255).astype(np.uint8)
