"""The classifiers: VGG16 and torchvision's ResNet18, adapted to any channel count, size and class count.

VGG16 follows the original design: the VGG16 convolutional stack (torchvision's config "D" and layer order, built
here so that using a VGG16 model never imports torchvision, about 160 MB; optionally with batch norm, channels
scaled by a width multiplier), global max pooling, and the head Dropout 0.4 / Dense 128 / BN /
LeakyReLU 0.2 / Dropout / Dense 32 / BN / LeakyReLU / Dropout / Dense(n_classes). Five 2x2 poolings need at least
32 px, so smaller inputs are upsampled to 32 inside the model. Every model is a `Classifier`: `embed` gives the
penultimate features, `head` maps them to logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsyn.errors import MedsynError
from medsyn.fileio import load_tensors
from medsyn.tensors import infer

ARCHS = ("vgg16", "resnet18")
MIN_INPUT = 32  # VGG16 halves the image five times; ResNet18 also needs 32 px to end at 1x1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")  # "D"


class Classifier(nn.Module):
    """`embed` (images -> penultimate features) then `head` (features -> logits); inputs under 32 px upsampled."""

    def __init__(self, embed: nn.Module, head: nn.Module):
        super().__init__()
        self.embed_net = embed
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < MIN_INPUT or x.shape[-2] < MIN_INPUT:
            x = F.interpolate(x, size=(max(MIN_INPUT, x.shape[-2]), max(MIN_INPUT, x.shape[-1])),
                              mode="bilinear", align_corners=False)
        return self.embed_net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def build(arch: str, n_classes: int, channels: int, width: float = 1.0, batch_norm: bool = True,
          dropout: float = 0.4, pretrained: bool = False) -> Classifier:
    """A fresh classifier; `pretrained` loads ImageNet weights from the torchvision cache (never downloads)."""
    if arch == "vgg16":
        return _vgg16(n_classes, channels, width, batch_norm, dropout, pretrained)
    if arch == "resnet18":
        return _resnet18(n_classes, channels, width, pretrained)
    raise MedsynError(f"unknown classifier {arch!r}; choose one of {', '.join(ARCHS)}.")


def normalization(pretrained: bool, channels: int) -> dict:
    """Per-channel mean/std applied to pixels scaled to [0, 1]: ImageNet's for pretrained weights, else fixed."""
    if pretrained:
        mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if channels == 3 else \
            ([sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3])
    else:
        mean, std = [0.5] * channels, [0.25] * channels
    return {"scale": 255.0, "mean": mean, "std": std}


def _vgg16(n_classes, channels, width, batch_norm, dropout, pretrained) -> Classifier:
    if width <= 0:
        raise MedsynError(f"--width {width}: the width multiplier must be positive (1.0 = the original VGG16).")
    if pretrained and width != 1.0:
        raise MedsynError(f"--pretrained needs --width 1: ImageNet weights exist only for the full VGG16, "
                          f"not for width {width:g}.")
    config = [v if v == "M" else max(1, round(v * width)) for v in VGG16_LAYERS]
    features = _vgg_stack(config, batch_norm)
    if pretrained:
        state = _cached_weights(*pretrained_weights("vgg16", batch_norm))
        features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    _set_input_channels(features, 0, channels, pretrained)
    last = config[-2]
    embed = nn.Sequential(
        features, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(last, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
        nn.Dropout(dropout), nn.Linear(128, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
    )
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(32, n_classes))
    return Classifier(embed, head)


def _vgg_stack(config: list, batch_norm: bool) -> nn.Sequential:
    """torchvision's `vgg.make_layers`, layer for layer (the same state-dict keys, the same initial draws)."""
    layers, in_channels = [], 3
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), *([nn.BatchNorm2d(v)] if batch_norm else []),
                   nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers)


def _resnet18(n_classes, channels, width, pretrained) -> Classifier:
    from torchvision import models

    if width != 1.0:
        raise MedsynError(f"resnet18 has no width multiplier (got --width {width:g}); pass --width 1.")
    net = models.resnet18(weights=None)
    if pretrained:
        net.load_state_dict(_cached_weights(*pretrained_weights("resnet18")))
    _set_input_channels(net, "conv1", channels, pretrained)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(net, nn.Linear(features, n_classes))


