"""The small-data study: nested, stratified, patient-grouped subsets of real train, the new strategy arms with
their controls, and a learning-curve run end to end (generators see only their subset; worth in results.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsyn import data
from medsyn.classify import parse_arm
from medsyn.cli import main
from medsyn.data.splits import VAL_FLOOR_PER_CLASS, learning_curve_point, nested_train_subset
from medsyn.errors import MedsynError


@pytest.fixture(scope="module")
def grouped(bundled):
    """The bundled data with patients of 3 images each (within a class), as a patient-grouped source has."""
    full = bundled
    groups = np.empty(len(full), dtype=object)
    for cls in range(full.n_classes):
        rows = np.flatnonzero(full.labels == cls)
        groups[rows] = [f"c{cls}-p{i // 3}" for i in range(len(rows))]
    return full.labels, groups.astype(str), full.split


@pytest.mark.slow
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


@pytest.mark.slow
def test_imbalance_subsamples_every_class_but_the_largest_and_sizes_count_images(grouped):
    labels, groups, split = grouped
    counts = np.bincount(labels[split == "train"])                           # 1214 normal, 3494 pneumonia
    kept = np.bincount(labels[nested_train_subset(labels, groups, split, 1.0, imbalance=0.2)], minlength=2)
    assert kept[1] == counts[1] and abs(kept[0] - 0.2 * counts[0]) <= 3
    by_count = nested_train_subset(labels, groups, split, 250, seed=0)
    assert abs(by_count.sum() - 250) <= 6
    point = learning_curve_point(labels, groups, split, 1.0, imbalance=0.2)
    val_kept = np.bincount(labels[point & (split == "val")], minlength=2)
    val_all = np.bincount(labels[split == "val"])
    assert val_kept[1] == val_all[1] and abs(val_kept[0] - 0.2 * val_all[0]) <= 3   # the same shares as train


def test_strategy_arms_and_their_controls():
    assert parse_arm("real+pretrain-synth@1").control == "real" and parse_arm("real+pretrain-synth@1").pretrain
    assert parse_arm("real+aug+filtered-synth@2").control == "real+aug"
    assert parse_arm("real+filtered-synth").filtered and parse_arm("real+filtered-synth").filter_model == "real"
    for bad in ("filtered-synth", "pretrain-synth@1", "real+filtered-synth+synth"):
        with pytest.raises(MedsynError):
            parse_arm(bad)


@pytest.mark.slow
def test_val_shrinks_with_train_in_proportion_nested_and_grouped(grouped):
    labels, groups, split = grouped
    val_counts = np.bincount(labels[split == "val"])
    masks = {f: learning_curve_point(labels, groups, split, f) for f in (0.02, 0.05, 0.25, 1.0)}
    n_val = {}
    for f, mask in masks.items():
        assert (mask[split == "test"]).all()                                   # the test split whole
        kept = np.bincount(labels[mask & (split == "val")], minlength=2)
        train_share = np.bincount(labels[mask & (split == "train")], minlength=2) / \
            np.bincount(labels[split == "train"])
        np.testing.assert_allclose(kept, np.round(train_share * val_counts), atol=3)   # within one 3-image patient ...
        assert (kept >= np.minimum(VAL_FLOOR_PER_CLASS, val_counts)).all()              # ... and never below the floor
        n_val[f] = kept.sum()
        for g in np.unique(groups[split == "val"]):
            assert len(set(mask[(groups == g) & (split == "val")])) == 1
    assert n_val[0.02] < n_val[0.05] < n_val[0.25] < n_val[1.0] == len(labels[split == "val"])
    for small, large in zip((0.02, 0.05, 0.25), (0.05, 0.25, 1.0)):
        assert not (masks[small] & ~masks[large]).any()                        # nested, val included
    optimistic = learning_curve_point(labels, groups, split, 0.02, scale_val=False)
    assert (optimistic[split == "val"]).all()


@pytest.mark.slow
def test_positive_control_pool_is_real_train_outside_the_subset_never_val_or_test(tmp_path):
    import hashlib

    from medsyn.config import preset
    from medsyn.study import jobs

    study = jobs.Study(preset("study"), None, tmp_path)
    full = data.load()
    digest = lambda images: {hashlib.sha256(np.ascontiguousarray(i).tobytes()).hexdigest() for i in images}
    for size in (0.02, 0.25):
        point, pool = jobs.point_dataset(study, {"size": size}), jobs.heldout_pool(study, {"size": size})
        subset = point.subset("train")
        assert set(pool.split) == {"train"} and len(pool) + len(subset) <= (full.split == "train").sum()
        assert not set(pool.paths) & set(subset.paths)                          # outside the subset
        assert set(pool.paths) <= set(full.paths[full.split == "train"])        # real train rows only
        assert not digest(pool.images) & digest(full.images[full.split != "train"])   # no val or test image
        outside = (full.split == "train") & ~np.isin(full.paths, subset.paths)
        left_out = outside & ~np.isin(full.paths, pool.paths)
        assert 0 < left_out.sum() <= 20                                        # only the source's duplicates ...
        assert digest(full.images[left_out]) <= digest(full.images[full.split != "train"])   # ... of val/test
    development = jobs.development_data(study, {"size": 0.02})
    assert "test" not in set(development.split)


@pytest.mark.slow
def test_learning_curve_run_end_to_end(tmp_path):
    out = tmp_path / "curve"
    assert main(["run", "--preset", "smoke", "--fractions", "0.1,1", "--imbalance", "0.5", "--out", str(out),
                 "--arms", "real,real+heldout@1,real+synth@1,real+pretrain-synth@1,real+filtered-synth@1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["tag"] for p in results["curve"]] == ["f0.1", "f1"]
    small, full = results["curve"]
    assert small["n_train"] < full["n_train"] and full["per_class"][1] == 3494
    assert abs(full["per_class"][0] - 0.5 * 1214) <= 1
    assert small["n_val"] < full["n_val"] and small["n_labelled"] == small["n_train"] + small["n_val"]
    assert "real+heldout@1" in small["arms"] and "real+heldout@1" not in full["arms"]   # no held-out images at f1
    assert results["sensitivity"]["positive_control"] == "real+heldout@1"
    for arm in ("real+heldout@1", "real+synth@1"):
        assert small["exposure"]["per_arm"][arm]["dose"] == [pytest.approx(1.0, rel=0.05)] * 2
    gan_record = json.loads((out / "sizes" / "f0.1" / "gan" / "cgan" / "g0" / "config.json").read_text())
    assert json.dumps(small["per_class"]) in json.dumps(gan_record)   # the generator trained on its subset only
    worth = [w for w in results["worth"] if w["metric"] == "auc"]
    assert {(w["arm"], w["n_labelled"]) for w in worth} == \
        {(a, p["n_labelled"]) for a in ("real+synth@1", "real+pretrain-synth@1", "real+filtered-synth@1")
         for p in results["curve"]} | {("real+heldout@1", small["n_labelled"])}
    filtered = json.loads((out / "sizes" / "f1" / "arms" / "real+filtered-synth@1" / "seed0" / "config.json")
                          .read_text())
    assert "p(label) >=" in filtered["synthetic_source"]
    kept = next(w for w in worth if w["arm"] == "real+filtered-synth@1" and w["n_labelled"] == full["n_labelled"])
    drawn = [json.loads((out / "sizes" / "f1" / "arms" / "real+filtered-synth@1" / f"seed{s}" / "config.json")
                        .read_text())["training_set"]["n_synthetic"] for s in (0, 1)]
    assert kept["n_synthetic"] == int(np.mean(drawn)) and max(drawn) < 4708     # what the filter kept
    pretrained = json.loads((out / "sizes" / "f1" / "arms" / "real+pretrain-synth@1" / "seed0" /
                             "val_metrics.json").read_text())
    assert pretrained["synthetic_seen"] > 0 and "pretrain_best_epoch" in pretrained
    page = (out / "report.html").read_text()
    assert "Learning curve over labelled-data size" in page and "worth in labelled images" in page
    assert "achieved dose" in page and ("THE STUDY CANNOT SEE HELP" in page or "Positive control:" in page)
    from medsyn.report.html import sensitivity_text
    assert sensitivity_text(results) and sensitivity_text(results) in (out / "summary.md").read_text()
