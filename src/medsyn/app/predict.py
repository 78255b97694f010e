"""Image files -> the model's input (the training preprocessing) -> per-class probabilities and a label.

Everything but the network's forward pass is numpy and shared by both backends (torch, onnxruntime): decoding with
its limits, the square resize, the channels, the normalization and the softmax. So this module never imports torch.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from medsyn.data.images import BadImage, is_image_file, load_image, resize_square, to_channels
from medsyn.errors import MedsynError
from medsyn.fileio import refuse_overwrite, write_text

BATCH = 64


def preprocess_image(image: np.ndarray, prep: dict) -> np.ndarray:
    """A decoded uint8 image (H, W) or (H, W, 3) -> (S, S, C) uint8, exactly as the data stage prepared training."""
    square = resize_square(image, prep["image_size"], prep["aspect"])
    return np.array(to_channels(square, prep["channels"]))   # a writable copy: PIL's arrays are read-only


def network_input(images: np.ndarray, norm: dict) -> np.ndarray:
    """uint8 (N, S, S, C) -> float32 (N, C, S, S): pixel / scale, then (x - mean) / std per channel, in float32 and
    in that order, so the values are bit for bit those of training's `medsyn.tensors.to_tensor`."""
    mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
    pixels = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    return (pixels / np.float32(norm["scale"]) - mean) / std


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def expand_paths(inputs) -> list[Path]:
    """Files as given, folders searched recursively for image files (sorted)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise MedsynError(f"{item}: no PNG, JPEG, BMP, TIFF or DICOM files in this folder.")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise MedsynError(f"{item}: no such file or folder.")
    return paths


def threshold_value(threshold: dict | None) -> float | None:
    """The val-chosen threshold on p(class 1) of a binary model; None (argmax) for several classes."""
    return None if threshold is None or threshold.get("value") is None else float(threshold["value"])


def decide(probs: np.ndarray, threshold) -> np.ndarray:
    """The labels exactly as training scored them: binary at the val-chosen threshold on p(class 1), else argmax."""
    from medsyn.metrics import predict_labels

    return predict_labels(probs, threshold_value(threshold) if probs.shape[1] == 2 else None)


def predict_arrays(model_file, images: np.ndarray) -> np.ndarray:
    """(N, S, S, C) uint8, preprocessed as the card says -> (N, n_classes) probabilities, in batches of BATCH."""
    norm = model_file.card["preprocessing"]["normalization"]
    n_classes = len(model_file.class_names)
    logits = []
    for start in range(0, len(images), BATCH):
        batch = network_input(images[start:start + BATCH], norm)
        logits.append(model_file.forward(batch))
        if logits[-1].shape != (len(batch), n_classes):
            raise MedsynError(f"{model_file.path}: the network gave outputs shaped {logits[-1].shape} for "
                              f"{len(batch)} images, not ({len(batch)}, {n_classes}) as its {n_classes} classes "
                              "need; the file is damaged or was edited: export the model again.")
    return softmax(np.concatenate(logits))


def predict_files(model_file, inputs, skip_bad: bool = False) -> list[dict]:
    """One row per image: path, label, its probability, and p(<class>) for every class."""
    paths = expand_paths(inputs)
    prep = model_file.card["preprocessing"]
    images, good, bad = [], [], []
    for path in paths:
        try:
            images.append(preprocess_image(load_image(path), prep))
            good.append(path)
        except BadImage as err:
            bad.append(f"{path}: {err}")
    if bad and not skip_bad:
        raise MedsynError(f"{len(bad)} file(s) cannot be read as images:\n  " + "\n  ".join(bad) +
                          "\nfix or remove them, or pass --skip-bad to leave them out.")
    if not good:
        raise MedsynError("no readable image to predict.")
    probs = predict_arrays(model_file, np.stack(images))
    labels = decide(probs, model_file.card.get("threshold"))
    names = model_file.class_names
    return [{"path": str(path), "label": names[k], "probability": float(p[k]),
             **{f"p_{name}": float(p[j]) for j, name in enumerate(names)}}
            for path, p, k in zip(good, probs, labels)]


def format_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    cells = [[row[c] if isinstance(row[c], str) else f"{row[c]:.4f}" for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a bad --out before any work: an unknown type, or an existing file without --overwrite."""
    if out.suffix.lower() not in (".csv", ".json"):
        raise MedsynError(f"{out}: unknown output type {out.suffix!r}; use a .csv or .json file name.")
    refuse_overwrite(out, overwrite)


def write_predictions(rows: list[dict], out: Path, card: dict, overwrite: bool = False) -> None:
    """CSV (one row per image) or JSON (rows plus the model's threshold and notice), chosen by the suffix."""
    check_output(out, overwrite)
    if out.suffix.lower() == ".json":
        payload = {"threshold": card.get("threshold"), "class_names": card["class_names"],
                   "notice": card.get("notice"), "predictions": rows}
        write_text(out, json.dumps(payload, indent=2) + "\n")
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(out, buffer.getvalue())
