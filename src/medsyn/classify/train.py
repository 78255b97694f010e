"""One classifier run: train on an arm's data, select on the REAL val split, then read the test split once.

The order is the guard. `fit` receives the training images and the real validation split and nothing else; the
test rows travel in a `SealedTestSplit` that `evaluate_on_test` opens exactly once, after the model, its threshold
and its validation metrics are written. Model selection: the epoch with the lowest validation loss (unweighted
cross-entropy on real val), early stopping after `patience` epochs without improvement. For two classes the
decision threshold on p(class 1) is the one maximising Youden's J on real val; metrics at 0.5 are reported too.

    train_arm   a run: its record, the arm's data, (pretraining,) the loop, the files, the one read of test
    fit         the loop: epochs of the arm's batches (batches.py), each scored on real val; the best is kept.
                The audit's label-trained CNN is trained by it too, as a `Network` of its own.
The run folder's files are read and written by files.py. Epoch lines go to the `medsyn.classify.train` logger.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medsyn.classify import batches, files, models
from medsyn.classify.arms import EXPOSURES, TrainingData, parse_arm, pretraining_data, training_data
from medsyn.config import SELECTIONS, ClassifyConfig, check_device, require_positive, resolve_device
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.fileio import read_json
from medsyn.metrics import classification_metrics, youden_threshold
from medsyn.tensors import infer

LOG = logging.getLogger(__name__)
VAL_BATCH = 256


class SealedTestSplit:
    """The test rows of a dataset, handed out once, for the final evaluation; a second `open` is an error."""

    def __init__(self, dataset: ImageSet):
        self._dataset = dataset
        self.opened = False

    def open(self) -> ImageSet:
        if self.opened:
            raise RuntimeError("the test split of this run was already read; it is read once, at the end")
        self.opened = True
        return self._dataset.subset("test")


@dataclass(frozen=True)
class Network:
    """What `fit` trains: `build()` makes it (right after torch is seeded, so its initial weights depend on the seed
    alone) and `norm` normalises its input pixels (medsyn.tensors)."""
    build: Callable[[], torch.nn.Module]
    norm: dict


def classifier(config: ClassifyConfig, n_classes: int, channels: int) -> Network:
    """The classifier `config` names (vgg16 or resnet18, models.build) and its normalisation."""
    return Network(lambda: models.build(config.arch, n_classes, channels, config.width, config.batch_norm,
                                        config.dropout, config.pretrained),
                   models.normalization(config.pretrained, channels))


@dataclass
class Fitted:
    model: torch.nn.Module
    threshold: dict          # {"rule": "youden_j_on_val" | "argmax", "value": float | None}
    history: list[dict]
    best_epoch: int
    val_metrics: dict
    exposure: dict           # best epoch, epochs run, real passes and synthetic images seen by the selected model


def train_arm(dataset: ImageSet, arm: str, seed: int, config: ClassifyConfig, out_dir: Path,
              synthetic: ImageSet | None = None, pool_record: dict | None = None) -> dict:
    """Train `arm` with `seed`, select on real val, evaluate once on real test; write the run folder and return
    the test metrics. A folder that already holds this run's test_metrics.json is returned as it is. `pool_record`
    says how the extra images were chosen (a pseudo-labelled pool's kept counts and thresholds), for the record."""
    # -- the run's record: a finished run of the same record is returned as it is ---------------------------------
    check_config(config)
    out_dir = Path(out_dir)
    record = files.run_record(dataset, arm, seed, config, synthetic, pool_record)
    if files.finished(out_dir):
        files.check_same_run(out_dir, record)
        return read_json(out_dir / "test_metrics.json")

    # -- the arm's data; the test rows stay sealed until the end ---------------------------------------------------
    parsed = parse_arm(arm)
    real_train, val = dataset.subset("train"), dataset.subset("val")
    sealed_test = SealedTestSplit(dataset)
    _check_splits(dataset)
    data = training_data(parsed, real_train, synthetic, seed, config.exposure)
    pre_data = pretraining_data(parsed, real_train, synthetic, seed) if parsed.pretrain else None
    record["training_set"] = {"n_real": data.n_real,
                              "n_synthetic": pre_data.n_synthetic if pre_data else data.n_synthetic,
                              "per_class": np.bincount(np.concatenate([data.stream_labels, data.ride_labels]),
                                                       minlength=dataset.n_classes).tolist()}
    files.write_record(out_dir, record)

    # -- training: pretraining on synthetic images first (pretrain-synth arms), then the arm's own fit -------------
    steps = batches.steps_per_epoch(len(real_train), config.batch_size, config.min_epoch_steps)
    init, pretrained = None, {}
    if parsed.pretrain:  # a pretraining epoch passes R synthetic images per image of a real epoch
        LOG.info(f"{arm} seed {seed}: pretraining on {pre_data.n_synthetic} synthetic images")
        pre = fit(pre_data, val, dataset.n_classes, config, seed, augment=parsed.augment,
                  steps_per_epoch=max(1, round(steps * parsed.synth_ratio)))
        init = pre.model.state_dict()
        pretrained = {"pretrain_best_epoch": pre.best_epoch, "synthetic_seen": pre.exposure["synthetic_seen"]}
    LOG.info(f"{arm} seed {seed}: training on {data.n_real} real and {data.n_synthetic} extra images, "
             f"{steps} steps per epoch")
    fitted = fit(data, val, dataset.n_classes, config, seed, augment=parsed.augment, steps_per_epoch=steps,
                 init_state=init)
    fitted.exposure.update(pretrained)
    if parsed.pretrain:
        fitted.exposure["dose"] = round(pretrained["synthetic_seen"] / fitted.exposure["real_seen"], 4)

    # -- the files, then the one read of the test split ------------------------------------------------------------
    meta = _meta(config, dataset, fitted, arm, seed)
    files.write_training(out_dir, fitted.model, meta, fitted.history, {**fitted.exposure, **fitted.val_metrics})
    return evaluate_on_test(fitted.model, meta, sealed_test, out_dir)


def real_only_model(dataset: ImageSet, config: ClassifyConfig, seed: int) -> tuple[torch.nn.Module, dict]:
    """The arm `real`'s classifier trained in memory, selected on real val, without its run folder and without
    any read of the test split: a pseudo-labeller where no study's run of the arm exists (`gan train
    --unlabelled`). Returns (model, meta) as `models.load_model` would."""
    check_config(config)
    real_train, val = dataset.subset("train"), dataset.subset("val")
    data = training_data(parse_arm("real"), real_train, None, seed, config.exposure)
    fitted = fit(data, val, dataset.n_classes, config, seed)
    return fitted.model.eval(), _meta(config, dataset, fitted, "real", seed)


def _meta(config: ClassifyConfig, dataset: ImageSet, fitted: Fitted, arm: str, seed: int) -> dict:
    """What a trained classifier's model.pt says about it: enough to use it on new images."""
    return {"arch": _arch(config, dataset), "class_names": list(dataset.class_names),
            "image_size": dataset.size, "channels": dataset.channels, "aspect": dataset.aspect,
            "normalization": models.normalization(config.pretrained, dataset.channels),
            "threshold": fitted.threshold, "arm": arm, "seed": seed, "data_source": dataset.source,
            "val_metrics": fitted.val_metrics}


def fit(data: TrainingData, val: ImageSet, n_classes: int, config: ClassifyConfig, seed: int,
        augment: bool = False, steps_per_epoch: int | None = None, init_state: dict | None = None,
        network: Network | None = None) -> Fitted:
    """Train `network` (default: the classifier `config` names) from its seeded initial weights, or from
    `init_state`, on `data`; keep the epoch with the lowest real-val loss. An epoch is `steps_per_epoch` batches
    (default: one pass over the stream, at least config.min_epoch_steps). Common random numbers: the initial weights
    and the order of the stream's batches depend on `seed` alone, so two arms of one replicate start from identical
    weights and, with the same stream, see the same batches."""
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _fit(data, val, n_classes, config, seed, augment, steps_per_epoch, init_state,
                    network or classifier(config, n_classes, data.stream_images.shape[-1]))
    finally:
        torch.set_num_threads(previous)


def _fit(data, val, n_classes, config, seed, augment, steps, init_state, network: Network) -> Fitted:
    # -- the network, its optimizer and its weight average ---------------------------------------------------------
    torch.manual_seed(seed)
    device = resolve_device(config.device)
    model = network.build()
    if init_state is not None:  # fine-tuning a pretrained network
        model.load_state_dict(init_state)
    model = model.to(device)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True) \
        if config.ema_decay else None
    scored = averaged.module if averaged else model  # the weights that are validated, selected and kept
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bf16 = config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()

    # -- the batches and the loss ----------------------------------------------------------------------------------
    n_stream = len(data.stream_labels)
    stream = batches.Batches(data, min(config.batch_size, n_stream),
                             steps or batches.steps_per_epoch(n_stream, config.batch_size, config.min_epoch_steps),
                             seed, batches.augmentation(data.stream_images.shape[1]) if augment else None,
                             network.norm)
    weights = _class_weights(np.concatenate([data.stream_labels, data.ride_labels]), n_classes).to(device) \
        if config.class_weighting else None

    # -- the loop: an epoch of steps, then real val; stop `patience` epochs after the best (val-loss selection) ----
    history, best_loss, best_state, best_epoch = [], math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        start, train_loss = time.perf_counter(), 0.0
        model.train()
        for x, y in stream.epoch():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x.to(device)), y.to(device), weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if averaged:
                averaged.update_parameters(model)
            train_loss += loss.item() / stream.steps
        val_proba, val_loss = _evaluate(scored, val, network.norm)
        improved = val_loss < best_loss if config.selection == "val-loss" else math.isfinite(val_loss)
        if improved:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(scored.state_dict()), epoch
        val_auc = classification_metrics(val.labels, val_proba)["auc"]
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                        "val_auc": None if val_auc is None else round(val_auc, 6),
                        "seconds": round(time.perf_counter() - start, 2), "best": improved})
        LOG.info(f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                 f"val AUC {val_auc if val_auc is None else round(val_auc, 4)}{' *' if improved else ''}")
        if config.selection == "val-loss" and epoch - best_epoch >= config.patience:
            break

    # -- the selected epoch: its weights, its threshold and its metrics on real val --------------------------------
    if best_state is None:
        raise MedsynError(f"training diverged: the validation loss was never finite ({history[-1]['val_loss']}); "
                          f"lower the learning rate (--lr, now {config.lr:g}).")
    scored.load_state_dict(best_state)
    val_proba, _ = _evaluate(scored, val, network.norm)
    threshold = _choose_threshold(val.labels, val_proba)
    val_metrics = classification_metrics(val.labels, val_proba, threshold["value"])
    exposure = {"best_epoch": best_epoch, "epochs_run": len(history), "epoch_cap": config.epochs,
                "stopped_early": len(history) < config.epochs, "exposure_rule": config.exposure,
                **stream.seen(best_epoch)}
    return Fitted(scored, threshold, history, best_epoch, val_metrics, exposure)


