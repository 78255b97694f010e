"""A corpus of bad and hostile inputs for every verb (issue 12): each must stop with `medsyn: error: ...`, exit code
2, a message naming the problem, no traceback, nothing written and nothing of the user's replaced.

Every case runs `medsyn.cli.main` in-process on tiny real files made here; none trains anything.
"""

from __future__ import annotations

import hashlib
import io
import re
import os
import shutil
import socket
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import CHEST_XRAY_SMALL
from medsyn.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import predict_memory as memory  # noqa: E402  (benchmarks/predict_memory.py: the hostile files and the measure)

XRAYS = sorted((CHEST_XRAY_SMALL / "train" / "NORMAL").iterdir())


class Payload:
    """Unpickling this object creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _npz(path: Path, images=None, labels=None, **extra) -> Path:
    """A MedMNIST-layout npz: 2 classes x 6 images of 8x8 per split, unless told otherwise."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8) if images is None else images
    labels = np.repeat([0, 1], len(images) // 2) if labels is None else labels
    np.savez(path, **{f"{s}_{k}": v for s in ("train", "val", "test") for k, v in
                      (("images", images), ("labels", labels))}, **extra)
    return path


def _huge_header_npz(path: Path, shape=(1_000_000, 1000, 1000)) -> Path:
    """An npz whose train_images header declares `shape` (10^12 bytes unless told; the data itself is absent)."""
    _npz(path)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": shape})
    members["train_images.npy"] = header.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _manifest(path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    for i, xray in enumerate(XRAYS[:6]):
        shutil.copyfile(xray, path.parent / f"img{i}.jpeg")
    path.write_bytes(("path,label,split\n" + "\n".join(rows) + "\n").encode(encoding))
    return path


def _model_file(path: Path, width: float, state_width: float) -> Path:
    """A medsyn classifier checkpoint whose architecture says `width` and whose weights are of `state_width`."""
    from medsyn.classify import models

    arch = {"arch": "vgg16", "n_classes": 2, "channels": 1, "width": width, "batch_norm": True, "dropout": 0.4}
    weights = models.build(**{**arch, "width": state_width})
    meta = {"arch": arch, "class_names": ["a", "b"], "image_size": 28, "channels": 1, "aspect": "center-crop",
            "normalization": models.normalization(False, 1), "threshold": None}
    torch.save(models.checkpoint(weights, meta), path)
    return path


def _user_folder(path: Path) -> Path:
    """A folder of the user's own files with names medsyn also writes."""
    path.mkdir()
    (path / "config.json").write_text('{"mine": true}\n')
    (path / "history.csv").write_text("my,own\n1,2\n")
    return path


def _damaged_medsyn_folder(path: Path, verb: str) -> Path:
    """A folder `verb` made (its marker) whose config.json was cut short."""
    path.mkdir()
    (path / ".medsyn").write_text(verb + "\n")
    (path / "config.json").write_text('{"preset": "smo')
    return path


def _generated_folder(path: Path) -> Path:
    """A folder `gan generate` wrote (its marker lists its files), into which the user then put a file."""
    (path / "normal").mkdir(parents=True)
    (path / "normal" / "0.png").write_bytes(b"png")
    (path / "manifest.json").write_text("{}\n")
    (path / ".medsyn").write_text("gan generate\nmanifest.json\nnormal/0.png\n")
    (path / "my-notes.txt").write_text("the user's own notes\n")
    return path


RESULTS = {"arms": {"real": {}}, "split": "test", "n_test": 10, "replicates": [0], "comparisons": [],
           "ci_level": 0.95, "ci_method": "bootstrap"}


def _run_folder(path: Path, config=None, results=None) -> Path:
    """A run folder as `medsyn run` leaves it, with config.json or results.json replaced."""
    import json

    (path / "arms" / "real" / "seed0").mkdir(parents=True)
    (path / ".medsyn").write_text("run\n")
    (path / "config.json").write_text(config if config is not None else json.dumps({"arms": ["real"], "seeds": [0]}))
    (path / "data.json").write_text(json.dumps({"class_names": ["a", "b"], "source": "x"}))
    (path / "results.json").write_text(json.dumps(results if results is not None else RESULTS))
    return path


def _edited(source: Path, path: Path, drop: tuple = (), **changes) -> Path:
    """The torch file `source` (a model file, a checkpoint) saved as `path` with keys dropped or replaced."""
    saved = torch.load(source, weights_only=True)
    torch.save({**{k: v for k, v in saved.items() if k not in drop}, **changes}, path)
    return path


def _with_card(model: Path, path: Path, threshold=None, **preprocessing) -> Path:
    """`model` with a model card as `medsyn export` writes one, its threshold or preprocessing fields replaced."""
    from medsyn.app.export import NOTICE, preprocessing as preprocessing_of

    saved = torch.load(model, weights_only=True)
    card = {"notice": NOTICE, "class_names": saved["class_names"], "threshold": threshold or saved["threshold"],
            "preprocessing": {**preprocessing_of(saved), **preprocessing}}
    return _edited(model, path, model_card=card, model_file={"format": "medsyn-model", "version": 1})


def _onnx_classifier(path: Path, side: int = 28, outputs: int = 1, domain: str = "", location: str | None = None,
                     card: dict | None = None, card_text: str | None = None) -> Path:
    """The smallest ONNX model file medsyn reads (image (batch, 1, side, side) -> mean pixel -> logits (batch, 2)),
    with medsyn's card in its metadata as `export --onnx` writes it; each argument makes one thing hostile: the input
    side, the number of outputs, the pooling op's domain (a custom op), the weights' external-data location, the
    card's fields, or the metadata's text (None: no card)."""
    import json

    from onnx import TensorProto, helper, numpy_helper

    from medsyn.app.export import NOTICE
    from medsyn.classify.models import normalization

    weights = numpy_helper.from_array(np.array([[1.0, -1.0]], np.float32), "weights")
    if location is not None:
        weights.ClearField("raw_data")
        weights.data_location = TensorProto.EXTERNAL
        for key, value in {"location": location, "offset": "0", "length": "8"}.items():
            entry = weights.external_data.add()
            entry.key, entry.value = key, value
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"], domain=domain),
             helper.make_node("Flatten", ["pooled"], ["flat"]), helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
             helper.make_node("Identity", ["logits"], ["copy"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["batch", 1, side, side])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 2])
                               for name in ("logits", "copy")[:outputs]], [weights])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    card = card or {"notice": NOTICE, "class_names": ["a", "b"], "threshold": None,
                    "preprocessing": {"image_size": 28, "channels": 1, "aspect": "center-crop",
                                      "normalization": normalization(False, 1)}}
    text = card_text if card_text is not None else json.dumps(
        {"model_file": {"format": "medsyn-model", "version": 1}, "model_card": card})
    if text:
        helper.set_model_props(model, {"medsyn": text})
    path.write_bytes(model.SerializeToString())
    return path


