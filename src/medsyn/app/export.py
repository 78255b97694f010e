"""The portable model file: one trained classifier with everything needed to apply it and to judge it.

A model file is the classifier's own self-describing checkpoint (`medsyn.classify`'s model.pt: weights,
architecture, preprocessing, class names, threshold) plus a `model_card`: what data and arm it was trained on,
how its seed was chosen (validation only, never test), its test metrics and the arm's confidence intervals.
It holds only tensors and plain values, so it loads with `torch.load(weights_only=True)`: no pickled code runs.
`export --onnx` also writes the network as an ONNX file carrying the same card in its metadata: a complete model file
that predict and serve run with onnxruntime, without importing torch (a far smaller process).

The best seed of an arm is the one with the best *validation* metric; the test split never chooses anything.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medsyn import __version__
from medsyn.config import ASPECT_POLICIES, MAX_SIZE
from medsyn.errors import MedsynError
from medsyn.fileio import (NUMBER, Field, atomic_path, check_fields, load_tensors, parse_json, read_json,
                           refuse_overwrite, sha256_file)

MODEL_FORMAT = "medsyn-model"
MODEL_VERSION = 1
NOTICE = ("Research use only. Not a medical device: not validated for diagnosis, and not to be used for clinical "
          "decisions. The metrics below were measured on one held-out test split and may not hold on your images.")
# Validation metrics that pick the best seed, in order of preference: (name, higher is better).
SELECTION_METRICS = (("auc", True), ("balanced_accuracy", True), ("accuracy", True))
# The schemas of what export and predict read back: a seed's val_metrics.json, the classifier's own fields in its
# model.pt (the preprocessing and the decision), and an exported file's model card.
VAL_METRICS = {name: Field(NUMBER, 0, 1, optional=name == "auc") for name, _ in SELECTION_METRICS}
PREPROCESSING = {"image_size": Field(int, 1, MAX_SIZE), "channels": Field(int, choices=(1, 3)),
                 "aspect": Field(str, choices=ASPECT_POLICIES),
                 "normalization": Field(dict, fields={"scale": Field(NUMBER, 1, 65535),
                                                      "mean": Field(list, items=Field(NUMBER, -1e3, 1e3)),
                                                      "std": Field(list, items=Field(NUMBER, 1e-6, 1e3))})}
THRESHOLD = Field(dict, optional=True, fields={"rule": str, "value": Field(NUMBER, 0, 1, optional=True)})
CLASSIFIER = {"class_names": Field(list, items=str), "threshold": THRESHOLD, "arch": dict, "state_dict": dict,
              **PREPROCESSING}
CARD = {"notice": str, "class_names": Field(list, items=str), "threshold": THRESHOLD,
        "preprocessing": Field(dict, fields=PREPROCESSING)}
MODEL_FIX = ("the file is damaged or was edited: export the model again (`medsyn export RUN_DIR --out MODEL`), or, "
             "for a run's own model.pt, train its arm again")
# An ONNX model file: the network, and in its metadata under ONNX_KEY the model file's format and card as JSON.
ONNX_KEY = "medsyn"
ONNX_METADATA = {"model_file": Field(dict, fields={"format": Field(str, choices=(MODEL_FORMAT,)),
                                                   "version": Field(int, choices=(MODEL_VERSION,))}),
                 "model_card": Field(dict, fields=CARD)}
ONNX_FIX = "export it again: `medsyn export RUN_DIR --out MODEL.pt --onnx` writes MODEL.onnx beside MODEL.pt"
ONNX_INSTALL = "pip install 'medsyn[onnx]'"

log = logging.getLogger(__name__)


@dataclass
class ModelFile:
    """A loaded model file: its model card and its network, as `forward`: normalized float32 inputs (N, C, S, S)
    -> float32 logits (N, n_classes), run by torch or by onnxruntime (`backend`)."""
    card: dict
    path: Path
    forward: Callable[[np.ndarray], np.ndarray]
    backend: str                                  # "torch" or "onnxruntime"
    model: Any = None                             # the torch network, for Grad-CAM; None on the ONNX path
    lock: Any = field(default=None, repr=False)   # set by the server: one forward/backward pass at a time

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])


# ---------------------------------------------------------------- choosing the seed

def metric_value(metrics: dict, name: str) -> float | None:
    """A metric of val_metrics.json, or None where it is undefined (e.g. AUC of a one-class val split)."""
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def selection_metric(candidates: dict[str, dict]) -> tuple[str, bool]:
    """The first preferred validation metric that every candidate has."""
    for name, higher in SELECTION_METRICS:
        if all(metric_value(m, name) is not None for m in candidates.values()):
            return name, higher
    have = sorted({k for m in candidates.values() for k in m})
    raise MedsynError(f"no validation metric shared by all seeds to choose the best one; expected one of "
                      f"{', '.join(n for n, _ in SELECTION_METRICS)}, found {', '.join(have) or 'none'}.")


def seed_dirs(arm_dir: Path) -> list[Path]:
    dirs = sorted((p for p in arm_dir.glob("seed*") if (p / "model.pt").is_file()),
                  key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    return dirs


def val_metrics(seed_dir: Path) -> dict:
    path = seed_dir / "val_metrics.json"
    if not path.is_file():
        raise MedsynError(f"{path} is missing: the seed's validation metrics are needed to choose the best seed; "
                          "re-run the classify stage for this arm (`medsyn run --resume`).")
    return read_json(path, VAL_METRICS)


def choose(run_dir: Path, arm: str | None) -> tuple[Path, dict]:
    """The seed folder to export and how it was chosen. A folder holding model.pt is taken as it is."""
    run_dir = Path(run_dir)
    if (run_dir / "model.pt").is_file():
        return run_dir, {"rule": "the given seed folder", "metric": None, "candidates": {}}
    arms_dir = run_dir / "arms"
    arms = sorted(p.name for p in arms_dir.iterdir() if p.is_dir() and seed_dirs(p)) if arms_dir.is_dir() else []
    if not arms:
        raise MedsynError(f"{run_dir}: no trained classifier found; expected a run folder with "
                          "arms/<arm>/seed<k>/model.pt (from `medsyn run`) or a seed folder holding model.pt.")
    if arm is not None and arm not in arms:
        raise MedsynError(f"{run_dir}: no trained arm {arm!r}; trained arms: {', '.join(arms)}.")
    candidates = {f"{a}/{d.name}": val_metrics(d) for a in ([arm] if arm else arms) for d in seed_dirs(arms_dir / a)}
    name, higher = selection_metric(candidates)
    scores = {key: metric_value(m, name) for key, m in candidates.items()}
    best = (max if higher else min)(scores, key=scores.get)   # ties: the first arm/seed in sorted order
    rule = (f"best validation {name} among the seeds of arm {arm}" if arm
            else f"best validation {name} among all arms and seeds")
    return arms_dir / best, {"rule": rule, "metric": name, "higher_is_better": higher, "candidates": scores,
                             "chosen": best}


# ---------------------------------------------------------------- the model card

def arm_results(run_dir: Path, arm: str) -> dict | None:
    """The arm's seed-aggregated test metrics from results.json (`medsyn.stats.paired.summarize_arms`):
    {metric: {mean, std, ci_low, ci_high, ...}} plus how the CIs were made; None before the run's statistics."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = read_json(path, {"arms": dict, "split": str, "n_test": int, "replicates": list, "ci_level": NUMBER,
                               "ci_method": str})
    if arm not in results["arms"]:
        return None
    return {"source": str(path), "split": results["split"], "n_test": results["n_test"],
            "replicates": results["replicates"],
            "ci_level": results["ci_level"], "ci_method": results["ci_method"], "metrics": results["arms"][arm]}


