"""Pseudo-labels (classify/pseudo.py) and the arm real+pseudo@R: the val-chosen per-class thresholds, what a pool
keeps, and the arm's draw at the synthetic arms' dose rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medsyn import classify, data
from medsyn.classify.arms import synthetic_need, training_data
from medsyn.classify.pseudo import class_thresholds, pseudo_label
from medsyn.data.unlabelled import UnlabelledPool
from medsyn.errors import MedsynError

from tiny import TINY_CLASSIFY


def test_thresholds_are_the_lowest_confidence_reaching_the_val_precision_per_class():
    # class 0 predicted for rows 0-4 at 0.95, 0.9, 0.8, 0.7, 0.6; rows 0, 1, 2 and 4 are class 0, row 3 is not:
    # precision 1 down to 0.8, 3/4 at 0.7, 4/5 at 0.6. Class 1 is predicted for rows 5-7 and right only at 0.7.
    p0 = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    proba = np.stack([p0, 1 - p0], axis=1)
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(class_thresholds(labels, proba, 0.8), [0.6, np.inf])
    np.testing.assert_array_equal(class_thresholds(labels, proba, 0.9), [0.8, np.inf])
    labels[7] = 1      # the most confident class-1 prediction (0.9) is now right: 1/1
    np.testing.assert_array_equal(class_thresholds(labels, proba, 0.9), [0.8, 0.9])


@pytest.fixture(scope="module")
def labeller(bundled_slice):
    small = data.load(bundled_slice)
    model, meta = classify.real_only_model(small, TINY_CLASSIFY, seed=0)
    return small, model, meta


def test_a_pool_keeps_the_images_its_labeller_is_confident_about_with_the_labellers_labels(labeller):
    small, model, meta = labeller
    train = small.subset("train")
    pool = UnlabelledPool(train.images, train.paths, "pool")
    kept = pseudo_label(pool, model, meta, small.subset("val"), "real seed0")
    proba = classify.predict_proba(model, meta, train.images)
    taus = class_thresholds(small.subset("val").labels, classify.predict_proba(model, meta, small.subset("val").images))
    expected = proba.max(1) >= taus[proba.argmax(1)]
    assert kept.record["thresholds"] == [None if np.isinf(t) else round(float(t), 6) for t in taus]
    assert list(kept.images.paths) == list(train.paths[expected])
    assert np.array_equal(kept.images.labels, proba.argmax(1)[expected])                  # the labeller's labels
    assert kept.record["kept_per_class"] == np.bincount(proba.argmax(1)[expected], minlength=2).tolist()
    assert kept.record["n_pool"] == len(train) and kept.record["n_kept"] == int(expected.sum())
    assert set(kept.images.split) == {"train"} and kept.images.class_names == small.class_names


def test_the_arm_draws_its_dose_from_what_the_rule_kept():
    arm = classify.parse_arm("real+pseudo@2")
    assert arm.pseudo and arm.uses_pool and not arm.uses_synthetic and arm.control == "real"
    rng = np.random.default_rng(0)
    real = _set(rng, np.array([0] * 10 + [1] * 30))
    pool = _set(rng, np.array([0] * 5 + [1] * 200))
    drawn = training_data(arm, real, pool, seed=0)
    np.testing.assert_array_equal(synthetic_need(arm, np.array([10, 30])), [20, 60])
    np.testing.assert_array_equal(np.bincount(drawn.ride_labels), [5, 60])        # class 0 kept only 5
    assert drawn.n_real == 40 and drawn.n_synthetic == 65
    with pytest.raises(MedsynError, match="needs an unlabelled pool: pass --unlabelled"):
        training_data(arm, real, None, seed=0)


@pytest.mark.parametrize("name", ["pseudo", "real+filtered-pseudo", "real+pretrain-pseudo@1"])
def test_the_pseudo_arm_rides_along_with_real_only(name):
    with pytest.raises(MedsynError, match="real\\+pseudo@R"):
        classify.parse_arm(name)


def _set(rng, labels):
    n = len(labels)
    return data.ImageSet(images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8), labels=labels,
                         split=np.full(n, "train"), class_names=("a", "b"), groups=np.full(n, ""),
                         paths=np.array([str(i) for i in range(n)]), source="made up")


@pytest.mark.parametrize("name", ["unlabelled-synth", "real+unlabelled-heldout@1", "real+unlabelled-pseudo@1"])
def test_synthetic_images_from_pool_generators_ride_along_with_real_only(name):
    with pytest.raises(MedsynError, match="real\\+unlabelled-synth@1"):
        classify.parse_arm(name)


def test_an_arm_from_pool_generators_is_its_labelled_only_twin_but_for_the_generators():
    twin = classify.parse_arm("real+pretrain-unlabelled-synth@2")
    labelled_only = classify.parse_arm("real+pretrain-synth@2")
    assert twin.unlabelled and not labelled_only.unlabelled and twin.uses_synthetic
    assert dataclasses.replace(twin, name=labelled_only.name, unlabelled=False) == labelled_only
