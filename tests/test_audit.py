"""The audit of synthetic data, on closed forms and on "synthetic" sets built from the bundled PneumoniaMNIST:
shifted and mirrored copies of training images (memorized), real test images (genuinely new to the audit, which
never reads the test split), blurred noisy images (a bad generator)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medsyn import data
from medsyn.cli import main
from medsyn.config import AuditConfig, DataConfig, preset
from medsyn.errors import MedsynError
from medsyn.audit import features, fidelity, memorization
from medsyn.audit.run import FLOOR_SET, NEW_REAL_SET, _halves, as_synthetic, run_audit, table_rows

# The smoke preset's settings, so `medsyn audit --preset smoke` in the CLI tests reuses the encoder trained here;
# every planted image is checked for near-copies.
CONFIG = dataclasses.replace(preset("smoke").audit, n_memorization=600)


# --- metrics against closed forms ---------------------------------------------------------------------------------

def test_identical_feature_sets_give_zero_fid_kid_and_full_precision_recall():
    x = np.random.default_rng(0).normal(size=(600, 16))
    values = fidelity.compare(x, x.copy(), k=5, kid_subsets=5, kid_subset_size=600, seed=0)
    shifted = fidelity.compare(x, x + 0.5, k=5, kid_subsets=5, kid_subset_size=600, seed=0)
    assert abs(values["fid"]) < 1e-6 and shifted["fid"] == pytest.approx(16 * 0.5**2, rel=1e-6)
    # The unbiased MMD^2 of a set against itself is not exactly 0: its cross term keeps the kernel's diagonal.
    # Closed form with K = (x.x / d + 1)^3: 2 S_off / (m (m - 1)) - 2 (S_off + S_diag) / m^2, i.e. -O(1/m).
    kernel = (x @ x.T / x.shape[1] + 1) ** 3
    m, s_diag = len(x), np.trace(kernel)
    s_off = kernel.sum() - s_diag
    assert values["kid"] == pytest.approx(2 * s_off / (m * (m - 1)) - 2 * (s_off + s_diag) / m**2, rel=1e-6)
    assert values["kid_std"] < 1e-9 and abs(values["kid"]) < 0.05 * shifted["kid"]
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    assert values["diversity_ratio"] == pytest.approx(1.0)


def test_disjoint_feature_sets_give_zero_precision_recall_and_large_fid_kid():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 20.0
    values = fidelity.compare(real, fake, k=5, kid_subsets=10, kid_subset_size=200, seed=0)
    assert values["precision"] == values["recall"] == values["density"] == values["coverage"] == 0.0
    assert values["fid"] == pytest.approx(8 * 20.0**2, rel=0.05)
    assert values["kid"] > 100 * values["kid_std"]


def test_frechet_distance_matches_closed_form_for_two_gaussians():
    rng = np.random.default_rng(2)
    d, c = 5, 0.7
    mu_1, mu_2 = rng.normal(size=d), rng.normal(size=d)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = rng.uniform(0.2, 3.0, size=d)
    sigma_1, sigma_2 = c * np.eye(d), rotation @ np.diag(b) @ rotation.T
    # S1 = cI commutes with S2, so Tr((S1 S2)^1/2) = sqrt(c) * sum(sqrt(b)).
    expected = np.sum((mu_1 - mu_2) ** 2) + d * c + b.sum() - 2 * np.sqrt(c) * np.sqrt(b).sum()
    assert fidelity.frechet_distance(mu_1, sigma_1, mu_2, sigma_2) == pytest.approx(expected, rel=1e-9)
    # Diagonal covariances: sum of squared mean and standard-deviation differences.
    a = rng.uniform(0.2, 3.0, size=d)
    diagonal = np.sum((mu_1 - mu_2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fidelity.frechet_distance(mu_1, np.diag(a), mu_2, np.diag(b)) == pytest.approx(diagonal, rel=1e-9)
    # From samples of the two Gaussians, the estimate converges on the closed form.
    samples_1 = rng.multivariate_normal(mu_1, sigma_1, size=40_000)
    samples_2 = rng.multivariate_normal(mu_2, sigma_2, size=40_000)
    assert fidelity.fid(samples_1, samples_2) == pytest.approx(expected, rel=0.03)


# --- the audit on the bundled PneumoniaMNIST ----------------------------------------------------------------------

def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The image moved by (dy, dx) pixels, the uncovered edge filled with black (not wrapped around)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    return padded[2 - dy:2 - dy + h, 2 - dx:2 - dx + w]


@pytest.fixture(scope="module")
def real():
    return data.load()


def chosen_rows(real) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The audits' draws from one seed: 300 training images to plant, then 300 real test images (new images)."""
    rng = np.random.default_rng(0)
    planted = rng.choice(len(real.subset("train")), 300, replace=False)
    return rng, planted, rng.choice(len(real.subset("test")), 300, replace=False)


