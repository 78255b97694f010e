"""The test split is for the final number only, by construction: a learning-curve study run twice, once on real
data and once on the same data with its TEST split scrambled (noise images, random labels in other proportions),
trains the same generators, samples the same pools with the same guidance chosen, audits them the same, draws the
same positive-control pool, filters the same and selects the same classifiers at every size. Only the final test
metrics may differ."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from medsyn import data
from medsyn.cli import main
from medsyn.data.export import save_npz

pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow  # every test reads the twin learning-curve studies the module fixture runs

ARMS = ("real", "real+heldout@1", "real+filtered-synth@1")
SIZES = ("f0.25", "f1")


def _sources(folder):
    """A 500/120/200 slice of the bundled data, and its twin whose test images are noise with random labels."""
    full = data.load()
    keep = np.zeros(len(full), dtype=bool)
    for split, n in (("train", 500), ("val", 120), ("test", 200)):
        keep[np.flatnonzero(full.split == split)[:n]] = True
    real = full.select(keep)
    test = real.split == "test"
    rng = np.random.default_rng(0)
    images, labels = real.images.copy(), real.labels.copy()
    images[test] = rng.integers(0, 256, images[test].shape, dtype=np.uint8)
    labels[test] = rng.integers(0, 2, test.sum())
    scrambled = dataclasses.replace(real, images=images, labels=labels)
    paths = folder / "real.npz", folder / "scrambled.npz"
    save_npz(real, paths[0])
    save_npz(scrambled, paths[1])
    return paths


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seal")
    runs = []
    for source in _sources(folder):
        out = folder / source.stem
        assert main(["run", "--preset", "smoke", "--data", str(source), "--gan", "ddpm", "--guidance", "0,1",
                     "--arms", ",".join(ARMS), "--fractions", "0.25,1", "--seeds", "0", "--gan-seeds", "1",
                     "--executor", "sequential", "--allow-leak",  # the slice keeps one of MedMNIST's own
                     "--out", str(out)]) == 0                           # val images that repeat a train image
        runs.append(out)
    return runs


@pytest.mark.parametrize("size", SIZES)
def test_generator_training_never_sees_the_test_split(twin_runs, size):
    a, b = (torch.load(run / "sizes" / size / "gan" / "ddpm" / "g0" / "final.pt", map_location="cpu",
                       weights_only=True) for run in twin_runs)
    tensors = lambda state: {k: v for k, v in _flatten(state) if torch.is_tensor(v)}
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 10
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix, value


@pytest.mark.parametrize("size", SIZES)
def test_synthesis_and_its_guidance_choice_never_see_the_test_split(twin_runs, size):
    pools = [np.load(run / "sizes" / size / "synthetic" / "ddpm" / "g0" / "synthetic.npz") for run in twin_runs]
    assert np.array_equal(pools[0]["train_images"], pools[1]["train_images"])
    assert np.array_equal(pools[0]["train_labels"], pools[1]["train_labels"])
    tables = [json.loads((run / "sizes" / size / "synthetic" / "ddpm" / "g0" / "guidance.json").read_text())
              for run in twin_runs]
    assert tables[0]["chosen"] == tables[1]["chosen"] and tables[0]["scales"] == tables[1]["scales"]


@pytest.mark.parametrize("size", SIZES)
def test_the_audit_never_sees_the_test_split(twin_runs, size):
    audits = [json.loads((run / "sizes" / size / "audit" / "ddpm" / "g0" / "audit.json").read_text())
              for run in twin_runs]
    for key in ("counts", "fidelity", "label_fidelity", "memorization"):
        assert audits[0][key] == audits[1][key], key


@pytest.mark.parametrize("size", SIZES)
def test_the_filter_the_positive_control_and_model_selection_never_see_the_test_split(twin_runs, size):
    for arm in ARMS if size != "f1" else ("real", "real+filtered-synth@1"):
        folders = [run / "sizes" / size / "arms" / arm / "seed0" for run in twin_runs]
        selected = [json.loads((f / "val_metrics.json").read_text()) for f in folders]
        assert selected[0] == selected[1], arm
        sets = [json.loads((f / "config.json").read_text())["training_set"] for f in folders]
        assert sets[0] == sets[1]
    kept = [json.loads((run / "sizes" / size / "arms" / ARMS[2] / "seed0" / "config.json").read_text())
            ["synthetic_source"] for run in twin_runs]
    assert kept[0].split("[filtered")[1] == kept[1].split("[filtered")[1]     # the same tau, the same kept count
    tests = [json.loads((run / "sizes" / size / "arms" / "real" / "seed0" / "test_metrics.json").read_text())
             for run in twin_runs]
    assert tests[0]["auc"] != tests[1]["auc"]                               # the scrambled split did reach the end