def build_card(seed_dir: Path, checkpoint: dict, selection: dict) -> dict:
    run_dir = seed_dir.parent.parent.parent if seed_dir.parent.parent.name == "arms" else None
    test_path = seed_dir / "test_metrics.json"
    config_path = seed_dir / "config.json"
    arm = checkpoint.get("arm")
    return {
        "notice": NOTICE,
        "class_names": list(checkpoint["class_names"]),
        "threshold": checkpoint.get("threshold"),
        "preprocessing": preprocessing(checkpoint),
        "trained_on": {"data_source": checkpoint.get("data_source"), "arm": arm, "seed": checkpoint.get("seed"),
                       "arch": checkpoint.get("arch"),
                       "config": read_json(config_path) if config_path.is_file() else None},
        "selection": selection,
        "validation_metrics": checkpoint.get("val_metrics"),
        "test_metrics": read_json(test_path) if test_path.is_file() else None,
        "test_metrics_note": "measured once on the held-out real test split, after the seed was chosen on validation",
        "arm_test_metrics": arm_results(run_dir, arm) if run_dir is not None and arm else None,
        "exported_from": {"path": str(seed_dir / "model.pt"), "sha256": sha256_file(seed_dir / "model.pt"),
                          "medsyn_version": __version__},
    }


def preprocessing(meta: dict) -> dict:
    """How a file becomes the network's input: decode, square resize with the training aspect policy, channels,
    then the checkpoint's normalization."""
    return {"image_size": int(meta["image_size"]), "channels": int(meta["channels"]), "aspect": meta["aspect"],
            "normalization": meta.get("normalization")}


