"""`medsyn run` on a real multi-class dataset whose smallest class has fewer val images than the audit's k = 5
nearest neighbours: the run completes and the numbers that cannot be computed are marked, not crashed on."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medsyn.cli import main
from medsyn.data.loader import bundled_path

pytestmark = pytest.mark.slow  # a whole smoke study

# images per class (0 = normal, 1 = pneumonia, 2 = more pneumonia images under a third label) in each split
SPLIT_COUNTS = {"train": (60, 60, 12), "val": (15, 15, 3), "test": (20, 20, 6)}


def _three_class_npz(path):
    """Bundled PneumoniaMNIST images, with a small third class of pneumonia images the first two never use."""
    bundled = np.load(bundled_path())
    arrays = {}
    for split, (n0, n1, n2) in SPLIT_COUNTS.items():
        images, labels = bundled[f"{split}_images"], bundled[f"{split}_labels"].ravel()
        normal, pneumonia = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        rows = np.concatenate([normal[:n0], pneumonia[:n1], pneumonia[n1:n1 + n2]])
        arrays[f"{split}_images"] = images[rows]
        arrays[f"{split}_labels"] = np.repeat([0, 1, 2], (n0, n1, n2)).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


def test_run_completes_when_a_class_has_fewer_val_images_than_k(tmp_path):
    data, out = _three_class_npz(tmp_path / "three.npz"), tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--data", str(data), "--out", str(out)]) == 0
    audit = json.loads((out / "audit" / "cgan" / "g0" / "audit.json").read_text())
    assert audit["config"]["k"] == 5 and SPLIT_COUNTS["val"][2] < 5
    small = audit["fidelity"]["by_features"]["label-trained-cnn"]["real val (new images)"]["class_2"]
    assert "fid" not in small and "needs more than k+1=6" in small["skipped"]
    page = (out / "report.html").read_text()
    row = re.search(r"<tr><td>label-trained-cnn</td><td>class_2</td><td>real val \(new images\)</td>.*?</tr>", page)
    assert row.group(0).count("not computable") >= 4
    # every job's progress lines reach its log: the classifier's epochs, the audit's encoder
    assert re.search(r"^epoch 1/\d+: train loss", (out / "logs" / "arms_real_seed0.log").read_text(), re.M)
    assert "audit: " in (out / "logs" / "audit_cgan_g0.log").read_text()