def _hostile_onnx(folder: Path) -> dict[str, Path]:
    """A folder of ONNX model files, one sound and the others each hostile in one way."""
    folder.mkdir()
    (folder.parent / "secret.bin").write_bytes(np.array([1.0, 2.0], np.float32).tobytes())  # outside the folder
    onnx = {"sound": _onnx_classifier(folder / "sound.onnx"),
            "external_outside": _onnx_classifier(folder / "external.onnx", location="../secret.bin"),
            "custom_op": _onnx_classifier(folder / "custom.onnx", domain="com.example.evil"),
            "input_32": _onnx_classifier(folder / "input32.onnx", side=32),
            "two_outputs": _onnx_classifier(folder / "two.onnx", outputs=2),
            "without_card": _onnx_classifier(folder / "bare.onnx", card_text=""),
            "card_not_json": _onnx_classifier(folder / "cardtext.onnx", card_text="{not json"),
            "card_threshold_high": _onnx_classifier(folder / "high.onnx", card={
                "notice": "x", "class_names": ["a", "b"], "threshold": {"rule": "youden_j_on_val", "value": "high"},
                "preprocessing": {"image_size": 28, "channels": 1, "aspect": "center-crop",
                                  "normalization": {"scale": 255.0, "mean": [0.5], "std": [0.25]}}})}
    onnx["not_protobuf"] = folder / "text.onnx"
    onnx["not_protobuf"].write_text("a text file named like an ONNX model\n")
    onnx["truncated"] = folder / "truncated.onnx"
    onnx["truncated"].write_bytes(onnx["sound"].read_bytes()[:200])
    return onnx


def _run_to_export(path: Path, model: Path, val=None, results=None) -> Path:
    """A run folder holding arms/real/seed0 with `model` and its val_metrics.json, as `medsyn export` reads it."""
    import json

    _run_folder(path, results=results)
    seed = path / "arms" / "real" / "seed0"
    shutil.copyfile(model, seed / "model.pt")
    (seed / "val_metrics.json").write_text(json.dumps(val if val is not None else {
        "split": "val", "accuracy": 0.5, "balanced_accuracy": 0.5, "auc": 0.5}))
    return path


