"""Feature extractors for the audit, as a registry (as dgm-eval does; the EXTRACTORS table): every audit number is
given in each one.

    label-trained-cnn   a small CNN classifier trained with the labels on the real train split by the classifier's
                        own loop (medsyn.classify.train.fit, as the `real` arm is trained: early-stopped on real
                        val). Its penultimate layer gives features, its head gives label fidelity. It knows
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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medsyn.config import MAX_SIZE, AuditConfig, ClassifyConfig, resolve_device
from medsyn.data import ImageSet
from medsyn.data.cache import cache_root
from medsyn.errors import MedsynError
from medsyn.fileio import NUMBER, Field, atomic_path, load_tensors, read_json, tensors_buffer, write_json

LOG = logging.getLogger(__name__)
ENCODER_VERSION = 3  # 3: trained by the classifier's loop (classify.train.fit); 2: its own loop, seeded weights
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
    """A CNN of `_build_network` (label-trained or random), how its input pixels are normalised, and what a reader
    of the audit needs to know about it."""

    network: "object"  # EncoderNet (torch is imported lazily)
    norm: dict         # medsyn.tensors normalisation
    info: dict         # name, trained_on, dims, val accuracy, epochs, cache path


def encoder_norm(channels: int) -> dict:
    """Pixels 0..255 to -1..1 (medsyn.tensors normalisation)."""
    return {"scale": 127.5, "mean": [1.0] * channels, "std": [1.0] * channels}


def _input_size(real: ImageSet, config: AuditConfig) -> int:
    return min(real.size, config.encoder_max_size)


def _build_network(channels: int, n_classes: int, width: int, input_size: int):
    import torch.nn as nn
    import torch.nn.functional as F

    class EncoderNet(nn.Module):
        """Four conv blocks and global average pooling (`embed`: the features), then a linear `head` (the logits);
        images of another size than `input_size` are resized to it first."""

        def __init__(self):
            super().__init__()

            def block(c_in, c_out):
                return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

            self.body = nn.Sequential(*block(channels, width), *block(width, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(4 * width, n_classes)

        def embed(self, x):
            if x.shape[-1] != input_size:
                x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True,
                                  align_corners=False)
            return self.body(x)

        def forward(self, x):
            return self.head(self.embed(x))

    return EncoderNet()


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


def label_trained_cnn(real: ImageSet, config: AuditConfig) -> DomainEncoder:
    """The cached label-trained CNN for this real dataset and config, trained on first use."""
    import torch

    folder = encoder_cache_dir(real, config)
    norm = encoder_norm(real.channels)
    if (folder / "encoder.pt").is_file() and (folder / "meta.json").is_file():
        network = _build_network(real.channels, real.n_classes, config.encoder_width, _input_size(real, config))
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
        LOG.info(f"audit: reusing the label-trained CNN {folder}")
    else:
        network, info = _train(real, config, norm)
        info["cache"] = str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "encoder.pt") as tmp:
            torch.save({k: v.cpu() for k, v in network.state_dict().items()}, tmp)
        write_json(folder / "meta.json", info)
    network.eval()
    return DomainEncoder(network=network, norm=norm, info=info)


def _train(real: ImageSet, config: AuditConfig, norm: dict) -> tuple[object, dict]:
    """The CNN trained by the classifier's loop as the `real` arm trains: the real train split, seeded batches,
    the epoch with the lowest real-val loss kept."""
    from medsyn.classify.arms import parse_arm, training_data
    from medsyn.classify.train import Network, fit

    train, val = real.subset("train"), real.subset("val")
    if len(train) == 0 or len(val) == 0:
        raise MedsynError(f"{real.source}: the audit's label-trained CNN needs real train and val images "
                          f"(found train {len(train)}, val {len(val)}); load the data with a val split (--val auto).")
    input_size = _input_size(real, config)
    network = Network(lambda: _build_network(real.channels, real.n_classes, config.encoder_width, input_size), norm)
    LOG.info(f"audit: training the label-trained CNN on {len(train)} real train images")
    fitted = fit(training_data(parse_arm("real"), train, None, config.seed), val, real.n_classes,
                 _loop_settings(config), config.seed, network=network)
    _, val_probs = encode(DomainEncoder(fitted.model, norm, {}), val.images)
    return fitted.model, {
        "name": "label-trained-cnn", "architecture": f"4-block CNN, width {config.encoder_width}",
        "trained_on": f"real train split with its labels ({len(train)} images), early-stopped on real val "
                      f"({len(val)} images), by the classifier's training loop",
        "source": real.source, "dims": 4 * config.encoder_width, "input_size": input_size,
        "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch,
        "val_loss": fitted.history[fitted.best_epoch - 1]["val_loss"],
        "val_accuracy": round(float((val_probs.argmax(1) == val.labels).mean()), 6),
        "settings": {k: getattr(config, k) for k in ENCODER_FIELDS}}


def _loop_settings(config: AuditConfig) -> ClassifyConfig:
    """The classifier loop's settings for the encoder: the audit's encoder_* fields; plain Adam on an unweighted
    loss, no weight average, float32 (its features feed every audit number), torch's threads left as they are."""
    return ClassifyConfig(epochs=config.encoder_epochs, patience=config.encoder_patience,
                          batch_size=config.encoder_batch_size, lr=config.encoder_lr,
                          min_epoch_steps=config.encoder_min_epoch_steps, device=config.device, amp=False, threads=0)