@pytest.fixture(scope="module")
def audits(real, tmp_path_factory):
    """Three audits: training images planted shifted or mirrored among 300 real test images (new to the audit,
    which never reads test); a blurred, noisy bad generator; and the 300 real test images alone."""
    rng, planted, new = chosen_rows(real)
    train, test = real.subset("train"), real.subset("test")
    moves = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]
    copies = [shifted(train.images[i], *moves[n % len(moves)]) for n, i in enumerate(planted[:150])]
    copies += [train.images[i][:, ::-1] for i in planted[150:]]  # mirrored left-right
    mixed = as_synthetic(np.concatenate([np.stack(copies), test.images[new]]),
                         np.concatenate([train.labels[planted], test.labels[new]]), real.class_names, "planted")
    noisy = gaussian_filter(train.images[planted].astype(float), sigma=(0, 1.5, 1.5, 0)) \
        + rng.normal(0, 40, train.images[planted].shape)
    degraded = as_synthetic(np.clip(noisy, 0, 255), train.labels[planted], real.class_names, "degraded")
    test_only = as_synthetic(test.images[new], test.labels[new], real.class_names, "test-half")
    out = tmp_path_factory.mktemp("audit")
    results = {name: run_audit(real, synthetic, out / name, CONFIG, name)
               for name, synthetic in (("planted", mixed), ("degraded", degraded), ("test-half", test_only))}
    return results, out, planted, train


