"""One classifier run: train on an arm's data, select on the REAL val split, then read the test split once.

The order is the guard. `fit` receives the training images and the real validation split and nothing else; the
test rows travel in a `SealedTestSplit` that `evaluate_on_test` opens exactly once, after the model, its threshold
and its validation metrics are written. Model selection: the epoch with the lowest validation loss (unweighted
cross-entropy on real val), early stopping after `patience` epochs without improvement. For two classes the
decision threshold on p(class 1) is the one maximising Youden's J on real val; metrics at 0.5 are reported too.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medsyn.classify import models
from medsyn.classify.arms import EXPOSURES, TrainingData, parse_arm, pretraining_data, training_data
from medsyn.config import ClassifyConfig, check_device, require_positive, resolve_device, to_dict
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.metrics import classification_metrics, predict_labels, youden_threshold
from medsyn.fileio import Field, read_csv, read_json, write_bytes, write_json, write_text

RUN_FILES = ("config.json", "history.csv", "model.pt", "val_metrics.json", "test_metrics.json", "predictions.csv")


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


@dataclass
class Fitted:
    model: models.Classifier
    threshold: dict          # {"rule": "youden_j_on_val" | "argmax", "value": float | None}
    history: list[dict]
    best_epoch: int
    val_metrics: dict
    exposure: dict           # best epoch, epochs run, real passes and synthetic images seen by the selected model


def train_arm(dataset: ImageSet, arm: str, seed: int, config: ClassifyConfig, out_dir: Path,
              synthetic: ImageSet | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train `arm` with `seed`, select on real val, evaluate once on real test; write the run folder and return
    the test metrics. A folder that already holds this run's test_metrics.json is returned as it is."""
    check_config(config)
    out_dir = Path(out_dir)
    record = _run_record(dataset, arm, seed, config, synthetic)
    if (out_dir / "test_metrics.json").is_file():
        _check_same_run(out_dir, record)
        return read_json(out_dir / "test_metrics.json")
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
    write_json(out_dir / "config.json", record)

    steps = _steps_per_epoch(len(real_train), config.batch_size, config.min_epoch_steps)
    init, pretrained = None, {}
    if parsed.pretrain:  # a pretraining epoch passes R synthetic images per image of a real epoch
        pre = fit(pre_data, val, dataset.n_classes, config, seed,
                  augment=parsed.augment, steps_per_epoch=max(1, round(steps * parsed.synth_ratio)), log=log)
        init = pre.model.state_dict()
        pretrained = {"pretrain_best_epoch": pre.best_epoch, "synthetic_seen": pre.exposure["synthetic_seen"]}
    fitted = fit(data, val, dataset.n_classes, config, seed, augment=parsed.augment, steps_per_epoch=steps,
                 log=log, init_state=init)
    fitted.exposure.update(pretrained)
    if parsed.pretrain:
        fitted.exposure["dose"] = round(pretrained["synthetic_seen"] / fitted.exposure["real_seen"], 4)
    meta = {"arch": _arch(config, dataset), "class_names": list(dataset.class_names),
            "image_size": dataset.size, "channels": dataset.channels, "aspect": dataset.aspect,
            "normalization": models.normalization(config.pretrained, dataset.channels),
            "threshold": fitted.threshold, "arm": arm, "seed": seed, "data_source": dataset.source,
            "val_metrics": fitted.val_metrics}
    write_text(out_dir / "history.csv", _csv(fitted.history))
    _save_model(out_dir / "model.pt", fitted.model, meta)
    write_json(out_dir / "val_metrics.json", {"split": "val", **fitted.exposure, **fitted.val_metrics})
    return evaluate_on_test(fitted.model, meta, sealed_test, out_dir)


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
    check_device(config.device)
    if config.pretrained:
        models.check_cached_weights(*models.pretrained_weights(config.arch, config.batch_norm))


def fit(data: TrainingData, val: ImageSet, n_classes: int, config: ClassifyConfig, seed: int,
        augment: bool = False, steps_per_epoch: int | None = None, log: Callable[[str], None] | None = None,
        init_state: dict | None = None) -> Fitted:
    """Train from scratch (or ImageNet weights) on `data`; keep the epoch with the lowest real-val loss.
    Common random numbers: the initial weights and the order of the stream's batches depend on `seed` alone, so
    two arms of one replicate start from identical weights and, with the same stream, see the same batches."""
    import torch

    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _fit(data, val, n_classes, config, seed, augment, steps_per_epoch, log, init_state)
    finally:
        torch.set_num_threads(previous)


