"""Feature extractors for the audit, as a registry (as dgm-eval does): every audit number is given in each one.

    label-trained-cnn   a small CNN classifier trained with the labels on the real train split (early-stopped on
                        real val). Its penultimate layer gives features, its head gives label fidelity. It knows
                        the classes well and within-class realism poorly, and it was fit to the very images the
                        generator fit: its numbers mean something only inside this run.
    random-cnn          the same architecture, wider, randomly initialised with a fixed seed and never trained:
                        it saw neither these images nor their labels (random embeddings are a sound baseline for
                        domains far from ImageNet; Naeem et al. 2020).
    inception-v3        torch-fidelity's FID Inception-v3, when its weights file is on disk (the torch hub cache or
                        --inception-weights). Never downloaded.

The label-trained CNN is cached under $MEDSYN_CACHE/audit-encoders/, keyed by the content of the real train+val
split, the encoder settings and the seed, so audits of different generators against the same data use the very
same features.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medsyn.config import MAX_SIZE, AuditConfig, resolve_device
from medsyn.data import ImageSet
from medsyn.data.cache import cache_root
from medsyn.errors import MedsynError
from medsyn.fileio import NUMBER, Field, atomic_path, load_tensors, read_json, tensors_buffer, write_json

ENCODER_VERSION = 2  # 2: initial weights drawn from the seed (1 drew them from whatever RNG state the process had)
ENCODER_FIELDS = ("encoder_width", "encoder_epochs", "encoder_patience", "encoder_batch_size", "encoder_lr",
                  "encoder_min_epoch_steps", "encoder_max_size", "seed")
ENCODER_META = {"name": Field(str, choices=("label-trained-cnn",)), "architecture": str, "trained_on": str,
                "source": str, "dims": Field(int, low=1), "input_size": Field(int, 1, MAX_SIZE),
                "epochs_run": Field(int, low=0), "best_epoch": Field(int, low=0), "val_loss": NUMBER,
                "val_accuracy": Field(NUMBER, 0, 1), "settings": dict, "cache": str}  # a cached encoder's meta.json
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's (and torchmetrics') FID Inception


@dataclass
class Extractor:
    """A named feature extractor: uint8 (N, H, W, C) images -> float64 (N, dims) features, and what it is."""

    name: str
    info: dict
    features: Callable[[np.ndarray], np.ndarray]


@dataclass
class DomainEncoder:
    """The trained network plus what a reader of the audit needs to know about it."""

    network: "object"  # EncoderNet (torch is imported lazily)
    input_size: int
    info: dict         # name, trained_on, dims, val accuracy, epochs, cache path


def _build_network(channels: int, n_classes: int, width: int):
    import torch.nn as nn

    class EncoderNet(nn.Module):
        def __init__(self):
            super().__init__()

            def block(c_in, c_out):
                return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

            self.body = nn.Sequential(*block(channels, width), *block(width, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(4 * width, n_classes)

        def forward(self, x):
            return self.head(self.body(x))

    return EncoderNet()


def _to_tensor(images: np.ndarray, size: int):
    """uint8 (N, H, W, C) -> float (N, C, size, size) in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _data_identity(real: ImageSet) -> str:
    """A content hash of what the encoder learns from: train and val images, labels and class names."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        part = real.subset(split)
        digest.update(split.encode())
        digest.update(np.ascontiguousarray(part.images).tobytes())
        digest.update(part.labels.astype(np.int64).tobytes())
    digest.update(json.dumps(list(real.class_names)).encode())
    return digest.hexdigest()


def encoder_cache_dir(real: ImageSet, config: AuditConfig) -> Path:
    settings = {name: getattr(config, name) for name in ENCODER_FIELDS}
    key = hashlib.sha256(json.dumps({"data": _data_identity(real), **settings, "v": ENCODER_VERSION},
                                    sort_keys=True).encode()).hexdigest()
    return cache_root() / "audit-encoders" / key[:16]


def label_trained_cnn(real: ImageSet, config: AuditConfig, log=print) -> DomainEncoder:
    """The cached label-trained CNN for this real dataset and config, trained on first use."""
    import torch

    folder = encoder_cache_dir(real, config)
    input_size = min(real.size, config.encoder_max_size)
    torch.manual_seed(config.seed)  # the initial weights: the same whatever this process drew before
    network = _build_network(real.channels, real.n_classes, config.encoder_width)
    if (folder / "encoder.pt").is_file() and (folder / "meta.json").is_file():
        fix = f"it is medsyn's cache, damaged or not written by medsyn: remove the folder {folder} (the encoder is " \
              "trained again)"
        info = read_json(folder / "meta.json", ENCODER_META, fix)
        state = load_tensors(folder / "encoder.pt", "cached audit encoder", f"{fix[0].upper()}{fix[1:]}.")
        try:
            network.load_state_dict(state)
        except RuntimeError as err:  # tensors of another network
            raise MedsynError(f"{folder / 'encoder.pt'}: not this encoder's weights ({str(err)[:120]}); {fix}.") \
                from None
        network.to(resolve_device(config.device))
        log(f"audit: reusing the label-trained CNN {folder}")
    else:
        info = _train(network, real, config, input_size, log)
        info["cache"] = str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "encoder.pt") as tmp:
            torch.save({k: v.cpu() for k, v in network.state_dict().items()}, tmp)
        write_json(folder / "meta.json", info)
    network.eval()
    return DomainEncoder(network=network, input_size=input_size, info=info)


def _train(network, real: ImageSet, config: AuditConfig, input_size: int, log) -> dict:
    import torch
    import torch.nn.functional as F

    train, val = real.subset("train"), real.subset("val")
    if len(train) == 0 or len(val) == 0:
        raise MedsynError(f"{real.source}: the audit's label-trained CNN needs real train and val images "
                          f"(found train {len(train)}, val {len(val)}); load the data with a val split (--val auto).")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    network.to(device)
    x_train, y_train = _to_tensor(train.images, input_size).to(device), torch.from_numpy(train.labels).to(device)
    x_val, y_val = _to_tensor(val.images, input_size), torch.from_numpy(val.labels).long()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.encoder_lr)
    best = (float("inf"), None, 0, 0.0)  # val loss, weights, epoch, val accuracy
    epochs_run = 0
    passes = -(-config.encoder_min_epoch_steps // -(-len(x_train) // config.encoder_batch_size))
    for epoch in range(config.encoder_epochs):
        network.train()
        order = torch.cat([torch.randperm(len(x_train), generator=generator) for _ in range(passes)])
        for start in range(0, len(order), config.encoder_batch_size):
            batch = order[start:start + config.encoder_batch_size].to(device)
            loss = F.cross_entropy(network(x_train[batch]), y_train[batch].long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epochs_run = epoch + 1
        val_logits = _batched(network, x_val, config.encoder_batch_size, features=False)
        val_loss = float(F.cross_entropy(val_logits, y_val))
        val_acc = float((val_logits.argmax(1) == y_val).float().mean())
        log(f"audit: encoder epoch {epoch + 1}/{config.encoder_epochs} val loss {val_loss:.4f} acc {val_acc:.4f}")
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in network.state_dict().items()}, epoch + 1, val_acc)
        elif epoch + 1 - best[2] >= config.encoder_patience:
            break
    network.load_state_dict(best[1])
    return {"name": "label-trained-cnn", "architecture": f"4-block CNN, width {config.encoder_width}",
            "trained_on": f"real train split with its labels ({len(train)} images), early-stopped on real val "
                          f"({len(val)} images)",
            "source": real.source, "dims": 4 * config.encoder_width, "input_size": input_size,
            "epochs_run": epochs_run, "best_epoch": best[2], "val_loss": round(best[0], 6),
            "val_accuracy": round(best[3], 6), "settings": {k: getattr(config, k) for k in ENCODER_FIELDS}}


def _batched(network, x, batch_size: int, features: bool):
    import torch

    device = next(network.parameters()).device
    with torch.no_grad():
        network.eval()
        part = network.body if features else network
        return torch.cat([part(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]) if len(x) else \
            torch.zeros((0, network.head.in_features if features else network.head.out_features))


def encode(encoder: DomainEncoder, images: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (N, dims), predicted class probabilities (N, n_classes)) of uint8 (N, H, W, C) images."""
    import torch

    features = _batched(encoder.network, _to_tensor(images, encoder.input_size), batch_size, features=True)
    with torch.no_grad():
        head = encoder.network.head
        probs = torch.softmax(head(features.to(head.weight.device)), dim=1).cpu()
    return features.double().numpy(), probs.double().numpy()


