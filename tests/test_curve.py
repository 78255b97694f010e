"""The small-data study: nested, stratified, patient-grouped subsets of real train, the new strategy arms with
their controls, and a learning-curve run end to end (generators see only their subset; worth in results.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsyn import data
from medsyn.classify import parse_arm
from medsyn.cli import main
from medsyn.data.splits import nested_train_subset
from medsyn.errors import MedsynError


@pytest.fixture(scope="module")
def grouped():
    """The bundled data with patients of 3 images each (within a class), as a patient-grouped source has."""
    full = data.load()
    groups = np.empty(len(full), dtype=object)
    for cls in range(full.n_classes):
        rows = np.flatnonzero(full.labels == cls)
        groups[rows] = [f"c{cls}-p{i // 3}" for i in range(len(rows))]
    return full.labels, groups.astype(str), full.split


def test_subsets_are_nested_stratified_and_keep_patients_together(grouped):
    labels, groups, split = grouped
    train = split == "train"
    counts = np.bincount(labels[train])
    masks = [nested_train_subset(labels, groups, split, f, seed=0) for f in (0.02, 0.05, 0.1, 0.25, 1.0)]
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any() and small.sum() < large.sum()      # each inside the next
    for f, mask in zip((0.02, 0.05, 0.1, 0.25, 1.0), masks):
        assert not (mask & ~train).any()                                     # val and test never touched
        kept = np.bincount(labels[mask], minlength=2)
        np.testing.assert_allclose(kept, f * counts, atol=3)                 # within one 3-image patient
        for g in np.unique(groups[train]):
            assert len(set(mask[(groups == g) & train])) == 1                # a patient is in or out whole
    assert masks[-1].sum() == train.sum()
    other_seed = nested_train_subset(labels, groups, split, 0.1, seed=1)
    assert not np.array_equal(other_seed, masks[2])


def test_imbalance_subsamples_every_class_but_the_largest_and_sizes_count_images(grouped):
    labels, groups, split = grouped
    counts = np.bincount(labels[split == "train"])                           # 1214 normal, 3494 pneumonia
    kept = np.bincount(labels[nested_train_subset(labels, groups, split, 1.0, imbalance=0.2)], minlength=2)
    assert kept[1] == counts[1] and abs(kept[0] - 0.2 * counts[0]) <= 3
    by_count = nested_train_subset(labels, groups, split, 250, seed=0)
    assert abs(by_count.sum() - 250) <= 6


def test_strategy_arms_and_their_controls():
    assert parse_arm("real+pretrain-synth@1").control == "real" and parse_arm("real+pretrain-synth@1").pretrain
    assert parse_arm("real+aug+filtered-synth@2").control == "real+aug"
    assert parse_arm("real+filtered-synth").filtered and parse_arm("real+filtered-synth").filter_model == "real"
    for bad in ("filtered-synth", "pretrain-synth@1", "real+filtered-synth+synth"):
        with pytest.raises(MedsynError):
            parse_arm(bad)


def test_learning_curve_run_end_to_end(tmp_path):
    out = tmp_path / "curve"
    assert main(["run", "--preset", "smoke", "--fractions", "0.1,1", "--imbalance", "0.5", "--out", str(out),
                 "--arms", "real,real+synth@1,real+pretrain-synth@1,real+filtered-synth@1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["tag"] for p in results["curve"]] == ["f0.1", "f1"]
    small, full = results["curve"]
    assert small["n_train"] < full["n_train"] and full["per_class"][1] == 3494
    assert abs(full["per_class"][0] - 0.5 * 1214) <= 1
    gan_record = json.loads((out / "sizes" / "f0.1" / "gan" / "cgan" / "g0" / "config.json").read_text())
    assert json.dumps(small["per_class"]) in json.dumps(gan_record)   # the generator trained on its subset only
    worth = [w for w in results["worth"] if w["metric"] == "auc"]
    assert {(w["arm"], w["n_train"]) for w in worth} == {(a, p["n_train"]) for a in
                                                         ("real+synth@1", "real+pretrain-synth@1",
                                                          "real+filtered-synth@1") for p in results["curve"]}
    filtered = json.loads((out / "sizes" / "f1" / "arms" / "real+filtered-synth@1" / "seed0" / "config.json")
                          .read_text())
    assert "p(label) >=" in filtered["synthetic_source"]
    pretrained = json.loads((out / "sizes" / "f1" / "arms" / "real+pretrain-synth@1" / "seed0" /
                             "val_metrics.json").read_text())
    assert pretrained["synthetic_seen"] > 0 and "pretrain_best_epoch" in pretrained
    page = (out / "report.html").read_text()
    assert "Learning curve over real-data size" in page and "worth in real images" in page
