"""A study with an unlabelled pool (--unlabelled): the plan (the real-only classifier labels the pool before the
generators and real+pseudo@R use it), the refusals, and a learning curve run twice, once with its TEST split
scrambled: the pools, the pseudo-labels, the generators and model selection are the same; only the test metrics
differ. The records say what each generator learned from."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from medsyn import data
from medsyn.cli import main
from medsyn.classify.arms import ARMS as NAMED_ARMS, arm_name, parse_arm, with_unlabelled_arms
from medsyn.config import preset
from medsyn.data.export import save_npz
from medsyn.errors import MedsynError
from medsyn.report.verdict import headline
from medsyn.stats.results import pseudo_baselines
from medsyn.study import jobs
from medsyn.study.plan import build_plan
from medsyn.study.run import validate

ARMS = ("real", "real+pseudo@1", "real+synth@1", "real+unlabelled-synth@1")


def _config(**changes):
    settings = dict(arms=ARMS, seeds=(0, 1), n_generators=2, train_sizes=(0.5, 1.0), unlabelled="rest")
    return dataclasses.replace(preset("smoke"), **{**settings, **changes})


def test_the_real_only_classifier_labels_the_pool_before_the_generators_and_the_pseudo_arm_use_it():
    plan = {j.name: j for j in build_plan(_config(), [70, 230])}
    for k, seed in enumerate((0, 1)):
        assert f"sizes/f0.5/arms/real/seed{seed}" in plan[f"sizes/f0.5/gan/cgan-unlabelled/g{k}"].deps
        for size in ("f0.5", "f1"):
            assert plan[f"sizes/{size}/gan/cgan/g{k}"].deps == ("data",)        # labelled-only beside it
        assert f"sizes/f1/gan/cgan-unlabelled/g{k}" not in plan                   # rest: no pool at f1
    synth, twin = (plan[f"sizes/f0.5/arms/{arm}/seed1"].deps for arm in ("real+synth@1", "real+unlabelled-synth@1"))
    assert synth == ("data", "sizes/f0.5/synthetic/cgan/g1")
    assert twin == ("data", "sizes/f0.5/synthetic/cgan-unlabelled/g1")
    given = {j.name: j for j in build_plan(_config(unlabelled="pool.npz"), [70, 230])}
    assert "sizes/f1/arms/real/seed1" in given["sizes/f1/gan/cgan-unlabelled/g1"].deps  # a given pool: every size
    assert "sizes/f1/arms/real+pseudo@1/seed0" in given and "sizes/f1/arms/real+unlabelled-synth@1/seed0" in given
    assert "sizes/f0.5/arms/real/seed1" in plan["sizes/f0.5/arms/real+pseudo@1/seed1"].deps
    assert not any(name.startswith(("sizes/f1/arms/real+pseudo@1", "sizes/f1/arms/real+unlabelled")) for name in plan)
    only_pool = {j.name for j in build_plan(_config(arms=("real", "real+unlabelled-synth@1")), [70, 230])}
    assert "sizes/f0.5/gan/cgan-unlabelled/g0" in only_pool and "sizes/f0.5/gan/cgan/g0" not in only_pool
    assert "sizes/f1/gan/cgan/g0" in only_pool                                      # audited where no arm draws


@pytest.mark.parametrize("changes, message", [
    (dict(unlabelled=None), "learns from an unlabelled pool labelled by the real-only classifier; pass --unlabelled"),
    (dict(arms=("real", "real+unlabelled-synth@1"), unlabelled=None), "real+unlabelled-synth@1 learns from an"),
    (dict(arms=("real", "real+synth@1")), "no arm uses the pool; add real+pseudo@1"),
    (dict(train_sizes=(1.0,)), "--unlabelled rest gives each learning-curve size"),
    (dict(arms=("real+aug", "real+aug+pseudo")), "labelled by each replicate's real-only classifier (arm real)"),
])
def test_refused_before_anything_is_written(changes, message):
    with pytest.raises(MedsynError, match=re.escape(message)):
        validate(_config(**changes))


@pytest.mark.slow
def test_a_run_refuses_a_pool_holding_a_val_image(bundled_slice, tmp_path, capsys):
    small = data.load(bundled_slice)
    np.savez(tmp_path / "pool.npz", images=np.concatenate([small.subset("train").images[:10],
                                                            small.subset("val").images[4:5]]))
    out = tmp_path / "out"
    code = main(["run", "--preset", "smoke", "--data", str(bundled_slice), "--unlabelled", str(tmp_path / "pool.npz"),
                 "--arms", ",".join(ARMS), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds 1 image(s) that are val or test images" in err and "(val)" in err, err
    assert not out.exists()


@pytest.mark.slow
def test_rest_is_the_positive_controls_rows_without_their_labels(bundled_slice, tmp_path):
    study = jobs.Study(_config(), str(bundled_slice), tmp_path)
    pool, heldout = jobs.unlabelled_pool(study, {"size": 0.5}), jobs.heldout_pool(study, {"size": 0.5})
    assert not hasattr(pool, "labels") and len(pool) > 100
    assert list(pool.paths) == list(heldout.paths) and np.array_equal(pool.images, heldout.images)


@pytest.mark.slow
def test_a_given_pool_is_read_at_the_datas_size_and_channels(bundled_slice, tmp_path):
    small = data.load(bundled_slice)
    np.savez(tmp_path / "pool.npz", images=np.kron(small.subset("train").images[:6, ..., 0], np.ones((1, 2, 2), np.uint8)),
             labels=np.zeros(6))
    study = jobs.Study(_config(unlabelled=str(tmp_path / "pool.npz")), str(bundled_slice), tmp_path)
    pool = jobs.unlabelled_pool(study, {"size": 0.5})
    assert pool.images.shape == (6, 28, 28, 1) and not hasattr(pool, "labels")
    assert jobs.unlabelled_pool(study, {"size": 1.0}) is pool                  # the same pool at every size


def _sources(folder, bundled_slice):
    """The slice, and its twin whose test images are noise with random labels."""
    real = data.load(bundled_slice)
    test = real.split == "test"
    rng = np.random.default_rng(0)
    images, labels = real.images.copy(), real.labels.copy()
    images[test] = rng.integers(0, 256, images[test].shape, dtype=np.uint8)
    labels[test] = rng.integers(0, 2, test.sum())
    paths = folder / "real.npz", folder / "scrambled.npz"
    save_npz(real, paths[0])
    save_npz(dataclasses.replace(real, images=images, labels=labels), paths[1])
    return paths


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory, bundled_slice):
    folder = tmp_path_factory.mktemp("unlabelled")
    runs = []
    for source in _sources(folder, bundled_slice):
        out = folder / source.stem
        assert main(["run", "--preset", "smoke", "--data", str(source), "--unlabelled", "rest", "--arms",
                     ",".join(ARMS), "--fractions", "0.5,1", "--seeds", "0", "--n-generators", "1",
                     "--epochs", "10",  # a labeller that reaches the 0.9 val precision for some pool images
                     "--executor", "sequential", "--out", str(out)]) == 0
        runs.append(out)
    return runs


def _json(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_each_generator_records_what_it_learned_from(twin_runs):
    run = twin_runs[0]
    results = _json(run / "results.json")
    half, whole = results["curve"]
    record = _json(run / "sizes" / "f0.5" / "gan" / "cgan-unlabelled" / "g0" / "config.json")["learned_from"]
    labelled_only = _json(run / "sizes" / "f0.5" / "gan" / "cgan" / "g0" / "config.json")["learned_from"]
    assert labelled_only["unlabelled_images"] is None and labelled_only["labelled_train_images"] == half["n_train"]
    pool = record["unlabelled_images"]
    assert record["labelled_train_images"] == half["n_train"] and record["starting_weights"] == "none"
    assert pool["n_pool"] == whole["n_train"] - half["n_train"] and pool["source"].startswith("rest: ")
    assert 0 < pool["n_kept"] == sum(pool["kept_per_class"]) and pool["labeller"] == "real seed0"
    assert half["generators_learned_from"] == {"cgan/g0": labelled_only, "cgan-unlabelled/g0": record}
    assert list(whole["generators_learned_from"]) == ["cgan/g0"]                # nothing lies outside f1
    assert results["generators_learned_from"] == whole["generators_learned_from"]
    assert "Learned from: 300 labelled train images" in (run / "report.html").read_text()


@pytest.mark.slow
def test_the_pseudo_arm_draws_what_the_rule_kept_at_the_dose(twin_runs):
    run = twin_runs[0]
    results = _json(run / "results.json")
    half, whole = results["curve"]
    assert "real+pseudo@1" in half["arms"] and "real+pseudo@1" not in whole["arms"]
    record = _json(run / "sizes" / "f0.5" / "arms" / "real+pseudo@1" / "seed0" / "config.json")
    kept = np.array(record["pool"]["kept_per_class"])
    need = np.array(half["per_class"])                                   # R = 1: one pool image per real one
    assert record["training_set"]["n_synthetic"] == int(np.minimum(need, kept).sum())
    assert record["pool"]["n_pool"] == whole["n_train"] - half["n_train"]
    assert any(c["arm"] == "real+pseudo@1" and c["control"] == "real" for c in half["comparisons"])
    beyond = [c for c in half["comparisons"] if c.get("versus") == "baseline"]
    assert {(c["arm"], c["control"]) for c in beyond} == {("real+unlabelled-synth@1", "real+pseudo@1")}
    said = headline(half, "auc")
    assert "No arm with synthetic images beat the pseudo-labelled pool at the same dose" in said
    assert "real+pseudo@1 vs real " in said and "real+unlabelled-synth@1 vs real+pseudo@1 " in said


def test_each_synthetic_arm_meets_the_pseudo_label_arm_of_its_dose_and_control():
    arms = ("real", "real+aug", "real+pseudo@1", "real+aug+pseudo@1", "real+synth@1", "real+unlabelled-synth@1",
            "real+unlabelled-synth@2", "real+aug+unlabelled-synth@1", "real+filtered-unlabelled-synth@1",
            "real+balance", "synth")
    assert pseudo_baselines(arms) == {"real+unlabelled-synth@1": "real+pseudo@1",
                                      "real+filtered-unlabelled-synth@1": "real+pseudo@1",
                                      "real+aug+unlabelled-synth@1": "real+aug+pseudo@1"}      # labelled-only: none


def test_with_a_pool_a_presets_arms_gain_their_twins_and_the_pseudo_baseline_of_each_dose():
    assert with_unlabelled_arms(("real", "real+heldout@1", "real+synth@0.5", "real+pretrain-synth@1", "real+aug",
                                 "real+aug+synth", "real+balance")) == (
        "real", "real+heldout@1", "real+synth@0.5", "real+pretrain-synth@1", "real+aug", "real+aug+synth",
        "real+balance", "real+pseudo@0.5", "real+pseudo@1", "real+aug+pseudo@1",
        "real+unlabelled-synth@0.5", "real+pretrain-unlabelled-synth@1", "real+aug+unlabelled-synth@1")


@pytest.mark.parametrize("name", [*NAMED_ARMS, "real+heldout@2", "real+aug+pseudo@0.5", "real+filtered-synth@1",
                                  "real+pretrain-unlabelled-synth@3", "real+aug+balance", "synth@2"])
def test_an_arm_written_back_as_a_name_reads_as_the_same_arm(name):
    arm = parse_arm(name)
    assert parse_arm(arm_name(arm)) == dataclasses.replace(arm, name=arm_name(arm))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["f0.5", "f1"])
def test_the_pool_its_labels_and_the_generator_never_see_the_test_split(twin_runs, size):
    generator = "cgan-unlabelled" if size == "f0.5" else "cgan"
    a, b = (torch.load(run / "sizes" / size / "gan" / generator / "g0" / "final.pt", map_location="cpu",
                       weights_only=True) for run in twin_runs)
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    records = [_json(run / "sizes" / size / "gan" / generator / "g0" / "config.json")["learned_from"]
               for run in twin_runs]
    assert _but_source(records[0]["unlabelled_images"]) == _but_source(records[1]["unlabelled_images"])
    for arm in ARMS if size == "f0.5" else ("real", "real+synth@1"):
        folders = [run / "sizes" / size / "arms" / arm / "seed0" for run in twin_runs]
        assert _json(folders[0] / "val_metrics.json") == _json(folders[1] / "val_metrics.json"), arm
        configs = [_json(f / "config.json") for f in folders]
        assert configs[0]["training_set"] == configs[1]["training_set"], arm
        assert _but_source(configs[0].get("pool")) == _but_source(configs[1].get("pool")), arm
    tests = [_json(run / "sizes" / size / "arms" / "real" / "seed0" / "test_metrics.json") for run in twin_runs]
    assert tests[0]["auc"] != tests[1]["auc"]                               # the scrambled split did reach the end


def _but_source(record):
    """A pool's record without its source (which names the twin's file)."""
    return None if record is None else {k: v for k, v in record.items() if k != "source"}
