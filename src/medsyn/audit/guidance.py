"""Choose a diffusion model's classifier-free guidance scale on real val, with the audit's own measures.

Guidance trades diversity for class fidelity: a larger scale pushes samples towards what the model thinks is most
typical of their class (label fidelity and precision rise), and away from the rest of the class (recall falls).
Each candidate scale samples the same noise and labels, so the scales differ by guidance alone, and is scored in
the feature space of the audit's label-trained CNN (trained on real train, early-stopped on real val):

    label fidelity  the CNN's accuracy on the samples, averaged over classes
    precision       per class, the share of samples inside the real val images' k-NN manifold, averaged over classes
    recall          per class, the share of real val images inside the samples' manifold, averaged over classes

The chosen scale has the highest harmonic mean of the three, so it cannot buy fidelity with a collapse of recall
or diversity with wrong labels; ties go to the smaller scale (cheaper: scale 0 needs one UNet pass per step, not
two). The same three numbers for real train images against real val are the reference: what real images score.
When the CNN itself is at chance on real val (a tiny train split), nothing is chosen and the trained scale is kept,
with the reason in the result. Only the train and val splits are read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medsyn.config import AuditConfig, check_guidance_scales, fixed_or_chosen, resolve_device
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.audit import features, fidelity

LOG = logging.getLogger(__name__)
CHANCE_MARGIN = 0.05  # the CNN must beat chance on real val by this balanced accuracy for its measures to rank
RULE = ("highest harmonic mean of label fidelity, precision and recall against real val (label-trained CNN "
        "features, per class, averaged); ties to the smaller scale")


def choose_guidance(real: ImageSet, sample: Callable[[float, np.ndarray], np.ndarray], scales: Sequence[float],
                    config: AuditConfig, max_per_class: int = 200) -> dict:
    """`sample(scale, labels)` -> uint8 images (N, H, W, C) for `labels`, the same noise at every scale.
    Returns {"chosen", "rule", "scales": [{"guidance", "label_fidelity", "precision", "recall", "score"}, ...],
    "reference": the same for real train, "per_class": images sampled per class}."""
    scales = check_guidance_scales(scales)
    val = real.subset("val")
    per_class = np.minimum(np.bincount(val.labels, minlength=real.n_classes), max_per_class)
    if per_class.min() <= config.k + 1:
        raise MedsynError(f"{real.source}: choosing the guidance scale on real val needs more than {config.k + 1} "
                          f"val images per class (found {np.bincount(val.labels, minlength=real.n_classes).tolist()});"
                          f" give a fixed --guidance instead.")
    encoder = features.label_trained_cnn(real, config)
    reference = _encode_by_class(encoder, val.images, val.labels, real.n_classes)
    about = {"rule": RULE, "per_class": per_class.tolist(), "class_names": list(real.class_names),
             "measured_against": f"real val ({len(val)} images)"}
    val_accuracy = _balanced_accuracy(reference[1], val.labels, real.n_classes)
    if val_accuracy < 1 / real.n_classes + CHANCE_MARGIN:
        return {"chosen": None, "scales": [], "reference": None, **about,
                "not_chosen": f"the audit's label-trained CNN is at chance on real val (balanced accuracy "
                              f"{val_accuracy:.3f}), so its label fidelity and features cannot rank the scales; "
                              f"the checkpoint's own scale is kept"}
    labels = np.repeat(np.arange(real.n_classes), per_class)
    floor = _reference(encoder, reference, real.subset("train"), per_class, config)
    table = []
    for scale in scales:
        table.append({"guidance": scale, **_score(encoder, reference, sample(scale, labels), labels, config.k)})
        LOG.info(f"guidance {scale:g}: label fidelity {table[-1]['label_fidelity']:.3f}, precision "
            f"{table[-1]['precision']:.3f}, recall {table[-1]['recall']:.3f}, score {table[-1]['score']:.3f}")
    best = max(table, key=lambda row: (round(row["score"], 9), -row["guidance"]))
    return {"chosen": best["guidance"], "scales": table, "reference": floor, **about}


def sampler_for(checkpoint: Path, scales: Sequence[float], real: ImageSet | None, seed: int,
                sampler: dict | None = None, audit_config: AuditConfig | None = None,
                device: str = "auto") -> tuple[dict | None, dict | None]:
    """(the sampler settings to generate with, the record of the choice or None). No scale keeps the checkpoint's
    own; one scale is that scale; several are chosen among on the real val split of `real`, the data the model was
    trained on."""
    fixed, candidates = fixed_or_chosen(scales)
    if fixed is not None:
        return {**(sampler or {}), "guidance": fixed}, None
    if not candidates:
        return sampler, None
    choice = choose_for_checkpoint(checkpoint, real, candidates, seed, sampler, audit_config or AuditConfig(), device)
    if choice["chosen"] is not None:
        sampler = {**(sampler or {}), "guidance": choice["chosen"]}
    return sampler, choice


def choose_for_checkpoint(checkpoint: Path, real: ImageSet | None, scales: Sequence[float], seed: int,
                          sampler: dict | None, audit_config: AuditConfig, device: str = "auto") -> dict:
    """The guidance scale of a ddpm checkpoint chosen on real val, sampling with `seed`."""
    from medsyn import generators

    generator, info = generators.load_generator(checkpoint, device=resolve_device(device), sampler=sampler)
    if info["model"] != "ddpm":
        raise MedsynError(f"{checkpoint}: a {info['model']} checkpoint has no guidance to choose; guidance applies "
                          f"to ddpm checkpoints.")
    _check_training_data(real, info, checkpoint)

    def sample(scale: float, labels: np.ndarray) -> np.ndarray:
        generator.guidance = scale  # a sampling setting of the loaded model: no need to read the checkpoint again
        return generators.generate_images(generator, info, labels, seed)

    return choose_guidance(real, sample, scales, audit_config)


def _check_training_data(real: ImageSet | None, info: dict, checkpoint: Path) -> None:
    """Guidance is chosen on the val split of the data the model was trained on, never on another dataset."""
    how = f"pass the data it was trained on (--data; the checkpoint says {info['data_source']!r})"
    if real is None:
        raise MedsynError(f"choosing the guidance of {checkpoint} needs its real data: {how}.")
    trained = (list(info["class_names"]), info["size"], info["channels"], list(info["train_counts"]))
    given = (list(real.class_names), real.size, real.channels, real.counts()["train"])
    if trained != given:
        raise MedsynError(f"{real.source} is not the data {checkpoint} was trained on (classes, size, channels, train "
                          f"counts {given} vs {trained}): {how}.")


def _balanced_accuracy(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    return float(np.mean([(probs[labels == c].argmax(1) == c).mean() for c in range(n_classes)]))


def _encode_by_class(encoder, images: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple:
    feats, probs = features.encode(encoder, images)
    return tuple(feats[labels == c] for c in range(n_classes)), probs


def _score(encoder, reference: tuple, images: np.ndarray, labels: np.ndarray, k: int) -> dict:
    by_class, probs = _encode_by_class(encoder, images, labels, len(reference[0]))
    prdc = [fidelity.prdc(real, fake, k) for real, fake in zip(reference[0], by_class)]
    measures = {"label_fidelity": _balanced_accuracy(probs, labels, len(by_class)),
                "precision": float(np.mean([p["precision"] for p in prdc])),
                "recall": float(np.mean([p["recall"] for p in prdc]))}
    values = np.array(list(measures.values()))
    measures["score"] = float(len(values) / np.sum(1 / values)) if values.min() > 0 else 0.0
    return measures


def _reference(encoder, reference: tuple, train: ImageSet, per_class: np.ndarray, config: AuditConfig) -> dict | None:
    """The three measures for real train images (as many per class as sampled, where train has them)."""
    counts = np.bincount(train.labels, minlength=len(per_class))
    if counts.min() <= config.k + 1:
        return None
    rng = np.random.default_rng(config.seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(train.labels == c), min(n, counts[c]), replace=False)
                           for c, n in enumerate(per_class)])
    return {"set": "real train images (the CNN was trained on them: their label fidelity is optimistic)",
            **_score(encoder, reference, train.images[rows], train.labels[rows], config.k)}