def _fit(data, val, n_classes, config, seed, augment, steps_per_epoch, log, init_state) -> Fitted:
    import torch
    import torch.nn.functional as F
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(seed)
    device = resolve_device(config.device)
    model = models.build(config.arch, n_classes, data.stream_images.shape[-1], config.width, config.batch_norm,
                         config.dropout, config.pretrained)
    if init_state is not None:  # fine-tuning a pretrained network
        model.load_state_dict(init_state)
    model = model.to(device)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True) \
        if config.ema_decay else None
    norm = models.normalization(config.pretrained, data.stream_images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    all_labels = np.concatenate([data.stream_labels, data.ride_labels])
    weights = _class_weights(all_labels, n_classes).to(device) if config.class_weighting else None
    batches = _Batches(data, min(config.batch_size, len(data.stream_labels)), steps_per_epoch, seed,
                       _augmentation(data.stream_images.shape[1]) if augment else None, norm)
    val_x = models.to_tensor(val.images, norm).to(device)
    bf16 = config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    scored = averaged.module if averaged else model

    history, best_loss, best_state, best_epoch = [], math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        start, train_loss = time.perf_counter(), 0.0
        model.train()
        for x, y in batches.epoch():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x.to(device)), y.to(device), weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if averaged:
                averaged.update_parameters(model)
            train_loss += loss.item() / batches.steps
        val_proba, val_loss = _evaluate(scored, val_x, val.labels)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(scored.state_dict()), epoch
        val_auc = classification_metrics(val.labels, val_proba)["auc"]
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                        "val_auc": None if val_auc is None else round(val_auc, 6),
                        "seconds": round(time.perf_counter() - start, 2), "best": improved})
        if log:
            log(f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val AUC {val_auc if val_auc is None else round(val_auc, 4)}{' *' if improved else ''}")
        if epoch - best_epoch >= config.patience:
            break
    if best_state is None:
        raise MedsynError(f"training diverged: the validation loss was never finite ({history[-1]['val_loss']}); "
                          f"lower the learning rate (--lr, now {config.lr:g}).")
    scored.load_state_dict(best_state)
    val_proba, _ = _evaluate(scored, val_x, val.labels)
    threshold = _choose_threshold(val.labels, val_proba)
    val_metrics = classification_metrics(val.labels, val_proba, threshold["value"])
    exposure = {"best_epoch": best_epoch, "epochs_run": len(history), "epoch_cap": config.epochs,
                "stopped_early": len(history) < config.epochs, "exposure_rule": config.exposure,
                **batches.seen(best_epoch)}
    return Fitted(scored, threshold, history, best_epoch, val_metrics, exposure)


class _Batches:
    """The training batches of one run. An epoch is `steps` batches of `batch` stream images, drawn from shuffled
    passes over the stream (real images lead it, which is how they are counted). Ride-along images join each
    batch so that, from the first step on, round(R x real images seen) of them have been seen, R = ride-along
    images per real image of the arm's draw: the dose holds at every size and every number of steps per epoch.

    Common random numbers across the arms of a replicate: the stream's order, the augmentation of its images and
    the dropout masks (the stream's images lead every batch; on CPU a mask's first rows do not depend on the rows
    after them, on CUDA they may) depend on `seed` and the step alone; the ride-along images have their own order
    and augmentation generators. Batch norm still mixes the ride-along images into the batch statistics."""

    def __init__(self, data: TrainingData, batch: int, steps: int | None, seed: int, transform, norm: dict):
        import torch

        self.data, self.batch, self.transform, self.norm, self.seed = data, batch, transform, norm, seed
        self.steps = steps or _steps_per_epoch(len(data.stream_labels), batch)
        self.stream = _index_stream(len(data.stream_labels), np.random.default_rng(seed))
        self.ride = _index_stream(len(data.ride_labels), np.random.default_rng([seed, 1]))
        self.dose = len(data.ride_labels) / data.n_real if data.n_real else 0.0
        self.images = torch.from_numpy(np.concatenate([data.stream_images, data.ride_images])).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.concatenate([data.stream_labels, data.ride_labels]).astype(np.int64))
        self.offset = len(data.stream_labels)
        self.step = 0
        self.real_seen = self.ride_seen = 0
        self.counts: list[tuple[int, int]] = []   # (real, extra) images seen per epoch

    def epoch(self):
        """`steps` batches (images, labels); torch's global generator is seeded for the step's dropout."""
        import torch

        real, extra = 0, 0
        for _ in range(self.steps):
            drawn = np.fromiter((next(self.stream) for _ in range(self.batch)), np.int64, self.batch)
            n_real = int((drawn < self.data.n_real).sum())
            k = round(self.dose * (self.real_seen + n_real)) - self.ride_seen
            ride = np.fromiter((self.offset + next(self.ride) for _ in range(k)), np.int64, k)
            self.real_seen, self.ride_seen = self.real_seen + n_real, self.ride_seen + k
            real, extra = real + n_real, extra + self.batch - n_real + k
            images = torch.cat([self._tensor(drawn, "stream"), self._tensor(ride, "ride")])
            torch.manual_seed(self._step_seed("dropout"))
            self.step += 1
            yield images, self.labels[torch.from_numpy(np.concatenate([drawn, ride]))]
        self.counts.append((real, extra))

    def _step_seed(self, purpose: str) -> int:
        return int(np.random.default_rng([self.seed, self.step, PURPOSES.index(purpose)]).integers(2 ** 62))

    def _tensor(self, idx: np.ndarray, part: str):
        import torch

        images = self.images[torch.from_numpy(idx)]
        if self.transform is not None and len(images):
            torch.manual_seed(self._step_seed(part))
            images = torch.cat([self.transform(images[i:i + AUGMENT_GROUP])
                                for i in range(0, len(images), AUGMENT_GROUP)])
        return models.normalize(images, self.norm)

    def seen(self, epochs: int) -> dict:
        """Real and extra (synthetic or held-out) images seen up to the end of `epochs` (the selected model), and
        their ratio: the dose the arm achieved."""
        real = sum(r for r, _ in self.counts[:epochs])
        extra = sum(s for _, s in self.counts[:epochs])
        return {"real_passes": round(real / self.data.n_real, 4) if self.data.n_real else 0.0,
                "real_seen": int(real), "synthetic_seen": int(extra),
                "dose": round(extra / real, 4) if real else None}


