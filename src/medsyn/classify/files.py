"""A classifier run's folder: what it trained on, how training went, the model, and its one read of the test split.

    config.json        the run record: arm, seed, settings, data, the training set's counts
    history.csv        one row per epoch: train loss, real-val loss and AUC, seconds, whether it was the best
    model.pt           the selected model and everything needed to use it (classify.models.load_model)
    val_metrics.json   the selected model on real val, and the images it saw (the achieved dose)
    test_metrics.json  written last, after the one read of the test split
    predictions.csv    per test image: true label, class probabilities, predicted label
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from medsyn.classify import models
from medsyn.classify.arms import parse_arm
from medsyn.config import EXECUTION_ONLY, ClassifyConfig, to_dict
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.fileio import Field, changed_settings, read_csv, read_json, write_bytes, write_json, write_text
from medsyn.metrics import predict_labels

RUN_FILES = ("config.json", "history.csv", "model.pt", "val_metrics.json", "test_metrics.json", "predictions.csv")


def run_record(dataset: ImageSet, arm: str, seed: int, config: ClassifyConfig, synthetic: ImageSet | None,
               pool_record: dict | None = None) -> dict:
    """What makes a run this run (config.json, before the training set's counts are added); `pool_record`: how
    its extra images were chosen (a pseudo-labelled pool: kept per class, thresholds), where the caller knows."""
    uses_synthetic = synthetic is not None and parse_arm(arm).uses_pool
    record = {"arm": arm, "seed": seed, "classify": to_dict(config), "data_source": dataset.source,
              "image_size": dataset.size, "channels": dataset.channels, "class_names": list(dataset.class_names),
              "split_counts": dataset.counts(), "synthetic_source": synthetic.source if uses_synthetic else None}
    return {**record, "pool": pool_record} if pool_record is not None else record


def write_record(out_dir: Path, record: dict) -> None:
    write_json(Path(out_dir) / "config.json", record)


def finished(out_dir: Path) -> bool:
    return (Path(out_dir) / "test_metrics.json").is_file()


def check_same_run(out_dir: Path, record: dict) -> None:
    """A finished run folder is reused only for the same run (device and threads aside)."""
    saved = read_json(out_dir / "config.json") if (out_dir / "config.json").is_file() else {}
    differing = changed_settings(saved, record, EXECUTION_ONLY)
    if differing:
        raise MedsynError(f"{out_dir} holds a finished run with a different {', '.join(differing[:5])}; choose another "
                          f"--out, or pass --overwrite to replace it.")


def write_training(out_dir: Path, model, meta: dict, history: list[dict], val_summary: dict) -> None:
    """history.csv, model.pt and val_metrics.json: everything known before the test split is opened."""
    import torch

    write_text(out_dir / "history.csv", _csv(history))
    buffer = io.BytesIO()
    torch.save(models.checkpoint(model, meta), buffer)
    write_bytes(out_dir / "model.pt", buffer.getvalue())
    write_json(out_dir / "val_metrics.json", {"split": "val", **val_summary})


def write_test(out_dir: Path, result: dict, test: ImageSet, proba: np.ndarray, threshold: float | None,
               class_names: list[str]) -> None:
    """predictions.csv, then test_metrics.json, whose presence marks the run finished."""
    write_text(out_dir / "predictions.csv", _predictions_csv(test, proba, threshold, class_names))
    write_json(out_dir / "test_metrics.json", result)


def read_predictions(run_dir: Path) -> dict:
    """{"y_true", "proba", "threshold"} of a finished run, the input `medsyn.stats.paired.summarize_arms` takes."""
    run_dir = Path(run_dir)
    if not finished(run_dir):
        raise MedsynError(f"{run_dir} holds no finished classifier run (test_metrics.json is missing).")
    rows = read_csv(run_dir / "predictions.csv", {"true": Field(int, low=0), "p_*": Field(float, low=0, high=1)})
    columns = [c for c in rows[0] if c.startswith("p_")] if rows else []
    return {"y_true": np.array([int(r["true"]) for r in rows]),
            "proba": np.array([[float(r[c]) for c in columns] for r in rows]),
            "threshold": read_json(run_dir / "test_metrics.json")["threshold"]}


def _predictions_csv(test: ImageSet, proba: np.ndarray, threshold: float | None, class_names: list[str]) -> str:
    predicted = predict_labels(proba, threshold)
    rows = [{"row": i, "path": str(test.paths[i]), "true": int(test.labels[i]),
             "true_name": class_names[test.labels[i]],
             **{f"p_{name}": f"{p:.8g}" for name, p in zip(class_names, proba[i])},
             "predicted": int(predicted[i]), "predicted_name": class_names[predicted[i]]} for i in range(len(test))]
    return _csv(rows)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