def evaluate_on_test(model: models.Classifier, meta: dict, sealed_test: SealedTestSplit, out_dir: Path) -> dict:
    """The one read of the test split: metrics at the val-chosen threshold (and at 0.5), predictions.csv."""
    test = sealed_test.open()
    proba = models.predict_proba(model, meta, test.images)
    threshold = meta["threshold"]["value"]
    result = {"split": "test", "arm": meta["arm"], "seed": meta["seed"], "threshold_rule": meta["threshold"]["rule"],
              **classification_metrics(test.labels, proba, threshold)}
    if proba.shape[1] == 2:
        result["at_threshold_0.5"] = classification_metrics(test.labels, proba, 0.5)
    files.write_test(out_dir, result, test, proba, threshold, meta["class_names"])
    return result


def check_config(config: ClassifyConfig) -> None:
    """Raise a MedsynError for settings no classifier can train with."""
    require_positive(config, ("epochs", "patience", "batch_size", "lr", "width"), "classifier")
    if config.batch_size < 2:
        raise MedsynError(f"--batch-size {config.batch_size}: batch norm needs at least 2 images per step.")
    if config.pretrained and config.width != 1.0:
        raise MedsynError(f"--pretrained needs --width 1: ImageNet weights exist only for the full network, "
                          f"not for width {config.width:g}.")
    if config.exposure not in EXPOSURES:
        raise MedsynError(f"classifier exposure {config.exposure!r}: choose one of {', '.join(EXPOSURES)}.")
    if not 0 <= config.ema_decay < 1:
        raise MedsynError(f"classifier ema_decay {config.ema_decay}: use 0 (off) or a value in (0, 1), e.g. 0.999.")
    if config.selection not in SELECTIONS:
        raise MedsynError(f"classifier selection {config.selection!r}: choose one of {', '.join(SELECTIONS)}.")
    check_device(config.device)
    if config.pretrained:
        models.check_cached_weights(*models.pretrained_weights(config.arch, config.batch_norm))


