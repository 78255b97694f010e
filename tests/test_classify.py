"""Classifier runs on real fixture X-rays: every arm, the test-split guard, resume, checkpoints, 3 classes, CLI.

The GAN is another stage; here its output is replaced by a clearly labelled STAND-IN: noisy, horizontally flipped
copies of the real train images, shaped like the GAN's synthetic.npz (every image in the train split)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
import torch
import torchvision

from conftest import CHEST_XRAY_3CLASS, CHEST_XRAY_SMALL
from medsyn import data
from medsyn.classify import (ARMS, features, load_model, parse_arm, predict_proba, read_predictions, train_arm)
from medsyn.classify import models as classify_models
from medsyn.classify import batches as classify_batches
from medsyn.classify import files as classify_files
from medsyn.classify import train as classify_train
from medsyn.classify.arms import training_data
from medsyn.cli import main
from medsyn.config import DataConfig, preset
from medsyn.errors import MedsynError
from medsyn.metrics import METRICS
from medsyn.stats.paired import summarize_arms
from tiny import TINY_CLASSIFY as TINY


@pytest.fixture(scope="module")
def chest():
    return data.load(CHEST_XRAY_SMALL, DataConfig(size=28))


def stand_in_synthetic(real: data.ImageSet, copies: int = 3, seed: int = 0) -> data.ImageSet:
    """NOT GAN output: noisy, flipped copies of the real train images, standing in for synthetic.npz in tests."""
    train = real.subset("train")
    rng = np.random.default_rng(seed)
    images = np.concatenate([train.images[:, :, ::-1]] * copies).astype(int)
    images = np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)
    n = len(images)
    return dataclasses.replace(
        train, images=images, labels=np.tile(train.labels, copies), split=np.full(n, "train"),
        groups=np.full(n, ""), paths=np.array([f"stand-in[{i}]" for i in range(n)]), given_split=None,
        source="stand-in: noisy flipped copies of real train images")


@pytest.fixture(scope="module")
def synthetic(chest):
    return stand_in_synthetic(chest)


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_trains_and_is_scored_on_real_test(arm, chest, synthetic, tmp_path):
    result = train_arm(chest, arm, 0, TINY, tmp_path, synthetic=synthetic)
    assert {p.name for p in tmp_path.iterdir()} == set(classify_files.RUN_FILES)
    n_test = sum(chest.counts()["test"])
    assert result["split"] == "test" and result["n"] == n_test and result["arm"] == arm
    assert np.sum(result["confusion_matrix"]) == n_test
    assert result["threshold_rule"] == "youden_j_on_val" and "at_threshold_0.5" in result
    assert json.loads((tmp_path / "test_metrics.json").read_text()) == result
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == list(chest.subset("test").paths)
    recomputed = roc_auc_score([int(r["true"]) for r in rows], [float(r["p_PNEUMONIA"]) for r in rows])
    assert result["auc"] == pytest.approx(recomputed, abs=1e-9), "the reported AUC is the predictions' AUC"
    assert set(rows[0]) == {"row", "path", "true", "true_name", "p_NORMAL", "p_PNEUMONIA", "predicted",
                            "predicted_name"}
    seen = json.loads((tmp_path / "config.json").read_text())["training_set"]
    real_counts = np.array(chest.counts()["train"])
    parsed = parse_arm(arm)
    assert seen["n_real"] == (real_counts.sum() if parsed.real else 0)
    if parsed.balance:
        assert seen["per_class"] == [real_counts.max()] * 2
    elif parsed.synth_ratio:
        assert seen["n_synthetic"] == round(parsed.synth_ratio * real_counts.sum())


def test_arm_grammar_and_synthetic_draws(chest, synthetic):
    assert parse_arm("real+aug+synth").synth_ratio == 1 and parse_arm("real+aug+synth").augment
    assert parse_arm("synth@2").synth_ratio == 2 and not parse_arm("synth@2").real
    for bad in ("reel", "real+synth@0", "aug", "real+real", "synth+balance", "real+synth@1+balance"):
        with pytest.raises(MedsynError):
            parse_arm(bad)
    train = chest.subset("train")
    mixed = training_data(parse_arm("real+synth@0.5"), train, synthetic, seed=0)
    real_share = np.bincount(train.labels) / len(train)
    assert np.array_equal(mixed.stream_images, train.images)  # real-passes: real train is the stream
    assert mixed.n_synthetic == len(mixed.ride_labels) == round(0.5 * len(train))
    np.testing.assert_allclose(np.bincount(mixed.ride_labels) / mixed.n_synthetic, real_share, atol=0.05)
    same = training_data(parse_arm("real+synth@0.5"), train, synthetic, seed=0)
    other = training_data(parse_arm("real+synth@0.5"), train, synthetic, seed=1)
    assert np.array_equal(mixed.ride_images, same.ride_images)
    assert not np.array_equal(mixed.ride_images, other.ride_images)
    pooled = training_data(parse_arm("real+synth@0.5"), train, synthetic, seed=0, exposure="equal-steps")
    assert len(pooled.stream_labels) == len(train) + mixed.n_synthetic and len(pooled.ride_labels) == 0
    with pytest.raises(MedsynError, match="synthetic pool holds"):
        training_data(parse_arm("real+synth@5"), train, synthetic, seed=0)
    with pytest.raises(MedsynError, match="needs synthetic images"):
        training_data(parse_arm("synth"), train, None, seed=0)
    renamed = dataclasses.replace(synthetic, class_names=("A", "B"))
    with pytest.raises(MedsynError, match="classes"):
        training_data(parse_arm("synth"), train, renamed, seed=0)


def test_test_split_is_read_once_after_the_model_is_saved(chest, tmp_path, monkeypatch):
    """A spy on the sealed test split records every read and what the run folder held at that moment."""
    reads = []
    real_open = classify_train.SealedTestSplit.open

    def spying_open(self):
        reads.append(sorted(p.name for p in tmp_path.iterdir()))
        return real_open(self)

    monkeypatch.setattr(classify_train.SealedTestSplit, "open", spying_open)
    train_arm(chest, "real+aug", 0, TINY, tmp_path)
    assert reads == [["config.json", "history.csv", "model.pt", "val_metrics.json"]]
    sealed = classify_train.SealedTestSplit(chest)
    sealed.open()
    with pytest.raises(RuntimeError, match="already read"):
        sealed.open()


def test_test_rows_do_not_influence_training_or_selection(chest, tmp_path):
    """Replacing every test image by noise and every test label by its opposite changes nothing before the final
    evaluation: same weights, history, threshold and validation metrics."""
    is_test = chest.split == "test"
    rng = np.random.default_rng(0)
    scrambled = dataclasses.replace(
        chest, images=np.where(is_test[:, None, None, None], rng.integers(0, 256, chest.images.shape, dtype=np.uint8),
                               chest.images),
        labels=np.where(is_test, 1 - chest.labels, chest.labels))
    config = dataclasses.replace(TINY, epochs=2, patience=2)
    first = train_arm(chest, "real", 3, config, tmp_path / "a")
    second = train_arm(scrambled, "real", 3, config, tmp_path / "b")
    model_a, meta_a = load_model(tmp_path / "a" / "model.pt")
    model_b, meta_b = load_model(tmp_path / "b" / "model.pt")
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert meta_a["threshold"] == meta_b["threshold"] and meta_a["val_metrics"] == meta_b["val_metrics"]
    history = lambda d: [r.split(",")[:4] for r in (tmp_path / d / "history.csv").read_text().splitlines()]  # not seconds
    assert history("a") == history("b")
    assert first["confusion_matrix"] != second["confusion_matrix"]  # the test rows themselves did change


def test_finished_run_is_returned_without_retraining(chest, tmp_path, monkeypatch):
    first = train_arm(chest, "real", 0, TINY, tmp_path)
    stamp = (tmp_path / "model.pt").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(classify_train, "fit", no_training)
    assert train_arm(chest, "real", 0, TINY, tmp_path) == first
    assert train_arm(chest, "real", 0, dataclasses.replace(TINY, threads=2), tmp_path) == first  # where, not what
    assert (tmp_path / "model.pt").stat().st_mtime_ns == stamp
    with pytest.raises(MedsynError, match="different"):
        train_arm(chest, "real", 1, TINY, tmp_path)


def test_checkpoint_reproduces_the_test_predictions(chest, tmp_path):
    train_arm(chest, "real", 0, TINY, tmp_path)
    model, meta = load_model(tmp_path / "model.pt")
    assert not model.training
    assert meta["format"] == "medsyn-classifier" and meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert meta["image_size"] == 28 and meta["channels"] == 1 and meta["arm"] == "real"
    test = chest.subset("test")
    saved = read_predictions(tmp_path)
    np.testing.assert_allclose(predict_proba(model, meta, test.images), saved["proba"], atol=1e-6)
    assert np.array_equal(saved["y_true"], test.labels)
    assert features(model, meta, test.images).shape == (len(test), 32)
    assert predict_proba(model, meta, test.images[:0]).shape == (0, 2)  # no images: no rows, the same columns
    with pytest.raises(MedsynError, match="uint8 images shaped"):
        predict_proba(model, meta, np.zeros((2, 32, 32, 1), np.uint8))
    (tmp_path / "other.pt").write_bytes(b"not a model")
    with pytest.raises(MedsynError, match="classifier .*not a file of tensors"):
        load_model(tmp_path / "other.pt")


def test_vgg16_is_torchvisions_conv_stack_and_the_original_head():
    ours = classify_models.build("vgg16", 2, 3, width=1.0, batch_norm=False)
    with torch.device("meta"):  # shapes only: skips allocating torchvision's 120M-parameter dense layers
        reference = torchvision.models.vgg16(weights=None).features
    assert [p.shape for p in ours.embed_net[0].parameters()] == [p.shape for p in reference.parameters()]
    assert 14.7e6 < sum(p.numel() for p in ours.parameters()) < 14.9e6  # the original's ~14.8M
    narrow = classify_models.build("vgg16", 3, 1, width=0.125)
    x = torch.zeros(4, 1, 28, 28)  # under 32 px: upsampled inside the model
    assert narrow.eval()(x).shape == (4, 3) and narrow.embed(x).shape == (4, 32)
    assert classify_models.build("resnet18", 3, 1).eval()(x).shape == (4, 3)


def test_pretrained_weights_come_only_from_the_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MedsynError, match="not in the torchvision cache"):
        classify_models.build("resnet18", 2, 1, pretrained=True)
    with pytest.raises(MedsynError, match="width 1"):
        classify_models.build("vgg16", 2, 1, width=0.5, pretrained=True)
    # a weights file in the cache (random weights standing in for ImageNet's) is loaded; gray sums RGB kernels
    saved = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(saved, cache / torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1])
    model = classify_models.build("resnet18", 2, 1, pretrained=True)
    assert torch.allclose(model.embed_net.conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.embed_net.layer4[1].conv2.weight, saved["layer4.1.conv2.weight"])


@pytest.mark.slow
def test_three_classes_end_to_end_through_the_cli(tmp_path, capsys):
    three = data.load(CHEST_XRAY_3CLASS, DataConfig(size=28))
    assert three.class_names == ("BACTERIA", "NORMAL", "VIRUS")
    data.save_npz(stand_in_synthetic(three), tmp_path / "synth" / "synthetic.npz")
    results = {}
    for arm in ("real", "real+synth@1"):
        for seed in (0, 1):
            out = tmp_path / f"{arm}-{seed}"
            assert main(["classify", "train", "--data", str(CHEST_XRAY_3CLASS), "--size", "28", "--arm", arm,
                         "--seed", str(seed), "--out", str(out), "--synthetic", str(tmp_path / "synth"),
                         "--preset", "smoke", "--batch-size", "16"]) == 0
            results.setdefault(arm, {})[seed] = read_predictions(out)
    printed = capsys.readouterr().out
    assert "VALIDATION split" in printed and "TEST" not in printed
    metrics = json.loads((tmp_path / "real-0" / "test_metrics.json").read_text())
    assert metrics["threshold"] is None and metrics["threshold_rule"] == "argmax"
    assert np.shape(metrics["confusion_matrix"]) == (3, 3) and "at_threshold_0.5" not in metrics
    assert results["real"][0]["proba"].shape == (20, 3)
    summary = summarize_arms(results, {"real+synth@1": "real"}, n_bootstrap=100)
    assert [(c["arm"], c["control"]) for c in summary["comparisons"]] == [("real+synth@1", "real")] * len(METRICS)
    json.dumps(summary, allow_nan=False)


def test_cli_rejects_bad_requests_with_a_message(tmp_path, capsys, monkeypatch):
    assert main(["classify", "train", "--data", str(CHEST_XRAY_SMALL), "--arm", "real+sinth",
                 "--out", str(tmp_path / "x")]) == 2
    assert "cannot read 'sinth'" in capsys.readouterr().err
    assert main(["classify", "train", "--data", str(CHEST_XRAY_SMALL), "--arm", "synth", "--preset", "smoke",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--synthetic" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # offline, nothing cached
    assert main(["classify", "train", "--data", str(CHEST_XRAY_SMALL), "--arm", "real", "--pretrained",
                 "--out", str(tmp_path / "z")]) == 2
    assert "not in the torchvision cache" in capsys.readouterr().err
    assert preset("quick").classify.width == 0.125


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch-size", "0"), ("--lr", "-1")])
def test_impossible_training_settings_are_refused(tmp_path, capsys, flag, value):
    from medsyn.cli import main

    code = main(["classify", "train", "--arm", "real", "--seed", "0", "--out", str(tmp_path / "r"), flag, value])
    err = capsys.readouterr().err
    shown = f"{float(value):g}" if flag == "--lr" else value  # the one numeric validator names the flag
    assert code == 2 and f"{flag} {shown}" in err and ": give " in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def _conv_weights(run_dir):
    state = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("embed_net.0.") and k.endswith("weight") and v.ndim == 4}


def test_last_selection_trains_every_epoch_and_keeps_the_final_weights(chest):
    """`selection="last"` makes no choice on val: every epoch runs (patience is not consulted) and the kept weights
    are the final ones, while val-loss selection on the same seed keeps an earlier epoch."""
    data_ = training_data(parse_arm("real"), chest.subset("train"), None, 0, TINY.exposure)
    epochs = dataclasses.replace(TINY, epochs=6, patience=6)
    by_loss = classify_train.fit(data_, chest.subset("val"), chest.n_classes, epochs, seed=0)
    assert by_loss.best_epoch < 6              # precondition: val loss rose after its minimum on this data
    last = classify_train.fit(data_, chest.subset("val"), chest.n_classes,
                              dataclasses.replace(epochs, patience=1, selection="last"), seed=0)
    assert [h["epoch"] for h in last.history] == list(range(1, 7)) and last.best_epoch == 6
    assert [h["val_loss"] for h in last.history] == [h["val_loss"] for h in by_loss.history]  # the same training
    norm = classify_train.classifier(TINY, chest.n_classes, chest.channels).norm
    _, kept_loss = classify_train._evaluate(last.model, chest.subset("val"), norm)
    assert kept_loss == pytest.approx(last.history[-1]["val_loss"], abs=1e-6)
    assert kept_loss != pytest.approx(by_loss.history[by_loss.best_epoch - 1]["val_loss"], abs=1e-6)


def test_arms_of_one_replicate_start_from_identical_weights(chest, synthetic, tmp_path):
    # a learning rate of 1e-12 leaves every weight within about 1e-10 of where it started
    still = dataclasses.replace(TINY, lr=1e-12)
    runs = {arm: tmp_path / arm for arm in ("real", "real+synth@1", "real+aug")}
    for arm, folder in runs.items():
        train_arm(chest, arm, 3, still, folder, synthetic=synthetic)
    train_arm(chest, "real", 4, still, tmp_path / "other-seed")
    reference = _conv_weights(runs["real"])
    assert len(reference) == 13                                   # VGG16's 13 conv layers
    for folder in runs.values():
        for name, weight in _conv_weights(folder).items():
            torch.testing.assert_close(weight, reference[name], atol=1e-8, rtol=0)
    other = _conv_weights(tmp_path / "other-seed")
    assert not torch.allclose(other[next(iter(other))], reference[next(iter(other))], atol=1e-3)


def test_every_arm_sees_every_real_image_equally_often_by_default(chest, synthetic, tmp_path):
    two = dataclasses.replace(TINY, epochs=2, patience=5)
    seen = {}
    for arm in ("real", "real+synth@2", "real+balance", "synth"):
        train_arm(chest, arm, 0, two, tmp_path / arm, synthetic=synthetic)
        seen[arm] = json.loads((tmp_path / arm / "val_metrics.json").read_text())
    n_real = sum(chest.counts()["train"])
    batch = min(TINY.batch_size, n_real)
    steps = max(1, round(n_real / batch))
    for arm in ("real", "real+synth@2", "real+balance"):
        epochs = seen[arm]["best_epoch"]
        assert seen[arm]["real_passes"] == pytest.approx(epochs * steps * batch / n_real, abs=1e-4)
        assert seen[arm]["real_seen"] == epochs * steps * batch
    assert seen["real"]["synthetic_seen"] == 0 and seen["synth"]["real_passes"] == 0
    assert seen["real+synth@2"]["synthetic_seen"] == 2 * seen["real+synth@2"]["real_seen"]
    counts = np.array(chest.counts()["train"])
    top_up = (counts.max() - counts).sum() / n_real
    assert seen["real+balance"]["synthetic_seen"] == round(top_up * seen["real+balance"]["real_seen"])
    pooled = dataclasses.replace(two, exposure="equal-steps")
    train_arm(chest, "real+synth@2", 0, pooled, tmp_path / "pooled", synthetic=synthetic)
    old = json.loads((tmp_path / "pooled" / "val_metrics.json").read_text())
    assert old["real_passes"] < 0.5 * old["best_epoch"]          # the old rule: about 1/3 of a pass per epoch


def _curve_point(fraction: float) -> data.ImageSet:
    """The bundled data at one learning-curve size, as `medsyn run` makes it (train subset, val in proportion)."""
    from medsyn.data.splits import learning_curve_point

    full = data.load()
    return full.select(learning_curve_point(full.labels, full.groups, full.split, fraction))


@pytest.mark.slow
@pytest.mark.parametrize("exposure", ["real-passes", "equal-steps"])
@pytest.mark.parametrize("arm", ["real+synth@0.5", "real+synth@1", "real+synth@2", "real+heldout@1"])
def test_an_arm_at_dose_r_sees_r_extra_images_per_real_image_at_the_smallest_size(arm, exposure, tmp_path):
    """94 real train images, the study preset's minimum of 20 steps of 64 per epoch: the dose holds within 5%."""
    study = preset("study").classify
    config = dataclasses.replace(study, width=0.0625, epochs=2, patience=5, exposure=exposure)
    point = _curve_point(0.02)
    assert sum(point.counts()["train"]) == 94
    pool = stand_in_synthetic(point, copies=3)
    train_arm(point, arm, 0, config, tmp_path, synthetic=pool)
    seen = json.loads((tmp_path / "val_metrics.json").read_text())
    ratio = parse_arm(arm).synth_ratio
    assert seen["real_seen"] > 0 and seen["synthetic_seen"] / seen["real_seen"] == pytest.approx(ratio, rel=0.05)
    assert seen["dose"] == pytest.approx(ratio, rel=0.05)