# --- the registry ----------------------------------------------------------------------------------------------

def random_cnn(real: ImageSet, config: AuditConfig) -> Extractor:
    """The label-trained CNN's architecture at `random_cnn_width`, randomly initialised and never trained."""
    import torch

    torch.manual_seed(config.seed)
    network = _build_network(real.channels, real.n_classes, config.random_cnn_width).eval()
    network.to(resolve_device(config.device))
    encoder = DomainEncoder(network, min(real.size, config.encoder_max_size), {})
    # Untrained layers shrink activations, so FID/KID would read ~0 in raw units: scale the features to unit mean
    # per-dimension spread on (up to 1000) real train images, a fixed factor for a given dataset.
    train = real.subset("train").images[:1000]
    scale = 1.0 / float(encode(encoder, train)[0].std(0).mean())
    info = {"name": "random-cnn", "architecture": f"4-block CNN, width {config.random_cnn_width}",
            "trained_on": f"nothing: random initialisation (seed {config.seed}); never saw these images or labels",
            "dims": 4 * config.random_cnn_width, "input_size": encoder.input_size, "feature_scale": scale}
    return Extractor("random-cnn", info, lambda images: encode(encoder, images)[0] * scale)


def inception(config: AuditConfig, log) -> Extractor | None:
    """torch-fidelity's FID Inception-v3 when its weights file is on disk; None (and a logged note) otherwise."""
    weights, note = inception_weights_path(config)
    log(f"audit: {note}")
    if weights is None:
        return None
    model = _load_inception(weights)
    info = {"name": "inception-v3", "trained_on": "ImageNet photos (torch-fidelity's FID weights)", "dims": 2048,
            "weights": str(weights)}
    return Extractor("inception-v3", info, lambda images: inception_features(images, model))