def _sparse_png_folder(root: Path) -> Path:
    """An image folder where one `.png` is a sparse file of 1 TiB (a PNG signature, then a hole)."""
    for label, files in (("NORMAL", XRAYS[:3]), ("SICK", XRAYS[3:6])):
        (root / label).mkdir(parents=True)
        for xray in files:
            shutil.copyfile(xray, root / label / xray.name)
    with open(root / "SICK" / "huge.png", "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(1 << 40)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad-inputs")
    w = SimpleNamespace(root=root, marker=root / "PWNED")
    w.payload = root / "payload.pt"
    torch.save({"format": "medsyn-gan-checkpoint", "info": Payload(w.marker)}, w.payload)
    w.payload_npz = root / "payload.npz"
    _npz(w.payload_npz, labels=np.array([Payload(w.marker)] * 12, dtype=object))
    (root / "payload_seed").mkdir()
    shutil.copyfile(w.payload, root / "payload_seed" / "model.pt")
    w.jpeg = XRAYS[0]
    w.npz = {name: _npz(root / f"{name}.npz", **kw) for name, kw in {
        "fractional_labels": {"labels": np.linspace(0, 1, 12)},
        "nan_labels": {"labels": np.r_[np.zeros(11), np.nan]},
        "huge_float_label": {"labels": np.r_[np.zeros(11), 1e30]},
        "string_labels": {"labels": np.array(["a", "b"] * 6)},
        "text_images": {"images": np.full((12, 8, 8), "x")},
        "nan_images": {"images": np.full((12, 8, 8), np.nan)},
        "zero_rows": {"images": np.zeros((0, 8, 8), np.uint8), "labels": np.zeros(0, np.int64)},
    }.items()}
    w.npz["huge_header"] = _huge_header_npz(root / "huge_header.npz")
    w.npz["one_of_a_class"] = root / "one_of_a_class.npz"
    images = np.random.default_rng(1).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    np.savez(w.npz["one_of_a_class"], train_images=images, train_labels=np.r_[np.zeros(11, int), 1],
             val_images=images[:0], val_labels=np.zeros(0, int), test_images=images[:0], test_labels=np.zeros(0, int))
    for name in ("case_labels", "space_labels", "empty_label", "missing_label", "latin1"):
        (root / name).mkdir()
    w.case_labels = _manifest(root / "case_labels" / "m.csv", ["img0.jpeg,Normal,", "img1.jpeg,normal,",
                                                               "img2.jpeg,Sick,"])
    w.space_labels = _manifest(root / "space_labels" / "m.csv", ["img0.jpeg,Normal,", "img1.jpeg, Normal,",
                                                                 "img2.jpeg,Sick,"])
    w.empty_label = _manifest(root / "empty_label" / "m.csv", ["img0.jpeg,a,", "img1.jpeg,,", "img2.jpeg,b,"])
    w.missing_label = _manifest(root / "missing_label" / "m.csv", ["img0.jpeg,a,", "img1.jpeg", "img2.jpeg,b,"])
    w.latin1 = _manifest(root / "latin1" / "m.csv", ["img0.jpeg,Pneumonie,", "img1.jpeg,Gesundé,"], "latin-1")
    w.split_names = root / "split_names"
    for split in ("training", "testing"):
        (w.split_names / split / "NORMAL").mkdir(parents=True)
        shutil.copyfile(XRAYS[0], w.split_names / split / "NORMAL" / "a.jpeg")
    w.mismatched_model = _model_file(root / "mismatched.pt", width=0.125, state_width=0.0625)
    w.model = _model_file(root / "model.pt", width=0.0625, state_width=0.0625)
    w.unknown_gan = root / "unknown_gan.pt"
    torch.save({"format": "medsyn-gan-checkpoint", "version": 1, "generator_ema": {},
                "info": {"model": "stylegan9", "size": 28, "channels": 1, "class_names": ["a", "b"],
                         "normalization": "tanh", "latent": "normal", "latent_dim": 8, "base_width": 4}},
               w.unknown_gan)
    w.corrupt_run = root / "corrupt_run"
    (w.corrupt_run / "arms" / "real" / "seed0").mkdir(parents=True)
    for name in ("config.json", "data.json", "results.json"):
        (w.corrupt_run / name).write_text("{not json")
    shutil.copyfile(w.model, w.corrupt_run / "arms" / "real" / "seed0" / "model.pt")
    (w.corrupt_run / "arms" / "real" / "seed0" / "val_metrics.json").write_text("{\"auc\": ")
    w.wrong_shape_run = root / "wrong_shape_run"
    w.wrong_shape_run.mkdir()
    for name in ("config.json", "data.json", "results.json"):
        (w.wrong_shape_run / name).write_text("[1, 2, 3]\n")
    w.npz["mixed_dtypes"] = root / "mixed_dtypes.npz"
    unit = images.astype(np.float32) / 255
    np.savez(w.npz["mixed_dtypes"], train_images=images, train_labels=np.repeat([0, 1], 6), val_images=unit,
             val_labels=np.repeat([0, 1], 6), test_images=unit, test_labels=np.repeat([0, 1], 6))
    for name, names in {"case_class_names": ["Normal", "NORMAL"], "empty_class_name": ["a", " "],
                        "numeric_class_names": ["1", "01"], "scalar_class_names": np.array("a,b")}.items():
        w.npz[name] = _npz(root / f"{name}.npz", class_names=np.array(names))
    w.npz["uint64_label"] = _npz(root / "uint64_label.npz",
                                 labels=np.r_[np.zeros(11, np.uint64), np.uint64(2 ** 64 - 1)])
    w.npz["label_1e9"] = _npz(root / "label_1e9.npz", labels=np.r_[np.zeros(10, np.int64), 1, 10 ** 9])
    (root / "folder_row").mkdir()
    (root / "folder_row" / "sub").mkdir()
    w.folder_row = _manifest(root / "folder_row" / "m.csv", ["img0.jpeg,a,", "sub,a,", "img2.jpeg,b,"])
    w.a_file = root / "a_file.txt"
    w.a_file.write_text("not a folder\n")
    w.existing = root / "existing.csv"
    w.existing.write_text("the user's predictions\n")
    youden = {"rule": "youden_j_on_val", "value": 0.4}
    w.cards = {"threshold_high": _with_card(w.model, root / "high.pt", {"rule": "youden_j_on_val", "value": "high"}),
               "fisheye": _with_card(w.model, root / "fisheye.pt", youden, aspect="fisheye"),
               "size_0": _with_card(w.model, root / "size0.pt", youden, image_size=0)}
    w.model_without_size = _edited(w.model, root / "no-size.pt", drop=("image_size",))
    w.model_of_arm = _edited(w.model, root / "arm.pt", arm="real", seed=0, threshold=youden)
    w.onnx = _hostile_onnx(root / "onnx")
    w.gan_step_text = root / "gan_step_text.pt"
    torch.save({"format": "medsyn-gan-checkpoint", "version": 1, "generator_ema": {}, "step": "ten",
                "images_seen": 0, "train_seconds": 0.0,
                "info": {"model": "cgan", "size": 28, "channels": 1, "class_names": ["a", "b"],
                         "normalization": "tanh", "latent": "normal", "latent_dim": 8, "base_width": 4,
                         "data_source": "x", "train_counts": [6, 6]}}, w.gan_step_text)
    return w


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# (case id, argv from the world and a fresh output path, words the message must contain)
CASES = [
    # 1. code execution: every file medsyn reads is loaded without running pickled code
    ("pickle-gan-checkpoint", lambda w, o: ["gan", "generate", "--checkpoint", w.payload, "--n", "2", "--out", o],
     "can load safely"),
    ("pickle-model-predict", lambda w, o: ["predict", "--model", w.payload, str(w.jpeg)], "can load safely"),
    ("pickle-model-serve", lambda w, o: ["serve", "--model", w.payload, "--port", str(_free_port())],
     "can load safely"),
    ("pickle-model-export", lambda w, o: ["export", w.root / "payload_seed", "--out", o / "m.pt"],
     "can load safely"),
    ("pickle-inception-weights", lambda w, o: ["audit", "--synthetic", w.payload_npz, "--inception-weights",
                                               w.payload, "--out", o], "safely"),
    ("missing-inception-weights", lambda w, o: ["audit", "--synthetic", w.payload_npz, "--inception-weights",
                                                w.root / "nope.pth", "--out", o], "no such file"),
    ("pickle-npz-data", lambda w, o: ["data", "info", w.payload_npz], "Python objects"),
    ("pickle-npz-synthetic", lambda w, o: ["classify", "train", "--preset", "smoke", "--synthetic", w.payload_npz,
                                           "--arm", "synth", "--out", o], "Python objects"),
    # 2. silent corruption: every dtype converts correctly or is refused
    ("fractional-labels", lambda w, o: ["data", "info", w.npz["fractional_labels"]], "not whole class indices"),
    ("huge-float-label", lambda w, o: ["data", "info", w.npz["huge_float_label"]], "is 1e+30"),
    ("nan-label", lambda w, o: ["data", "info", w.npz["nan_labels"]], "row 11 is nan"),
    ("string-labels", lambda w, o: ["data", "info", w.npz["string_labels"]], "class indices"),
    ("text-images", lambda w, o: ["data", "prepare", w.npz["text_images"], "--out", o / "x.npz"],
     "images must be numbers"),
    ("nan-images", lambda w, o: ["gan", "train", "--data", w.npz["nan_images"], "--preset", "smoke", "--out", o],
     "NaN"),
    ("huge-header", lambda w, o: ["data", "info", w.npz["huge_header"]], "GiB"),
    # 3. leaks and silent new classes
    ("labels-differ-by-case", lambda w, o: ["data", "info", w.case_labels], "differ only by case"),
    ("labels-differ-by-space", lambda w, o: ["data", "info", w.space_labels], "differ only by case or spaces"),
    ("empty-label", lambda w, o: ["data", "info", w.empty_label], "no path or no label"),
    ("split-named-folders", lambda w, o: ["data", "info", w.split_names], "look like splits"),
    # 4. clobbering: a user's files are never replaced
    ("clobber-classify", lambda w, o: ["classify", "train", "--arm", "real", "--out", _user_folder(o)],
     "did not write"),
    ("clobber-audit", lambda w, o: ["audit", "--synthetic", w.payload_npz, "--out", _user_folder(o)],
     "did not write"),
    ("clobber-gan-train", lambda w, o: ["gan", "train", "--preset", "smoke", "--out", _user_folder(o)],
     "did not write"),
    ("clobber-run", lambda w, o: ["run", "--preset", "smoke", "--out", _user_folder(o)], "did not write"),
    ("clobber-generate-overwrite", lambda w, o: ["gan", "generate", "--checkpoint", w.unknown_gan, "--n", "2",
                                                 "--out", _user_folder(o), "--overwrite"], "did not write"),
    ("clobber-predict", lambda w, o: ["predict", "--model", w.model, str(w.jpeg), "--out", w.existing],
     "already exists"),
    # 5. half-made outputs: a failing command makes no folder
    ("classify-bad-width", lambda w, o: ["classify", "train", "--arm", "real", "--width", "0", "--out", o],
     "width"),
    ("classify-bad-device", lambda w, o: ["classify", "train", "--arm", "real", "--device", "tpu:9", "--out", o],
     "device"),
    ("classify-cuda-without-gpu", lambda w, o: ["classify", "train", "--arm", "real", "--device", "cuda:7",
                                                "--out", o], "cuda"),
    ("run-missing-data", lambda w, o: ["run", "--preset", "smoke", "--data", w.root / "nope", "--out", o],
     "no such file"),
    ("run-bad-data", lambda w, o: ["run", "--preset", "smoke", "--data", w.npz["string_labels"], "--out", o],
     "class indices"),
    # 6. --resume only what medsyn made
    ("resume-run-foreign", lambda w, o: ["run", "--preset", "smoke", "--resume", "--out", _user_folder(o)],
     "not made by medsyn"),
    ("resume-gan-foreign", lambda w, o: ["gan", "train", "--preset", "smoke", "--resume", "--out", _user_folder(o)],
     "not made by medsyn"),
    ("resume-run-damaged-config", lambda w, o: ["run", "--preset", "smoke", "--resume",
                                                "--out", _damaged_medsyn_folder(o, "run")], "not readable JSON"),
    ("resume-gan-damaged-config", lambda w, o: ["gan", "train", "--preset", "smoke", "--resume",
                                                "--out", _damaged_medsyn_folder(o, "gan train")], "not readable JSON"),
    ("resume-run-in-a-gan-folder", lambda w, o: ["run", "--preset", "smoke", "--resume",
                                                 "--out", _damaged_medsyn_folder(o, "gan train")],
     "made by `medsyn gan train`"),
    # 7. tracebacks: each is a message now
    ("out-parent-is-file", lambda w, o: ["classify", "train", "--arm", "real", "--out", w.a_file / "run"],
     "is a file"),
    ("prepare-parent-is-file", lambda w, o: ["data", "prepare", "--out", w.a_file / "x.npz"], "is a file"),
    ("predict-out-parent-is-file", lambda w, o: ["predict", "--model", w.model, str(w.jpeg),
                                                 "--out", w.a_file / "p.csv"], "is a file"),
    ("jpeg-as-source", lambda w, o: ["data", "info", w.jpeg], "not a data source"),
    ("dev-null-as-source", lambda w, o: ["data", "info", "/dev/null"], "not a data source"),
    ("manifest-row-without-label", lambda w, o: ["data", "info", w.missing_label], "no path or no label"),
    ("manifest-not-utf8", lambda w, o: ["data", "info", w.latin1], "not UTF-8"),
    ("model-weights-mismatch", lambda w, o: ["predict", "--model", w.mismatched_model, str(w.jpeg)],
     "do not match"),
    ("gan-unknown-model", lambda w, o: ["gan", "generate", "--checkpoint", w.unknown_gan, "--n", "2", "--out", o],
     "stylegan9"),
    ("report-corrupt-json", lambda w, o: ["report", w.corrupt_run], "not readable JSON"),
    ("report-json-of-another-shape", lambda w, o: ["report", w.wrong_shape_run], "lacks"),
    ("export-corrupt-json", lambda w, o: ["export", w.corrupt_run, "--arm", "real", "--out", o / "m.pt"],
     "not readable JSON"),
    ("batch-size-1", lambda w, o: ["classify", "train", "--arm", "real", "--batch-size", "1", "--out", o],
     "batch"),
    ("serve-port-out-of-range", lambda w, o: ["serve", "--model", w.model, "--port", "70000"], "1 to 65535"),
    # issue 21: a hostile ONNX model file is refused as it loads (no code runs, no file outside its folder is read)
    ("onnx-not-protobuf", lambda w, o: ["predict", "--model", w.onnx["not_protobuf"], str(w.jpeg), "--out",
                                        o / "p.csv"], "not an ONNX network onnxruntime can load (INVALID_PROTOBUF : Protobuf parsing failed.)"),
    ("onnx-truncated", lambda w, o: ["predict", "--model", w.onnx["truncated"], str(w.jpeg), "--out", o / "p.csv"],
     "not an ONNX network onnxruntime can load"),
    ("onnx-truncated-serve", lambda w, o: ["serve", "--model", w.onnx["truncated"], "--port", str(_free_port())],
     "not an ONNX network onnxruntime can load"),
    ("onnx-custom-op", lambda w, o: ["predict", "--model", w.onnx["custom_op"], str(w.jpeg)],
     "com.example.evil:GlobalAveragePool(-1) is not a registered function/op"),
    ("onnx-external-data-outside-its-folder", lambda w, o: ["predict", "--model", w.onnx["external_outside"],
                                                            str(w.jpeg)], "escapes model directory"),
    ("onnx-wrong-input-shape", lambda w, o: ["predict", "--model", w.onnx["input_32"], str(w.jpeg)],
     "(input 'image' tensor(float) ['batch', 1, 32, 32]; output 'logits' tensor(float) ['batch', 2]) are not what "
     "its model card needs: one float input (batch, 1, 28, 28)"),
    ("onnx-two-outputs", lambda w, o: ["serve", "--model", w.onnx["two_outputs"], "--port", str(_free_port())],
     "output 'copy'"),
    ("onnx-without-card", lambda w, o: ["predict", "--model", w.onnx["without_card"], str(w.jpeg)],
     "an ONNX file without medsyn's model card"),
    ("onnx-card-not-json", lambda w, o: ["predict", "--model", w.onnx["card_not_json"], str(w.jpeg)],
     "(its model card): not readable JSON"),
    ("onnx-card-threshold-high", lambda w, o: ["predict", "--model", w.onnx["card_threshold_high"], str(w.jpeg)],
     "model_card.threshold.value"),
    # issue 21, class 2: one label, class-name and dtype rule for every source
    ("npz-splits-of-two-dtypes", lambda w, o: ["data", "info", w.npz["mixed_dtypes"]], "different scales"),
    ("npz-class-names-differ-by-case", lambda w, o: ["data", "info", w.npz["case_class_names"]],
     "differ only by case"),
    ("npz-empty-class-name", lambda w, o: ["data", "info", w.npz["empty_class_name"]], "empty class name"),
    ("npz-class-names-1-and-01", lambda w, o: ["data", "info", w.npz["numeric_class_names"]], "differ only by"),
    ("npz-class-names-0d", lambda w, o: ["data", "info", w.npz["scalar_class_names"]], "1-d array"),
    # issue 21, classes 5 and 7: limits before work, and messages that name the real problem
    ("label-1e9-without-class-names", lambda w, o: ["data", "info", w.npz["label_1e9"]], "at most 10,000 classes"),
    ("uint64-max-label", lambda w, o: ["data", "info", w.npz["uint64_label"]], "label 18446744073709551615"),
    ("manifest-row-names-a-folder", lambda w, o: ["data", "info", w.folder_row], "name a folder"),
    # issue 21, class 3: validation before the folder is made, one validator for numeric flags
    ("classify-synth-arm-without-synthetic", lambda w, o: ["classify", "train", "--arm", "real+synth@1",
                                                           "--out", o], "pass --synthetic"),
    ("classify-lr-inf", lambda w, o: ["classify", "train", "--arm", "real", "--lr", "inf", "--out", o],
     "--lr inf: give a number above 0"),
    ("classify-width-inf", lambda w, o: ["classify", "train", "--arm", "real", "--width", "inf", "--out", o],
     "--width inf"),
    ("gan-train-seed-beyond-32-bits", lambda w, o: ["gan", "train", "--seed", "99999999999999999999999",
                                                    "--out", o], "from 0 to 4294967295"),
    ("generate-seed-beyond-64-bits", lambda w, o: ["gan", "generate", "--checkpoint", w.unknown_gan, "--n", "2",
                                                   "--seed", str(2 ** 64), "--out", o], "from 0 to 4294967295"),
    ("split-seed-negative", lambda w, o: ["data", "info", "--split-seed", "-1"], "--split-seed -1"),
    ("run-fractions-nan", lambda w, o: ["run", "--preset", "smoke", "--fractions", "nan", "--out", o],
     "--fractions nan"),
    ("run-train-sizes-inf", lambda w, o: ["run", "--preset", "smoke", "--train-sizes", "inf", "--out", o],
     "--train-sizes inf"),
    ("run-ray-unreachable", lambda w, o: ["run", "--preset", "smoke", "--executor", "ray", "--ray-address",
                                          f"127.0.0.1:{_free_port()}", "--out", o], "no Ray cluster answers"),
    ("run-ray-address-not-host-port", lambda w, o: ["run", "--preset", "smoke", "--executor", "ray",
                                                    "--ray-address", "nowhere", "--out", o], "not HOST:PORT"),
    ("generate-overwrite-keeps-a-users-file", lambda w, o: ["gan", "generate", "--checkpoint", w.unknown_gan,
                                                            "--n", "2", "--out", _generated_folder(o),
                                                            "--overwrite"], "1 file(s) medsyn did not write"),
    # issue 21, class 5: limits before work
    ("run-seeds-0-99999999999", lambda w, o: ["run", "--preset", "smoke", "--seeds", "0-99999999999", "--out", o],
     "4294967295"),
    ("run-seeds-100001-dry-run", lambda w, o: ["run", "--preset", "smoke", "--seeds", "0-100000", "--dry-run"],
     "maximum of 1000 replicates"),
    # issue 21, class 6: files medsyn wrote and reads back
    ("report-config-nested-200000-deep", lambda w, o: ["report", _run_folder(o, config="[" * 200_000 + "]" * 200_000)],
     "nested too deeply"),
    ("report-results-retyped", lambda w, o: ["report", _run_folder(o, results={**RESULTS, "n_test": "ten"})],
     "field 'n_test' is text"),
    ("report-config-is-a-list", lambda w, o: ["report", _run_folder(o, config="[1, 2]")], "holds a list"),
    ("report-results-without-ci-level", lambda w, o: ["report", _run_folder(o, results={
        k: v for k, v in RESULTS.items() if k != "ci_level"})], "lacks ci_level"),
    # issue 21, class 8: every file medsyn reads back has a schema (fileio.Field); a failure names file, field, fix
    ("predict-card-threshold-high", lambda w, o: ["predict", "--model", w.cards["threshold_high"], str(w.jpeg)],
     "(its model card): field 'threshold.value' is text ('high'), not a number; the file is damaged or was edited: "
     "export the model again"),
    ("predict-card-aspect-fisheye", lambda w, o: ["predict", "--model", w.cards["fisheye"], str(w.jpeg)],
     "field 'preprocessing.aspect' is 'fisheye', not one of center-crop, pad, stretch"),
    ("predict-card-image-size-0", lambda w, o: ["predict", "--model", w.cards["size_0"], str(w.jpeg)],
     "field 'preprocessing.image_size' is 0, not from 1 to 4096"),
    ("predict-model-without-image-size", lambda w, o: ["predict", "--model", w.model_without_size, str(w.jpeg)],
     "no-size.pt: lacks image_size; the file is damaged"),
    ("export-model-without-image-size", lambda w, o: ["export", _run_to_export(o / "run", w.model_without_size),
                                                      "--out", o / "m.pt"], "model.pt: lacks image_size"),
    ("export-results-without-ci-level", lambda w, o: ["export", _run_to_export(o / "run", w.model_of_arm, results={
        k: v for k, v in RESULTS.items() if k != "ci_level"}), "--out", o / "m.pt"], "results.json: lacks ci_level"),
    ("export-val-metrics-a-list", lambda w, o: ["export", _run_to_export(o / "run", w.model, val=[0.5, 0.6]),
                                                "--out", o / "m.pt"],
     "val_metrics.json: lacks balanced_accuracy, accuracy (it holds a list, not an object)"),
    ("generate-checkpoint-step-text", lambda w, o: ["gan", "generate", "--checkpoint", w.gan_step_text, "--n", "2",
                                                    "--out", o], "field 'step' is text ('ten'), not a whole number"),
    # issue 21, class 7: a file is checked by type and size before anything reads (or hashes) it whole
    ("image-folder-with-a-sparse-1tib-png", lambda w, o: ["data", "info", _sparse_png_folder(o)],
     "huge.png: refused: a file of 1,048,576 MiB, over the limit of 512 MiB per image"),
    # 8. messages that say what is wrong
    ("run-size-0", lambda w, o: ["run", "--preset", "smoke", "--size", "0", "--out", o], "--size 0"),
    ("npz-zero-rows", lambda w, o: ["data", "info", w.npz["zero_rows"]], "0 images"),
    ("class-with-one-image", lambda w, o: ["data", "info", w.npz["one_of_a_class"]], "only one image"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file's digest; a file over 64 MiB (a sparse 1 TiB case) by its size and modification time."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.stat().st_size < 64 << 20
            else f"{p.stat().st_size}@{p.stat().st_mtime_ns}" for p in sorted(root.rglob("*")) if p.is_file()}


# cases refused only after the bundled data is loaded (its first load in a session runs the leak guard's search)
SLOW_CASES = {"pickle-npz-synthetic", "resume-run-damaged-config", "resume-gan-damaged-config"}


@pytest.mark.parametrize("make_argv, expected", [
    pytest.param(*c[1:], id=c[0], marks=[pytest.mark.slow] * (c[0] in SLOW_CASES)) for c in CASES])
def test_bad_input_is_a_message(world, tmp_path, capsys, make_argv, expected):
    out = tmp_path / "out"
    argv = [str(a) for a in make_argv(world, out)]
    before = _snapshot(world.root), _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("medsyn: error: ") and expected in err, err
    assert "Traceback" not in err
    assert (_snapshot(world.root), _snapshot(tmp_path)) == before, "a failing command wrote or changed files"
    assert not world.marker.exists(), "a pickled payload ran"


def test_port_in_use_is_a_message(world, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = main(["serve", "--model", str(world.model), "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and "in use" in err and "Traceback" not in err, err


def test_generate_refuses_trillions_of_images():
    from medsyn.errors import MedsynError
    from medsyn.synth import plan_counts

    with pytest.raises(MedsynError, match="over the limit"):
        plan_counts(2, n=10 ** 13)


def test_inception_weights_with_a_pickle_payload_run_no_code(world):
    """torch-fidelity unpickles its weights file itself; medsyn must hand it only what loaded as plain tensors."""
    from medsyn.config import AuditConfig
    from medsyn.errors import MedsynError
    from medsyn.audit.features import inception

    with pytest.raises(MedsynError, match="safely"):
        inception(AuditConfig(inception_weights=str(world.payload)))
    assert not world.marker.exists()


def test_inception_weights_of_another_network_are_a_message(world):
    from medsyn.config import AuditConfig
    from medsyn.errors import MedsynError
    from medsyn.audit.features import inception

    with pytest.raises(MedsynError, match="not torch-fidelity's Inception-v3"):
        inception(AuditConfig(inception_weights=str(world.model)))


# ---------------------------------------------------------------- conversions that must be right, not refused

def test_float_and_12bit_images_are_scaled_not_truncated(tmp_path):
    from medsyn.data.sources import read_npz

    gradient = np.linspace(0, 1, 12 * 64).reshape(12, 8, 8)
    as_float = read_npz(_npz(tmp_path / "float.npz", images=gradient.astype(np.float32))).images
    as_12bit = read_npz(_npz(tmp_path / "u16.npz", images=np.round(gradient * 4095).astype(np.uint16))).images
    assert as_float.dtype == as_12bit.dtype == np.uint8
    assert as_float.min() == 0 and as_float.max() == 255 and len(np.unique(as_float)) > 200
    assert np.abs(as_12bit.astype(int) - as_float.astype(int)).max() <= 1  # the same image, not wrapped mod 256


def test_whole_float_labels_are_accepted(tmp_path):
    from medsyn.data.sources import read_npz

    labels = read_npz(_npz(tmp_path / "f.npz", labels=np.repeat([0.0, 1.0], 6))).labels
    assert labels.dtype == np.int64 and labels.tolist() == [0] * 6 + [1] * 6 + [0] * 6 + [1] * 6 + [0] * 6 + [1] * 6


@pytest.mark.slow
def test_a_file_listed_twice_lands_in_one_split_and_is_announced(tmp_path):
    """The repeated row and a byte-identical copy under another name stay with the test copy."""
    from medsyn import data
    from medsyn.config import DataConfig

    classes = {"a": XRAYS[:6], "b": XRAYS[6:12]}
    rows = []
    for label, files in classes.items():
        for i, xray in enumerate(files):
            shutil.copyfile(xray, tmp_path / f"{label}{i}.jpeg")
            rows.append(f"{label}{i}.jpeg,{label},{'test' if i < 2 else 'train'}")
    shutil.copyfile(XRAYS[0], tmp_path / "a0-copy.jpeg")
    rows += ["a0.jpeg,a,train", "a0-copy.jpeg,a,val", "a3.jpeg,a,val"]
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    dataset = data.load(tmp_path / "m.csv", DataConfig(size=16, val="given"))
    a0 = [s for p, s in zip(dataset.paths, dataset.split) if Path(p).name in ("a0.jpeg", "a0-copy.jpeg")]
    assert a0 == ["test"]
    a3 = [s for p, s in zip(dataset.paths, dataset.split) if Path(p).name == "a3.jpeg"]
    assert a3 == ["val"]  # listed in train and in val: kept once, in the more held-out split
    assert any("repeated row" in n for n in dataset.notes) and any("byte-identical" in n for n in dataset.notes)


def test_clobber_refusal_leaves_the_users_files(tmp_path, capsys):
    out = _user_folder(tmp_path / "mine")
    assert main(["classify", "train", "--arm", "real", "--out", str(out)]) == 2
    assert (out / "config.json").read_text() == '{"mine": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.csv"]


def test_an_image_over_the_decoders_pixel_limit_gets_413_not_422():
    """A PNG header declaring 9000 x 9000 pixels: the decoder's bomb guard refuses it, and the API says 413."""
    import struct
    import zlib

    from medsyn.app.server import UploadError, decode_upload

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(UploadError) as refused:
        decode_upload(png, max_pixels=10 ** 12)  # only the decoder's own limit (64 MP) applies
    assert refused.value.status == 413 and "pixels" in str(refused.value)


def test_torchvision_weights_with_a_pickle_payload_run_no_code(world, monkeypatch):
    """--pretrained reads ImageNet weights from the torch hub cache: a payload planted there must not run."""
    from medsyn.classify import models
    from medsyn.errors import MedsynError

    monkeypatch.setenv("TORCH_HOME", str(world.root / "torch-home"))
    planted = Path(torch.hub.get_dir()) / "checkpoints" / Path(models.pretrained_weights("vgg16")[0].url).name
    planted.parent.mkdir(parents=True)
    shutil.copyfile(world.payload, planted)
    with pytest.raises(MedsynError, match="safely"):
        models.build("vgg16", 2, 1, width=1.0, pretrained=True)
    assert not world.marker.exists()


# ---------------------------------------------------------------- issue 21: decoders by allow-list

POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch):
    """A `gs` first on PATH that records being called: Pillow's EPS reader runs `gs` on the file it decodes."""
    from PIL import EpsImagePlugin

    bin_dir, called = tmp_path / "fake-bin", tmp_path / "GS-CALLED"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> {called}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)  # Pillow caches where it found gs
    return called


def _postscript_folder(root: Path) -> Path:
    for label, files in (("NORMAL", XRAYS[:3]), ("SICK", XRAYS[3:6])):
        (root / label).mkdir(parents=True)
        for xray in files:
            shutil.copyfile(xray, root / label / xray.name)
    (root / "SICK" / "scan.png").write_bytes(POSTSCRIPT)
    return root


def _postscript_manifest(root: Path) -> Path:
    root.mkdir()
    (root / "scan.jpg").write_bytes(POSTSCRIPT)
    return _manifest(root / "m.csv", ["img0.jpeg,a,", "img1.jpeg,a,", "img2.jpeg,b,", "img3.jpeg,b,",
                                      "scan.jpg,b,"])


POSTSCRIPT_CASES = [
    ("folder", lambda w, t: ["data", "info", _postscript_folder(t / "ps-folder")]),
    ("manifest", lambda w, t: ["data", "info", _postscript_manifest(t / "ps-manifest")]),
    ("predict", lambda w, t: ["predict", "--model", w.model, _postscript_folder(t / "ps-predict") / "SICK" /
                              "scan.png"]),
]


@pytest.mark.parametrize("make_argv", [c[1] for c in POSTSCRIPT_CASES], ids=[c[0] for c in POSTSCRIPT_CASES])
def test_postscript_named_as_an_image_never_reaches_ghostscript(world, tmp_path, capsys, fake_ghostscript,
                                                                make_argv):
    argv = [str(a) for a in make_argv(world, tmp_path)]
    code = main(argv)
    err = capsys.readouterr().err
    assert not fake_ghostscript.exists(), "a data file was handed to Ghostscript"
    assert code == 2 and "not a PNG, JPEG, BMP, TIFF, GIF or DICOM image" in err and "%!PS" in err, err
    assert "Traceback" not in err


def test_an_exif_rotated_jpeg_is_used_upright(tmp_path):
    """A 16x8 picture, bright on its left half, stored as 8x16 with EXIF orientation 6 (rotate 90 clockwise)."""
    from PIL import Image

    from medsyn.data.images import load_image

    upright = np.zeros((8, 16), np.uint8)
    upright[:, :8] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: 8 wide, 16 high
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    decoded = load_image(tmp_path / "rotated.jpg")
    assert decoded.shape == (8, 16)
    assert decoded[:, :8].mean() > 200 and decoded[:, 8:].mean() < 50


# ---------------------------------------------------------------- issue 21: DICOM limits from the header

def test_dicom_limits_are_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    import pydicom

    from medsyn.data.images import BadImage, load_image

    def no_pixels(self):
        raise AssertionError("pixel data was decoded before the header's limits were checked")

    multi = memory.dicom_from_fixture(tmp_path / "multi.dcm", NumberOfFrames=2000)
    huge = memory.dicom_from_fixture(tmp_path / "huge.dcm", Rows=8000, Columns=8000, SamplesPerPixel=3)
    bomb = memory.deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=300)
    small = memory.deflate_bomb(tmp_path / "small.dcm", inflated_mib=1)
    assert bomb.stat().st_size < 2 << 20
    assert load_image(small).shape == (128, 128)  # a deflated file within the budget still loads
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_pixels))
    for path, reason in ((multi, "multi-frame DICOM (2000 frames)"), (huge, "MiB of pixel data"),
                         (bomb, "inflates to more than")):
        with pytest.raises(BadImage, match=re.escape(reason)):
            load_image(path)