@pytest.mark.slow
def test_the_dose_holds_on_the_full_train_split(tmp_path):
    """The largest setting a preset uses: all 4708 train images, one pass per epoch."""
    config = dataclasses.replace(preset("study").classify, width=0.0625, epochs=1, patience=1)
    full = data.load()
    train_arm(full, "real+synth@1", 0, config, tmp_path, synthetic=stand_in_synthetic(full, copies=1))
    seen = json.loads((tmp_path / "val_metrics.json").read_text())
    assert seen["dose"] == pytest.approx(1.0, rel=0.05) and seen["real_passes"] == pytest.approx(1.0, rel=0.01)


def test_real_batches_their_augmentation_and_dropout_draws_agree_across_arms(chest, synthetic):
    """Common random numbers: with augmentation on, the real images of every step (their order and their augmented
    pixels) and the dropout draws are the same with and without ride-along images."""
    norm = classify_models.normalization(False, chest.channels)
    transform = classify_batches.augmentation(chest.size)
    draws = {}
    for arm in ("real", "real+synth@1", "real+synth@2"):
        data_ = training_data(parse_arm(arm), chest.subset("train"), synthetic, 3)
        batches = classify_batches.Batches(data_, 16, 6, 3, transform, norm)
        steps = []
        for _ in range(2):
            for x, y in batches.epoch():
                mask = torch.nn.functional.dropout(torch.ones(len(x), 64), 0.4, training=True)[:16]
                steps.append((x[:16].clone(), y[:16].clone(), mask))            # the real rows' dropout masks
        draws[arm] = steps
    for arm in ("real+synth@1", "real+synth@2"):
        for (x, y, drop), (x0, y0, drop0) in zip(draws[arm], draws["real"]):
            assert torch.equal(y, y0) and torch.equal(x, x0) and torch.equal(drop, drop0)
    assert not torch.equal(draws["real"][0][0], draws["real"][1][0])          # fresh draws every step