PURPOSES = ("stream", "ride", "dropout")  # each step's seeds: one generator per purpose keeps the arms in step


def _steps_per_epoch(n: int, batch: int, minimum: int = 1) -> int:
    """Batches per epoch: one pass over n images, but at least `minimum` (a few dozen images make one batch, too
    little between two validation checks)."""
    return max(minimum, round(n / min(batch, n)))


def evaluate_on_test(model: models.Classifier, meta: dict, sealed_test: SealedTestSplit, out_dir: Path) -> dict:
    """The one read of the test split: metrics at the val-chosen threshold (and at 0.5), predictions.csv."""
    test = sealed_test.open()
    proba = models.predict_proba(model, meta, test.images)
    threshold = meta["threshold"]["value"]
    result = {"split": "test", "arm": meta["arm"], "seed": meta["seed"], "threshold_rule": meta["threshold"]["rule"],
              **classification_metrics(test.labels, proba, threshold)}
    if proba.shape[1] == 2:
        result["at_threshold_0.5"] = classification_metrics(test.labels, proba, 0.5)
    write_text(out_dir / "predictions.csv", _predictions_csv(test, proba, threshold, meta["class_names"]))
    write_json(out_dir / "test_metrics.json", result)
    return result


def read_predictions(run_dir: Path) -> dict:
    """{"y_true", "proba", "threshold"} of a finished run, the input `medsyn.stats.paired.summarize_arms` takes."""
    run_dir = Path(run_dir)
    if not (run_dir / "test_metrics.json").is_file():
        raise MedsynError(f"{run_dir} holds no finished classifier run (test_metrics.json is missing).")
    rows = read_csv(run_dir / "predictions.csv", {"true": Field(int, low=0), "p_*": Field(float, low=0, high=1)})
    columns = [c for c in rows[0] if c.startswith("p_")] if rows else []
    return {"y_true": np.array([int(r["true"]) for r in rows]),
            "proba": np.array([[float(r[c]) for c in columns] for r in rows]),
            "threshold": read_json(run_dir / "test_metrics.json")["threshold"]}


# --- helpers ---------------------------------------------------------------------------------------------------