# --- helpers ---------------------------------------------------------------------------------------------------

def _evaluate(model, val: ImageSet, norm: dict) -> tuple[np.ndarray, float]:
    """Class probabilities on real val and their cross-entropy (unweighted, in float64)."""
    logits = infer(model, val.images, norm, VAL_BATCH).double()
    loss = F.cross_entropy(logits, torch.from_numpy(np.asarray(val.labels, dtype=np.int64))).item()
    return torch.softmax(logits, dim=1).numpy(), loss


def _choose_threshold(val_labels: np.ndarray, val_proba: np.ndarray) -> dict:
    if val_proba.shape[1] != 2:
        return {"rule": "argmax", "value": None}
    if len(np.unique(val_labels)) < 2:
        return {"rule": "default_0.5 (val holds one class)", "value": 0.5}
    return {"rule": "youden_j_on_val", "value": youden_threshold(val_labels, val_proba[:, 1])}


def _class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (k * n_c): each class weighs the same in the training loss; absent classes weigh 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)


def _arch(config: ClassifyConfig, dataset: ImageSet) -> dict:
    return {"arch": config.arch, "n_classes": dataset.n_classes, "channels": dataset.channels,
            "width": config.width, "batch_norm": config.batch_norm, "dropout": config.dropout}


def _check_splits(dataset: ImageSet) -> None:
    counts = dataset.counts()
    for split in ("train", "val", "test"):
        if sum(counts[split]) == 0:
            raise MedsynError(f"{dataset.source}: the {split} split is empty; a classifier run needs real train, "
                              f"val and test images (see `medsyn data info`).")