def extractors(real: ImageSet, config: AuditConfig, classifier: DomainEncoder, log=print) -> list[Extractor]:
    """The extractors config.extractors names, in that order; inception-v3 only when its weights are on disk."""
    unknown = [name for name in config.extractors if name not in EXTRACTORS]
    if unknown:
        raise MedsynError(f"unknown feature extractor {', '.join(unknown)}; choose from {', '.join(EXTRACTORS)}.")
    chosen = []
    for name in config.extractors:
        if name == "label-trained-cnn":
            chosen.append(Extractor(name, classifier.info, lambda images: encode(classifier, images)[0]))
        elif name == "random-cnn":
            chosen.append(random_cnn(real, config))
        elif (found := inception(config, log)) is not None:
            chosen.append(found)
    return chosen


EXTRACTORS = ("label-trained-cnn", "random-cnn", "inception-v3")


# --- Inception-v3 (optional) ---------------------------------------------------------------------------------------

def inception_weights_path(config: AuditConfig) -> tuple[Path | None, str]:
    """The local Inception-v3 weights and a message saying where they were (or were not) found. Never downloads."""
    import torch

    if config.inception == "off":
        return None, "Inception-v3 features are off in this config (inception='off')."
    if config.inception_weights:
        path = Path(config.inception_weights).expanduser()
        if not path.is_file():
            raise MedsynError(f"--inception-weights {path}: no such file; give torch-fidelity's {INCEPTION_FILE}.")
        return path, f"Inception-v3 weights from {path}"
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if path.is_file():
        return path, f"Inception-v3 weights from the torch hub cache {path}"
    return None, (f"Inception-v3 weights not found at {path}: the audit goes without it. To add "
                  f"Inception features, put torch-fidelity's {INCEPTION_FILE} there or pass --inception-weights.")


def _load_inception(weights: Path):
    """torch-fidelity's Inception-v3 from a local file, which must hold only tensors: it is loaded with
    weights_only=True and torch-fidelity (which loads with weights_only=False) gets an in-memory copy made from
    those tensors, never the user's file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = load_tensors(weights, "Inception-v3 weights")  # torch-fidelity itself would unpickle the file
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=tensors_buffer(state))
    except RuntimeError as err:
        raise MedsynError(f"{weights}: not torch-fidelity's Inception-v3 weights ({str(err)[:160]}); give "
                          f"{INCEPTION_FILE}.") from err
    return model


def inception_features(images: np.ndarray, model, batch_size: int = 64) -> np.ndarray:
    """2048-d pool features of torch-fidelity's FID Inception-v3 (gray images repeated to RGB; resized inside)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]).double().numpy()