# ---------------------------------------------------------------- write and read

def export_model(run_dir: str | Path, out: str | Path, arm: str | None = None, overwrite: bool = False,
                 onnx: bool = False) -> dict:
    """Write the model file for the best seed (by validation) of `arm` (or of the whole run). Returns its card."""
    import torch

    out = Path(out)
    refuse_overwrite(out, overwrite)
    onnx_path = out.with_suffix(".onnx")
    if onnx:
        require_onnx()
        refuse_overwrite(onnx_path, overwrite)
    seed_dir, selection = choose(Path(run_dir), arm)
    checkpoint = read_checkpoint(seed_dir / "model.pt", "medsyn-classifier")
    card = build_card(seed_dir, checkpoint, selection)
    with atomic_path(out) as tmp:
        torch.save({**checkpoint, "model_file": {"format": MODEL_FORMAT, "version": MODEL_VERSION},
                    "model_card": card}, tmp)
    if onnx:
        export_onnx(load_torch(out).model, card, onnx_path)
        card = {**card, "onnx": str(onnx_path)}
    return card


def read_checkpoint(path: Path, expected_format: str | None = None) -> dict:
    checkpoint = load_tensors(path, "model file", f"Create one with `medsyn export RUN_DIR --out {path}`.")
    if "state_dict" not in checkpoint or "class_names" not in checkpoint:
        raise MedsynError(f"{path}: not a medsyn model file (no state_dict and class_names); export one with "
                          "`medsyn export RUN_DIR --out MODEL`.")
    if expected_format and checkpoint.get("format") != expected_format:
        raise MedsynError(f"{path}: format {checkpoint.get('format')!r}, expected {expected_format!r}.")
    check_fields(checkpoint, CLASSIFIER, str(path), MODEL_FIX)
    if "model_card" in checkpoint:
        check_fields(checkpoint["model_card"], CARD, f"{path} (its model card)", MODEL_FIX)
    return checkpoint


def load_model_file(path: str | Path) -> ModelFile:
    """A model file ready for `predict_files` and the server: an ONNX one (`*.onnx`, from `medsyn export --onnx`)
    runs with onnxruntime and never imports torch; any other (an exported model.pt, or a run's own model.pt with a
    minimal card) runs with torch, and one log line says how to run it without."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return load_onnx(path)
    model_file = load_torch(path)
    log.info(f"medsyn: note: running the network with torch; the ONNX path runs it without torch in far less "
             f"memory: `{ONNX_INSTALL}`, `medsyn export RUN_DIR --out {path.name} --onnx`, then "
             f"--model {path.with_suffix('.onnx').name}")
    return model_file


def load_torch(path: Path) -> ModelFile:
    """A torch model file (an exported one, or a run's model.pt with a minimal card), its network in eval mode."""
    from medsyn import classify

    checkpoint = read_checkpoint(path)
    model, _ = classify.load_model(path)
    card = checkpoint.get("model_card") or {
        "notice": NOTICE, "class_names": list(checkpoint["class_names"]), "threshold": checkpoint.get("threshold"),
        "preprocessing": preprocessing(checkpoint),
        "trained_on": {"data_source": checkpoint.get("data_source"), "arm": checkpoint.get("arm"),
                       "seed": checkpoint.get("seed"), "arch": checkpoint.get("arch")},
        "validation_metrics": checkpoint.get("val_metrics"), "test_metrics": None,
        "note": "a bare checkpoint, not an exported model file: no test metrics; use `medsyn export`"}
    return ModelFile(card=card, path=path, forward=torch_forward(model), backend="torch", model=model)


def torch_forward(model) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def forward(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(inputs)).float().numpy()
    return forward


# ---------------------------------------------------------------- ONNX

def require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError as err:
        raise MedsynError("--onnx needs the `onnx` package, which is not installed: `pip install onnx`, "
                          "or export without --onnx (the .pt model file is complete on its own).") from err


def export_onnx(model, card: dict, path: Path) -> None:
    """The network alone, input (N, C, H, W) float already normalized as in the card's preprocessing, output the
    logits; the card goes into the file's metadata, so that the file alone is a model file for predict and serve."""
    import warnings

    import onnx
    import torch

    prep = card["preprocessing"]
    example = torch.zeros(1, prep["channels"], prep["image_size"], prep["image_size"])
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)   # the input size is fixed, as traced
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        network = onnx.load(str(tmp))
        onnx.helper.set_model_props(network, {ONNX_KEY: json.dumps(
            {"model_file": {"format": MODEL_FORMAT, "version": MODEL_VERSION}, "model_card": card})})
        onnx.save(network, str(tmp))