def _augmentation(size: int):
    """Traditional augmentation for chest X-rays: small rotations and shifts, mild zoom via random resized crops,
    brightness/contrast. No flips: a flipped chest puts the heart on the wrong side."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.95, 1.05)),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
    ])


AUGMENT_GROUP = 4  # images per augmentation draw: a quarter of the per-image cost, still fresh draws every batch


def _evaluate(model, x, labels) -> tuple[np.ndarray, float]:
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)])
    logits = logits.double().cpu()
    loss = F.cross_entropy(logits, torch.from_numpy(np.asarray(labels, dtype=np.int64))).item()
    return torch.softmax(logits, dim=1).numpy(), loss


def _choose_threshold(val_labels: np.ndarray, val_proba: np.ndarray) -> dict:
    if val_proba.shape[1] != 2:
        return {"rule": "argmax", "value": None}
    if len(np.unique(val_labels)) < 2:
        return {"rule": "default_0.5 (val holds one class)", "value": 0.5}
    return {"rule": "youden_j_on_val", "value": youden_threshold(val_labels, val_proba[:, 1])}


def _class_weights(labels: np.ndarray, n_classes: int):
    """n / (k * n_c): each class weighs the same in the training loss; absent classes weigh 0."""
    import torch

    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)


def _index_stream(n: int, rng: np.random.Generator):
    """Endless shuffled passes over range(n): every image is used before any is repeated."""
    while True:
        yield from rng.permutation(n)


def _arch(config: ClassifyConfig, dataset: ImageSet) -> dict:
    return {"arch": config.arch, "n_classes": dataset.n_classes, "channels": dataset.channels,
            "width": config.width, "batch_norm": config.batch_norm, "dropout": config.dropout}


def _save_model(path: Path, model, meta: dict) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(models.checkpoint(model, meta), buffer)
    write_bytes(path, buffer.getvalue())


def _run_record(dataset: ImageSet, arm: str, seed: int, config: ClassifyConfig, synthetic: ImageSet | None) -> dict:
    uses_synthetic = synthetic is not None and parse_arm(arm).uses_pool
    return {"arm": arm, "seed": seed, "classify": to_dict(config), "data_source": dataset.source,
            "image_size": dataset.size, "channels": dataset.channels, "class_names": list(dataset.class_names),
            "split_counts": dataset.counts(), "synthetic_source": synthetic.source if uses_synthetic else None}


EXECUTION_ONLY = ("device", "threads")  # where a run ran, not what it is: a resume may change them


def _check_same_run(out_dir: Path, record: dict) -> None:
    saved = read_json(out_dir / "config.json") if (out_dir / "config.json").is_file() else {}
    what = lambda r: {**r, "classify": {k: v for k, v in r.get("classify", {}).items() if k not in EXECUTION_ONLY}}
    saved, record = what(saved), what(record)
    differing = [k for k in record if saved.get(k) != record[k]]
    if differing:
        raise MedsynError(f"{out_dir} holds a finished run with a different {', '.join(differing)}; choose another "
                          f"--out, or pass --overwrite to replace it.")


def _check_splits(dataset: ImageSet) -> None:
    counts = dataset.counts()
    for split in ("train", "val", "test"):
        if sum(counts[split]) == 0:
            raise MedsynError(f"{dataset.source}: the {split} split is empty; a classifier run needs real train, "
                              f"val and test images (see `medsyn data info`).")


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _predictions_csv(test: ImageSet, proba: np.ndarray, threshold: float | None, class_names: list[str]) -> str:
    predicted = predict_labels(proba, threshold)
    rows = [{"row": i, "path": str(test.paths[i]), "true": int(test.labels[i]),
             "true_name": class_names[test.labels[i]],
             **{f"p_{name}": f"{p:.8g}" for name, p in zip(class_names, proba[i])},
             "predicted": int(predicted[i]), "predicted_name": class_names[predicted[i]]} for i in range(len(test))]
    return _csv(rows)


def filter_pool(pool: ImageSet, model_dir: Path, val: ImageSet, quantile: float = 0.1) -> ImageSet:
    """The synthetic images a real-trained classifier finds typical of their label: p(label) >= tau, where tau is
    the `quantile` of that classifier's p(true label) over the real VALIDATION images (so 90% of real val images
    would pass by default). The returned set's `source` records the rule and tau."""
    model, meta = models.load_model(Path(model_dir) / "model.pt")
    val_p = models.predict_proba(model, meta, val.images)[np.arange(len(val)), val.labels]
    tau = float(np.quantile(val_p, quantile))
    pool_p = models.predict_proba(model, meta, pool.images)[np.arange(len(pool)), pool.labels]
    kept = pool.select(pool_p >= tau)
    rule = (f"filtered by {Path(model_dir).name} of {Path(model_dir).parent.name}: p(label) >= {tau:.4f} (the "
            f"{quantile:.0%} quantile on real val), kept {len(kept)}/{len(pool)}")
    return dataclasses.replace(kept, source=f"{pool.source} [{rule}]")