# ---------------------------------------------------------------- issue 21: the label rule, as used (not refused)

def _three_images(folder: Path, start: int = 0) -> None:
    folder.mkdir(parents=True)
    for xray in XRAYS[start:start + 3]:
        shutil.copyfile(xray, folder / xray.name)


def test_a_hidden_folder_is_not_a_class(tmp_path):
    from medsyn.data.sources import list_folder

    for split in ("train", "test"):
        _three_images(tmp_path / split / "NORMAL")
        _three_images(tmp_path / split / "SICK", 3)
    _three_images(tmp_path / "train" / ".thumbnails", 6)
    _three_images(tmp_path / "train" / "SICK" / ".cache", 6)
    listing = list_folder(tmp_path)
    assert listing.class_names == ("NORMAL", "SICK")
    assert not [p for p in listing.paths if ".thumbnails" in p.parts or ".cache" in p.parts]


def test_numeric_labels_are_one_class_and_patient_ids_ignore_case(tmp_path):
    """Labels `1` and `01` are one class; patient ids `N07`, ` n07` are one patient; both are in the notes."""
    from medsyn.data.sources import list_manifest

    for i, xray in enumerate(XRAYS[:4]):
        shutil.copyfile(xray, tmp_path / f"img{i}.jpeg")
    (tmp_path / "m.csv").write_text("path,label,split,patient_id\nimg0.jpeg,1,,N07\nimg1.jpeg,01,, n07\n"
                                    "img2.jpeg,0,,p1\nimg3.jpeg,00,,p2\n")
    listing = list_manifest(tmp_path / "m.csv")
    assert listing.class_names == ("0", "1") and listing.labels.tolist() == [1, 1, 0, 0]
    assert listing.groups.tolist()[:2] == ["N07", "N07"]
    assert any("'01' / '1'" in n for n in listing.notes), listing.notes
    assert any("'N07' / 'n07'" in n for n in listing.notes), listing.notes