def encode(encoder: DomainEncoder, images: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (N, dims), predicted class probabilities (N, n_classes)) of uint8 (N, H, W, C) images."""
    import torch

    from medsyn.tensors import infer

    features = infer(encoder.network, images, encoder.norm, batch_size, lambda network, x: network.embed(x))
    with torch.no_grad():
        head = encoder.network.head
        probs = torch.softmax(head(features.to(head.weight.device)), dim=1).cpu()
    return features.double().numpy(), probs.double().numpy()


# --- the registry ----------------------------------------------------------------------------------------------

def random_cnn(real: ImageSet, config: AuditConfig) -> Extractor:
    """The label-trained CNN's architecture at `random_cnn_width`, randomly initialised and never trained."""
    import torch

    torch.manual_seed(config.seed)
    input_size = _input_size(real, config)
    network = _build_network(real.channels, real.n_classes, config.random_cnn_width, input_size).eval()
    network.to(resolve_device(config.device))
    encoder = DomainEncoder(network, encoder_norm(real.channels), {})
    # Untrained layers shrink activations, so FID/KID would read ~0 in raw units: scale the features to unit mean
    # per-dimension spread on (up to 1000) real train images, a fixed factor for a given dataset.
    train = real.subset("train").images[:1000]
    scale = 1.0 / float(encode(encoder, train)[0].std(0).mean())
    info = {"name": "random-cnn", "architecture": f"4-block CNN, width {config.random_cnn_width}",
            "trained_on": f"nothing: random initialisation (seed {config.seed}); never saw these images or labels",
            "dims": 4 * config.random_cnn_width, "input_size": input_size, "feature_scale": scale}
    return Extractor("random-cnn", info, lambda images: encode(encoder, images)[0] * scale)


def inception(config: AuditConfig) -> Extractor | None:
    """torch-fidelity's FID Inception-v3 when its weights file is on disk; None (and a logged note) otherwise."""
    weights, note = inception_weights_path(config)
    LOG.info(f"audit: {note}")
    if weights is None:
        return None
    model = _load_inception(weights)
    info = {"name": "inception-v3", "trained_on": "ImageNet photos (torch-fidelity's FID weights)", "dims": 2048,
            "weights": str(weights)}
    return Extractor("inception-v3", info, lambda images: inception_features(images, model))


# name -> (real data, audit config, the label-trained CNN) -> the extractor, or None where it is unavailable here
EXTRACTORS: dict[str, Callable[[ImageSet, AuditConfig, DomainEncoder], Extractor | None]] = {
    "label-trained-cnn": lambda real, config, trained: Extractor(
        "label-trained-cnn", trained.info, lambda images: encode(trained, images)[0]),
    "random-cnn": lambda real, config, trained: random_cnn(real, config),
    "inception-v3": lambda real, config, trained: inception(config),
}


def extractors(real: ImageSet, config: AuditConfig, classifier: DomainEncoder) -> list[Extractor]:
    """The extractors config.extractors names, in that order, built from the EXTRACTORS table; those unavailable
    here (inception-v3 without its weights on disk) are left out."""
    unknown = [name for name in config.extractors if name not in EXTRACTORS]
    if unknown:
        raise MedsynError(f"unknown feature extractor {', '.join(unknown)}; choose from {', '.join(EXTRACTORS)}.")
    built = (EXTRACTORS[name](real, config, classifier) for name in config.extractors)
    return [extractor for extractor in built if extractor is not None]


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
    from medsyn.tensors import infer

    def pool_features(network, x):  # the network takes uint8 RGB and scales it itself
        return network(x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x)[0]

    return infer(model, images, None, batch_size, pool_features).double().numpy()