def neighbour_rows(folder) -> list[dict]:
    with open(folder / "nearest_neighbours.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_shifted_and_mirrored_training_images_are_flagged_and_new_images_are_not(audits):
    results, out, planted, train = audits
    memo = results["planted"]["memorization"]
    rows = neighbour_rows(out / "planted")
    flags = np.array([int(row["near_copy"]) for row in rows])
    assert flags[:300].all(), "every shifted or mirrored training image must be a near-copy"
    assert flags[300:].mean() < 0.03, "real test images are new patients, not copies"
    assert memo["near_copies"] == flags.sum() and memo["n_checked"] == 600
    # each planted image is matched to its source (or a pixel-identical duplicate of it), undoing the move
    assert all(float(row["best_correlation"]) > 0.995 for row in rows[:300])
    assert sum(row["best_match_train_path"] == train.paths[i] for row, i in zip(rows, planted)) > 0.9 * 300
    assert not rows[0]["best_transform"].startswith("flip") and rows[150]["best_transform"].startswith("flip")
    # the yardstick is real val: about 1% of its new images pass the 99th-percentile rule by construction
    assert memo["baseline_split"] == "val" and memo["n_baseline"] == 524
    assert 0.005 < memo["baseline_near_copy_share"] < 0.02
    assert memo["baseline_duplicates_of_train"] == 8  # PneumoniaMNIST's own val images that repeat a train image
    assert memo["threshold"]["correlation"] < CONFIG.exact_copy_correlation
    assert results["degraded"]["memorization"]["near_copies"] == 0


def generator_copy(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """What a generator's near-copy also does to a training image: a zoom-crop of 4-11% at a random place, a rotation
    of 3-5 degrees, a gamma and contrast change, or a light blur."""
    from PIL import Image, ImageFilter

    picture, side = Image.fromarray(image[..., 0]), image.shape[0]
    if kind == "zoom":
        crop = int(round(side * (1 - rng.uniform(0.04, 0.11))))
        x, y = rng.integers(0, side - crop + 1, size=2)
        picture = picture.crop((x, y, x + crop, y + crop)).resize((side, side), Image.Resampling.BICUBIC)
    elif kind == "rotation":
        picture = picture.rotate(rng.choice([-1, 1]) * rng.uniform(3, 5), resample=Image.Resampling.BILINEAR)
    elif kind == "gamma":
        values = (np.asarray(picture) / 255.0) ** rng.choice([0.6, 0.7, 1.4, 1.6])
        values = np.clip((values - 0.5) * rng.uniform(0.8, 1.2) + 0.5, 0, 1)
        picture = Image.fromarray(np.round(values * 255).astype(np.uint8))
    else:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    return np.asarray(picture)[..., None]


@pytest.mark.slow
def test_zoomed_rotated_gamma_changed_and_blurred_copies_are_flagged_and_new_images_are_not(real):
    """The audit's near-copy rule (the one detector, the real-val yardstick) on what generators' copies do beyond
    shifts and mirroring: at least 90% of each kind flagged, at most 5% of new real (test) images."""
    from medsyn.audit import memorization

    rng, planted, new = chosen_rows(real)
    train, val, test = real.subset("train"), real.subset("val"), real.subset("test")
    kinds = ("zoom", "rotation", "gamma", "blur")
    copies = np.stack([generator_copy(train.images[i], kinds[n % 4], rng) for n, i in enumerate(planted)])
    no_features = np.zeros((len(train), 1), np.float32)
    queries = np.concatenate([copies, test.images[new]])
    found = memorization.neighbours(queries, np.zeros((len(queries), 1), np.float32), train.images, no_features, )
    baseline = memorization.neighbours(val.images, np.zeros((len(val), 1), np.float32), train.images, no_features)
    summary, flags = memorization.summarize(found, baseline, np.zeros(len(queries), int), ("all",),
                                            CONFIG.near_copy_percentile, CONFIG.exact_copy_correlation)
    for n, kind in enumerate(kinds):
        assert flags[:300][n::4].mean() >= 0.9, (kind, flags[:300][n::4].mean(), summary["threshold"])
    assert flags[300:].mean() <= 0.05, summary["threshold"]
    assert (found.correlation_index[:300] == planted).mean() > 0.85  # matched to its own source


@pytest.mark.slow
def test_the_audit_never_reads_the_test_split(real, audits, tmp_path):
    test = real.subset("test")
    _, _, new = chosen_rows(real)  # the fixture's "test-half" images
    synthetic = as_synthetic(test.images[new], test.labels[new], real.class_names, "test-half")
    blind = run_audit(real.select(real.split != "test"), synthetic, tmp_path, CONFIG, "test-half")
    seen = audits[0]["test-half"]
    # the baselines that used to come from test: the near-copy yardstick and the label-fidelity reference
    for key in ("label_fidelity", "memorization", "counts"):
        assert blind[key] == seen[key]
    assert "real_test" not in seen["counts"]
    # the untrained CNN's numbers, new-images row included, are bitwise the same without test (the label-trained
    # one is retrained for the other data's cache key, so its features may differ in float rounding)
    assert blind["fidelity"]["by_features"]["random-cnn"] == seen["fidelity"]["by_features"]["random-cnn"]


@pytest.mark.slow
def test_real_test_images_get_their_labels_far_above_chance(audits, real):
    labels = audits[0]["test-half"]["label_fidelity"]
    val, test = real.subset("val"), real.subset("test")
    assert labels["reference_real_val_accuracy"] > np.bincount(val.labels).max() / len(val) + 0.1
    # PneumoniaMNIST's test split comes from another cohort than train/val: its accuracy sits below val's
    assert labels["synthetic_accuracy"] > np.bincount(test.labels).max() / len(test) + 0.1


@pytest.mark.slow
def test_every_extractor_puts_a_bad_generator_far_above_the_real_vs_real_floor(audits):
    results = audits[0]
    assert list(results["degraded"]["feature_extractors"]) == ["label-trained-cnn", "random-cnn"]
    for extractor, by_set in results["degraded"]["fidelity"]["by_features"].items():
        bad, floor = by_set["degraded"]["all"], by_set[FLOOR_SET]["all"]
        good = results["test-half"]["fidelity"]["by_features"][extractor]["test-half"]["all"]
        assert bad["fid"] > 5 * good["fid"] and bad["fid"] > 10 * floor["fid"], extractor
        assert bad["kid"] > good["kid"] + 3 * bad["kid_std"], extractor
        assert bad["precision"] < floor["precision"] - 0.3, extractor
        # new real images land near the floor: within 0.1 in precision and recall
        assert good["precision"] == pytest.approx(floor["precision"], abs=0.1), extractor
        assert good["recall"] == pytest.approx(floor["recall"], abs=0.1), extractor


@pytest.mark.slow
def test_the_floor_compares_two_disjoint_halves_of_real_train_of_equal_size(audits, real):
    labels = real.subset("train").labels
    half_a, half_b = _halves(np.random.default_rng(CONFIG.seed), labels, CONFIG.max_samples)
    assert not set(half_a) & set(half_b)
    assert np.abs(np.bincount(labels[half_a]) - np.bincount(labels[half_b])).max() <= 1  # each class split evenly
    saved = audits[0]["degraded"]
    n_train = len(real.subset("train"))
    floor = saved["fidelity"]["by_features"]["random-cnn"][FLOOR_SET]["all"]
    assert floor["n_real"] + floor["n_synthetic"] == min(n_train, CONFIG.max_samples)
    assert abs(floor["n_real"] - floor["n_synthetic"]) <= real.n_classes
    assert saved["fidelity"]["by_features"]["random-cnn"]["degraded"]["all"]["n_synthetic"] == 300
    # a set compared with itself has precision and recall exactly 1: the floor compares other images
    for extractor, by_set in saved["fidelity"]["by_features"].items():
        assert by_set[FLOOR_SET]["all"]["precision"] < 0.999 and by_set[FLOOR_SET]["all"]["recall"] < 0.999, extractor


@pytest.mark.slow
def test_outputs_and_table_rows(audits, real):
    results, out, _, _ = audits
    folder = out / "degraded"
    saved = json.loads((folder / "audit.json").read_text())
    assert saved["memorization"]["near_copies"] == results["degraded"]["memorization"]["near_copies"]
    assert json.loads((folder / "config.json").read_text())["k"] == 5
    assert (folder / "nn_gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    used = saved["feature_extractors"]
    assert used["label-trained-cnn"]["dims"] == 4 * CONFIG.encoder_width
    assert "labels" in used["label-trained-cnn"]["trained_on"] and "never saw" in used["random-cnn"]["trained_on"]
    rows = table_rows(saved)
    sets = ["degraded", FLOOR_SET, NEW_REAL_SET]
    expected = [(e, c, s) for e in used for c in ["all", *real.class_names] for s in sets]
    assert [(r["features"], r["class"], r["set"]) for r in rows] == expected
    first = saved["fidelity"]["by_features"]["label-trained-cnn"]["degraded"]["all"]
    assert rows[0]["fid"] == first["fid"] and rows[0]["near_copies"] == 0 and "near_copies" not in rows[1]
    assert rows[3]["label_accuracy"] == saved["label_fidelity"]["synthetic_per_class"][real.class_names[0]]


@pytest.mark.slow
def test_encoder_is_cached_per_data_seed_and_training(real, audits, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="medsyn")
    first = features.label_trained_cnn(real, CONFIG)
    assert any("reusing" in m for m in caplog.messages), "the module's audits already trained this encoder"
    assert first.info["cache"] == str(features.encoder_cache_dir(real, CONFIG))
    other_seed = features.encoder_cache_dir(real, AuditConfig(**{**CONFIG.__dict__, "seed": 1}))
    other_data = features.encoder_cache_dir(real.select(np.arange(len(real)) != 0), CONFIG)
    monkeypatch.setattr(features, "ENCODER_VERSION", features.ENCODER_VERSION + 1)  # another way of training
    other_training = features.encoder_cache_dir(real, CONFIG)
    assert len({first.info["cache"], str(other_seed), str(other_data), str(other_training)}) == 4


def test_the_val_baseline_is_searched_once_per_dataset_and_a_damaged_copy_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
    val = np.concatenate([train[:2, :, ::-1], rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)])
    vectors = rng.normal(size=(36, 4)).astype(np.float32)
    args = (tmp_path, val, vectors[:6], train, vectors[6:])
    first = memorization.cached_baseline(*args)
    assert first.correlation_index[:2].tolist() == [0, 1] and first.transform[0].startswith("flip")
    [saved] = tmp_path.glob("memorization-baseline-v*.npz")
    with np.load(saved) as archive:
        arrays = dict(archive)
    arrays["correlation"] = np.full(6, 0.5)   # what the file says is what a second audit gets
    np.savez(saved, **arrays)
    again = memorization.cached_baseline(*args)
    assert again.correlation.tolist() == [0.5] * 6 and again.transform == first.transform
    assert np.array_equal(again.feature_index, first.feature_index)
    np.savez(saved, **{**arrays, "pixel_index": np.full(6, 30)})  # a row past the training images
    with pytest.raises(MedsynError, match="not the neighbours of 6 val images among 30 training images.*remove"):
        memorization.cached_baseline(*args)
    saved.write_bytes(b"not an npz")
    with pytest.raises(MedsynError, match=f"{saved.name}.*damaged or not written by medsyn"):
        memorization.cached_baseline(*args)


@pytest.mark.slow
def test_an_extractor_added_to_the_table_is_built_in_the_order_asked(real, monkeypatch):
    fake = features.Extractor("fake", {"name": "fake"}, lambda images: np.zeros((len(images), 2)))
    monkeypatch.setitem(features.EXTRACTORS, "fake", lambda real, config, trained: fake)
    config = AuditConfig(extractors=("fake", "inception-v3"), inception="off")  # inception unavailable: left out
    assert features.extractors(real, config, classifier=None) == [fake]


@pytest.mark.slow
def test_unknown_extractor_is_refused(real):
    with pytest.raises(MedsynError, match="unknown feature extractor dinov9"):
        features.extractors(real, AuditConfig(extractors=("dinov9",)), classifier=None)


def test_inception_weights_are_looked_up_locally_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, message = features.inception_weights_path(AuditConfig(inception="auto"))
    assert path is None and "not found" in message and str(tmp_path) in message
    with pytest.raises(MedsynError, match="no such file"):
        features.inception_weights_path(AuditConfig(inception_weights=str(tmp_path / "missing.pth")))


def test_a_weights_file_holding_code_is_refused_before_torch_fidelity_loads_it(tmp_path):
    import torch

    rigged = tmp_path / features.INCEPTION_FILE
    torch.save({"fc.weight": torch.zeros(2), "hook": print}, rigged)  # a global: could be any callable
    with pytest.raises(MedsynError, match="not a file of tensors medsyn can load safely"):
        features.inception(AuditConfig(inception_weights=str(rigged)))


@pytest.mark.slow
def test_cli_audits_a_synthetic_folder_and_refuses_to_overwrite(real, tmp_path, capsys):
    test = real.subset("test")
    folder = tmp_path / "gan"
    folder.mkdir()
    data.save_npz(as_synthetic(test.images[:200], test.labels[:200], real.class_names, "x"), folder / "synthetic.npz")
    assert main(["audit", "--synthetic", str(folder), "--preset", "smoke"]) == 0
    printed = capsys.readouterr().out
    assert "label fidelity" in printed and "near-copies" in printed
    audit = json.loads((folder / "audit" / "audit.json").read_text())
    assert audit["generator"] == "gan" and audit["counts"]["synthetic"] == np.bincount(
        test.labels[:200], minlength=2).tolist()
    assert main(["audit", "--synthetic", str(folder), "--preset", "smoke"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_rejects_a_synthetic_set_with_other_classes(real, tmp_path, capsys):
    test = real.subset("test")
    data.save_npz(as_synthetic(test.images[:20], test.labels[:20], ("a", "b"), "x"), tmp_path / "synthetic.npz")
    assert main(["audit", "--synthetic", str(tmp_path), "--preset", "smoke"]) == 2
    assert "differ from the real data" in capsys.readouterr().err


@pytest.mark.slow
def test_the_label_trained_cnn_learns_the_classes_of_a_small_train_split(monkeypatch, tmp_path):
    """235 train images are two batches: one pass per epoch left the CNN predicting the majority class on val. The
    CNN is trained by the classifier's own loop."""
    from medsyn.classify import train as classify_train

    monkeypatch.setenv("MEDSYN_CACHE", str(tmp_path))
    loops, classifier_loop = [], classify_train.fit
    monkeypatch.setattr(classify_train, "fit", lambda *args, **kwargs: loops.append(kwargs["network"]) or
                        classifier_loop(*args, **kwargs))
    full = data.load(None, DataConfig(size=28))
    real = full.select(np.isin(np.arange(len(full)), np.flatnonzero(full.split == "train")[:235]) |
                       (full.split == "val"))
    val = real.subset("val")

    def balanced_val_accuracy(config) -> float:
        _, probs = features.encode(features.label_trained_cnn(real, config), val.images)
        return float(np.mean([(probs[val.labels == c].argmax(1) == c).mean() for c in range(2)]))

    audit = preset("smoke").audit
    one_pass = balanced_val_accuracy(dataclasses.replace(audit, encoder_min_epoch_steps=1))
    enough_steps = balanced_val_accuracy(audit)
    assert enough_steps > 0.6 and enough_steps > one_pass + 0.1, (one_pass, enough_steps)
    assert len(loops) == 2 and all(loop.norm == features.encoder_norm(1) for loop in loops)