def _set_input_channels(parent: nn.Module, key, channels: int, pretrained: bool) -> None:
    """Swap the first conv for one taking `channels` inputs; for grayscale, pretrained RGB kernels are summed."""
    conv = parent[key] if isinstance(key, int) else getattr(parent, key)
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        if pretrained and channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    if isinstance(key, int):
        parent[key] = new
    else:
        setattr(parent, key, new)


def _cached_weights(weights, name: str) -> dict:
    """ImageNet weights from torchvision's cache only: a missing file is an error with the fix, never a download
    (a download without network would hang, and a run should not depend on the network)."""
    path = check_cached_weights(weights, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_tensors(path, f"ImageNet weights for {name}")


def pretrained_weights(arch: str, batch_norm: bool = True):
    """(torchvision weights enum, name) that --pretrained loads for `arch`."""
    from torchvision import models

    if arch == "resnet18":
        return models.ResNet18_Weights.IMAGENET1K_V1, "resnet18"
    return (models.VGG16_BN_Weights if batch_norm else models.VGG16_Weights).IMAGENET1K_V1, \
        "vgg16_bn" if batch_norm else "vgg16"


def check_cached_weights(weights, name: str) -> Path:
    """The cached weights file, or the MedsynError saying how to get it (checked before any folder is made)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise MedsynError(
            f"--pretrained: ImageNet weights for {name} are not in the torchvision cache ({path}); medsyn does not "
            f"download during a run. On a machine with internet run once: python -c \"import torchvision; "
            f"torchvision.models.{name}(weights='IMAGENET1K_V1')\" (or copy {path.name} there; TORCH_HOME moves "
            f"the cache), or leave out --pretrained to train from scratch.")
    return path


# --- using a trained model: checkpoints, and predictions with the training preprocessing (medsyn.tensors) ----

CHECKPOINT_FORMAT = "medsyn-classifier"
CHECKPOINT_VERSION = 1


def checkpoint(model: Classifier, meta: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def load_model(path) -> tuple[Classifier, dict]:
    """A classifier saved by training, in eval mode, and its metadata (everything in the file but the weights)."""
    saved = load_tensors(path, "classifier", "Train one with `medsyn classify train` (it writes model.pt).")
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise MedsynError(f"{path} is not a medsyn classifier checkpoint (no format '{CHECKPOINT_FORMAT}').")
    if saved.get("version") != CHECKPOINT_VERSION:
        raise MedsynError(f"{path} is classifier format version {saved.get('version')}; this medsyn reads "
                          f"version {CHECKPOINT_VERSION}.")
    meta = {k: v for k, v in saved.items() if k != "state_dict"}
    try:
        model = build(**meta["arch"], pretrained=False)
        model.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:  # a key missing, or weights of another shape
        raise MedsynError(f"{path}: its weights do not match the architecture it names ({type(err).__name__}: "
                          f"{str(err)[:160]}); the file is damaged or was edited: export it again.") from None
    return model.eval(), meta


def predict_proba(model: Classifier, meta: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, n_classes) for uint8 images shaped like the training images (N, H, W, C), on the
    model's device (a GPU run scores val and test on its GPU)."""
    logits = infer(model, _check_images(images, meta), meta["normalization"], batch_size)
    return torch.softmax(logits, dim=1).double().numpy()


def features(model: Classifier, meta: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer features (N, D): the input of the final linear layer."""
    return infer(model, _check_images(images, meta), meta["normalization"], batch_size,
                 lambda network, x: network.embed(x)).numpy()


def _check_images(images: np.ndarray, meta: dict) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3 and meta["channels"] == 1:
        images = images[..., None]
    expected = (meta["image_size"], meta["image_size"], meta["channels"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise MedsynError(f"the model takes uint8 images shaped (N, {', '.join(map(str, expected))}); got "
                          f"{images.dtype} {images.shape}. Resize/convert them as in training (medsyn.data.load "
                          f"with --size {meta['image_size']} --channels {meta['channels']}).")
    return images