def load_onnx(path: Path) -> ModelFile:
    """An ONNX model file, checked: onnxruntime loads it in the ONNX format only, with no custom-op library (none is
    ever registered) and external data confined to the file's folder (onnxruntime refuses paths out of it); its
    card is read with the .pt card's schema, and its input and output must be the ones the card implies."""
    ort = onnxruntime()
    if not path.is_file():
        raise MedsynError(f"model file {path}: no such file. {ONNX_FIX}.")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.load_model_format", "ONNX")  # not onnxruntime's own ORT format
    options.log_severity_level = 3  # its warnings about a hostile file are this function's error instead
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's load errors (InvalidProtobuf, Fail, InvalidGraph...) share no other base
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", str(err).replace(f"Load model from {path} failed:", ""))
        reason = reason.strip().splitlines()[0][:300] if reason.strip() else type(err).__name__
        raise MedsynError(f"{path}: not an ONNX network onnxruntime can load ({reason}); {ONNX_FIX}.") from None
    where = f"{path} (its model card)"
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_KEY)
    if text is None:
        raise MedsynError(f"{where}: an ONNX file without medsyn's model card (class names, threshold, "
                          f"preprocessing) in its metadata; {ONNX_FIX}.")
    saved = parse_json(text, where, MODEL_FIX)
    check_fields(saved, ONNX_METADATA, where, MODEL_FIX)
    check_signature(session, saved["model_card"], path)
    return ModelFile(card=saved["model_card"], path=path, forward=onnx_forward(session), backend="onnxruntime")


def onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise MedsynError(f"an ONNX model file needs onnxruntime, which is not installed: `{ONNX_INSTALL}`; or pass "
                          "the .pt model file, which runs with torch.") from err
    return ort


def check_signature(session, card: dict, path: Path) -> None:
    """One float input (batch, C, S, S) and one float output (batch, n_classes), as the card says."""
    prep = card["preprocessing"]
    size, channels, n_classes = prep["image_size"], prep["channels"], len(card["class_names"])
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def batched(arg, rest: list) -> bool:
        return arg.type == "tensor(float)" and not isinstance(arg.shape[0], int) and list(arg.shape[1:]) == rest

    if not (len(inputs) == len(outputs) == 1 and len(inputs[0].shape) == 4 and len(outputs[0].shape) == 2
            and batched(inputs[0], [channels, size, size]) and batched(outputs[0], [n_classes])):
        shown = "; ".join(f"{kind} {a.name!r} {a.type} {a.shape}" for kind, args in
                          (("input", inputs), ("output", outputs)) for a in args)
        raise MedsynError(f"{path}: the network's inputs and outputs ({shown}) are not what its model card needs: "
                          f"one float input (batch, {channels}, {size}, {size}) and one float output (batch, "
                          f"{n_classes}); {ONNX_FIX}.")


def onnx_forward(session) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda inputs: session.run(None, {name: inputs})[0]