def test_an_npz_over_the_memory_budget_is_refused_from_its_headers(tmp_path, monkeypatch, capsys):
    """Under the per-array limit, but more than this machine can hold (the budget set to 1 GiB here)."""
    from medsyn import fileio

    monkeypatch.setattr(fileio, "npz_budget", lambda: 1 << 30)
    path = _huge_header_npz(tmp_path / "big.npz", shape=(2048, 1024, 1024))
    assert main(["data", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2.0 GiB together, over the memory budget of 1.0 GiB" in err and "Traceback" not in err, err


def test_pretrained_without_cached_weights_makes_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    out = tmp_path / "out"
    assert main(["classify", "train", "--arm", "real", "--pretrained", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not in the torchvision cache" in err and "Traceback" not in err, err
    assert not out.exists()


# ---------------------------------------------------------------- issue 21: a lock per output folder

@pytest.mark.slow
def test_a_second_writer_of_a_folder_is_refused_naming_the_first(tmp_path):
    """Process A holds --out (as a running `medsyn run` does); B, `run --resume --out SAME`, is refused with A's
    pid and exit 2, before any work; once A has ended, the folder is free again."""
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from medsyn.fileio import claim_out_dir; "
                               f"claim_out_dir({str(out)!r}, 'run'); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = [sys.executable, "-m", "medsyn", "run", "--preset", "smoke", "--resume", "--data",
                  str(tmp_path / "no-such-data"), "--out", str(out)]
        refused = subprocess.run(second, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, refused.stderr
        assert f"is being written by pid {holder.pid} (`medsyn run`)" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        holder.kill()
        holder.wait()
    after = subprocess.run(second, capture_output=True, text=True, timeout=300)
    assert after.returncode == 2 and "no such file" in after.stderr and "pid" not in after.stderr, after.stderr


def test_a_half_written_last_log_line_is_left_out_and_a_bad_middle_line_is_a_message(tmp_path):
    from medsyn import generators
    from medsyn.errors import MedsynError

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 10, "g_loss": 1.0}\n{"step": 20, "g_loss": 0.9}\n{"step": 30, "g_lo')
    assert [row["step"] for row in generators.read_log(tmp_path)] == [10, 20]
    log.write_text('{"step": 10}\n{"step": "ten"}\n{"step": 30}\n')
    with pytest.raises(MedsynError, match="line 2: field 'step' is text"):
        generators.read_log(tmp_path)


# ---------------------------------------------------------------- issue 21: files medsyn reads back, by function

PREDICTIONS = ("row,path,true,true_name,p_a,p_b,predicted,predicted_name\n"
               "0,x.png,0,a,0.9,0.1,0,a\n1,y.png,1,b,0.2,0.8,1,b\n")


def _predictions(folder: Path, text: str):
    """classify.read_predictions of a finished seed folder whose predictions.csv holds `text`."""
    from medsyn.classify import read_predictions

    folder.mkdir()
    (folder / "test_metrics.json").write_text('{"threshold": 0.5}\n')
    (folder / "predictions.csv").write_text(text)
    return read_predictions(folder)


def _distinct_npz(path: Path, train: int = 12, held_out: int = 12) -> Path:
    """An npz of distinct random 8x8 images of classes a and b: `train` in train, `held_out` in val and in test."""
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n in (("train", train), ("val", held_out), ("test", held_out)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.repeat([0, 1], n // 2)
    np.savez(path, class_names=np.array(["a", "b"]), **arrays)
    return path


def _synthetic(folder: Path, **manifest):
    """synth.load_synthetic of a folder as `gan generate` writes it (12 images of classes a and b, all in the
    train split), its manifest.json fields replaced."""
    import json

    from medsyn.synth import load_synthetic

    folder.mkdir()
    _distinct_npz(folder / "synthetic.npz", held_out=0)
    (folder / "manifest.json").write_text(json.dumps({"class_names": ["a", "b"], "counts": [6, 6], "total": 12,
                                                      "npz": "synthetic.npz", **manifest}))
    return load_synthetic(folder)


def _data_cache(folder: Path, plant):
    """data.load of an npz whose decode-cache entry (under `folder`) was then changed by `plant(entry)`."""
    from medsyn import data

    source = _distinct_npz(folder / "source.npz", train=40, held_out=0)  # one given split: no leak search
    data.load(source)
    plant(data.cache_entry(source))
    return data.load(source)


def _payload_npz(entry: Path) -> None:
    _npz(entry / "images.npz", labels=np.array([Payload(entry / "PWNED")] * 12, dtype=object))


def _cut_arrays(entry: Path) -> None:
    with np.load(entry / "images.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    np.savez(entry / "images.npz", **{**arrays, "labels": arrays["labels"][:3]})


def _retype_meta(entry: Path) -> None:
    (entry / "meta.json").write_text('{"class_names": ["a", "b"], "skipped": [], "ignored": "none", "notes": []}')


def _encoder_cache(folder: Path, plant):
    """The audit's label-trained CNN for a tiny real set, trained once and cached, then its cache entry changed by
    `plant(entry)` and asked for again."""
    from medsyn.audit import features
    from medsyn.config import AuditConfig
    from medsyn.data import ImageSet

    n = 24
    real = ImageSet(images=np.random.default_rng(0).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8),
                    labels=np.repeat([0, 1], n // 2), split=np.array(["train", "val"] * (n // 2)),
                    class_names=("a", "b"), groups=np.full(n, ""), paths=np.array([str(i) for i in range(n)]),
                    source="tiny")
    config = AuditConfig(encoder_width=4, encoder_epochs=1)
    features.label_trained_cnn(real, config)
    plant(features.encoder_cache_dir(real, config))
    return features.label_trained_cnn(real, config)


# (case id, a function of a fresh folder that reads back a damaged file medsyn wrote, words the message must hold)
READ_BACK_CASES = [
    ("predictions-csv-cut", lambda t: _predictions(t / "seed0", PREDICTIONS[:-10]),
     "predictions.csv line 3: 5 values for 8 columns (cut short or edited)"),
    ("predictions-csv-retyped", lambda t: _predictions(t / "seed0", PREDICTIONS.replace(",1,b,", ",one,b,")),
     "predictions.csv line 3: field 'true' is text ('one'), not a whole number"),
    ("predictions-csv-probability-2", lambda t: _predictions(t / "seed0", PREDICTIONS.replace("0.8", "2")),
     "field 'p_b' is 2.0, not from 0 to 1"),
    ("predictions-csv-header-only", lambda t: _predictions(t / "seed0", PREDICTIONS.splitlines()[0] + "\n"),
     "predictions.csv: holds no rows"),
    ("synthetic-manifest-retyped", lambda t: _synthetic(t / "synth", total="twelve"),
     "manifest.json: field 'total' is text ('twelve'), not a whole number; the set is damaged or was edited: "
     "generate it again"),
    ("synthetic-manifest-disagrees", lambda t: _synthetic(t / "synth", total=500),
     "12 images of classes ['a', 'b'], but its manifest.json records 500"),
    ("data-cache-pickle-payload", lambda t: _data_cache(t, _payload_npz), "remove that folder"),
    ("data-cache-arrays-cut", lambda t: _data_cache(t, _cut_arrays), "of one length; medsyn's decode cache entry"),
    ("data-cache-meta-retyped", lambda t: _data_cache(t, _retype_meta), "field 'ignored' is text ('none')"),
    ("encoder-cache-pickle-payload", lambda t: _encoder_cache(t, lambda e: torch.save(
        {"w": Payload(e / "PWNED")}, e / "encoder.pt")), "medsyn loads only plain weights, never pickled code. It is "
     "medsyn's cache, damaged or not written by medsyn: remove the folder"),
    ("encoder-cache-foreign-weights", lambda t: _encoder_cache(t, lambda e: torch.save(
        {"w": torch.zeros(3)}, e / "encoder.pt")), "not this encoder's weights"),
    ("encoder-cache-meta-a-list", lambda t: _encoder_cache(t, lambda e: (e / "meta.json").write_text("[1, 2]")),
     "meta.json: lacks name, architecture"),
]


@pytest.mark.slow
@pytest.mark.parametrize("read, expected", [c[1:] for c in READ_BACK_CASES], ids=[c[0] for c in READ_BACK_CASES])
def test_a_damaged_file_medsyn_reads_back_is_a_message(tmp_path, monkeypatch, read, expected):
    from medsyn.errors import MedsynError

    monkeypatch.setenv("MEDSYN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MedsynError) as refused:
        read(tmp_path)
    assert expected in str(refused.value), str(refused.value)
    assert not list(tmp_path.rglob("PWNED")), "a pickled payload ran"


def test_a_generated_set_that_agrees_with_its_manifest_loads(tmp_path):
    assert len(_synthetic(tmp_path / "synth")) == 12


def test_a_huge_image_file_is_never_hashed(tmp_path, monkeypatch):
    """The copy check hashes every listed file (data/sources.py): the sparse 1 TiB `.png` is refused by its size
    first, and not one block of it is hashed."""
    from medsyn import data
    from medsyn.errors import MedsynError

    hashed = []
    real_sha256 = hashlib.sha256

    class CountingSha256:
        def __init__(self, data: bytes = b""):
            self.digest = real_sha256()
            self.update(data)

        def update(self, block: bytes) -> None:
            hashed.append(len(block))
            if sum(hashed) > 1 << 30:
                raise AssertionError("over 1 GiB hashed for a folder of six small JPEGs and one sparse file")
            self.digest.update(block)

        def hexdigest(self) -> str:
            return self.digest.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", CountingSha256)
    with pytest.raises(MedsynError, match="over the limit of 512 MiB per image"):
        data.load(_sparse_png_folder(tmp_path / "data"))
    assert 0 < sum(hashed) < 1 << 20


# ---------------------------------------------------------------- issue 21: predict's memory on hostile files

PREDICT_MEMORY_CASES = [
    ("normal-jpeg", lambda t: XRAYS[0], 0, ""),
    ("deflate-bomb-1.5-gib", lambda t: memory.deflate_bomb(t / "bomb.dcm", 1536), 2, "inflates to more than"),
    ("multi-frame-dicom-2000", lambda t: memory.multi_frame(t / "frames.dcm", 2000), 2,
     "multi-frame DICOM (2000 frames)"),
]


@pytest.fixture(scope="module")
def torch_floor_mib() -> float:
    return memory.peak([sys.executable, "-c", "import torch"])["peak_mib"]


@pytest.mark.parametrize("make_input, code, message", [c[1:] for c in PREDICT_MEMORY_CASES],
                         ids=[c[0] for c in PREDICT_MEMORY_CASES])
@pytest.mark.slow
def test_predict_needs_little_beyond_torch_itself(world, tmp_path, torch_floor_mib, make_input, code, message):
    """`medsyn predict`'s peak resident set stays within 100 MiB of `import torch` alone (which is over 500 MiB
    with this torch build): no torchvision, sklearn or scipy, and hostile files refused from their headers."""
    measured = memory.predict_peak(world.model, make_input(tmp_path))
    assert measured["rc"] == code and message in measured["message"], measured
    assert measured["peak_mib"] < torch_floor_mib + 100, (measured, torch_floor_mib)


def test_the_sound_tiny_onnx_model_file_predicts(world, capsys):
    """The hostile ONNX files above each differ from this one in one way: it is their refusal's only cause."""
    assert main(["predict", "--model", str(world.onnx["sound"]), str(world.jpeg)]) == 0
    assert world.jpeg.name in capsys.readouterr().out


@pytest.fixture(scope="module")
def onnx_model(world, tmp_path_factory) -> Path:
    """world.model's network and card as `medsyn export --onnx` writes them."""
    folder = tmp_path_factory.mktemp("onnx-model")
    return memory.onnx_file(Path(shutil.copyfile(world.model, folder / "model.pt")))


@pytest.mark.parametrize("make_input, code, message", [c[1:] for c in PREDICT_MEMORY_CASES],
                         ids=[c[0] for c in PREDICT_MEMORY_CASES])
@pytest.mark.slow
def test_predict_on_an_onnx_model_file_stays_under_the_issue_s_limit(onnx_model, tmp_path, make_input, code, message):
    """Without torch, `medsyn predict` peaks under issue 21's 500 MB on a normal JPEG and on the hostile files."""
    measured = memory.predict_peak(onnx_model, make_input(tmp_path))
    assert measured["rc"] == code and message in measured["message"], measured
    assert measured["peak_mib"] < memory.LIMIT_MIB, measured
