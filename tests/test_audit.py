"""The audit of synthetic data, on closed forms and on "synthetic" sets built from the bundled PneumoniaMNIST:
copies of training images (memorized), real test images (genuinely new), blurred noisy images (a bad generator)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medsyn import data
from medsyn.cli import main
from medsyn.config import AuditConfig, preset
from medsyn.errors import MedsynError
from medsyn.evaluate import features, fidelity
from medsyn.evaluate.audit import as_synthetic, run_audit, table_rows

# The smoke preset's settings, so `medsyn audit --preset smoke` in the CLI tests reuses the encoder trained here.
CONFIG = preset("smoke").audit


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

@pytest.fixture(scope="module")
def real():
    return data.load()


@pytest.fixture(scope="module")
def audits(real, tmp_path_factory):
    """Two audits: (copies of 300 training images + 300 real test images), and a blurred, noisy bad generator."""
    rng = np.random.default_rng(0)
    train, test = real.subset("train"), real.subset("test")
    copied = rng.choice(len(train), 300, replace=False)
    new = rng.choice(len(test), 300, replace=False)
    mixed = as_synthetic(np.concatenate([train.images[copied], test.images[new]]),
                         np.concatenate([train.labels[copied], test.labels[new]]), real.class_names, "copies+test")
    noisy = gaussian_filter(train.images[copied].astype(float), sigma=(0, 1.5, 1.5, 0)) \
        + rng.normal(0, 40, train.images[copied].shape)
    degraded = as_synthetic(np.clip(noisy, 0, 255), train.labels[copied], real.class_names, "degraded")
    test_only = as_synthetic(test.images[new], test.labels[new], real.class_names, "test-half")
    out = tmp_path_factory.mktemp("audit")
    results = {name: run_audit(real, synthetic, out / name, CONFIG, name, log=lambda message: None)
               for name, synthetic in (("copies+test", mixed), ("degraded", degraded), ("test-half", test_only))}
    return results, out, copied, train


def test_training_copies_are_flagged_as_memorized_and_new_images_are_not(audits):
    results, out, copied, train = audits
    memo = results["copies+test"]["memorization"]
    rows = (out / "copies+test" / "nearest_neighbours.csv").read_text().splitlines()[1:]
    flags = np.array([int(row.rsplit(",", 1)[1]) for row in rows])
    assert flags[:300].all(), "every copy of a training image must be a near-copy"
    assert flags[300:].mean() < 0.05, "real test images are new patients, not copies"
    assert memo["near_copies"] == flags.sum() and memo["n_checked"] == 600
    # each copy's nearest training image is (a pixel-identical duplicate of) its source
    assert all(float(row.split(",")[3]) < 1e-3 for row in rows[:300])
    assert sum(row.split(",")[2] == train.paths[i] for row, i in zip(rows, copied)) > 0.9 * 300
    assert memo["threshold"]["pixel_rms"] >= CONFIG.near_copy_min_distance
    assert memo["baseline_near_copy_share"] <= 0.02  # the 1st-percentile rule: about 1% of new images
    assert results["degraded"]["memorization"]["near_copies"] == 0


def test_real_test_images_score_label_fidelity_near_the_test_accuracy(audits, real):
    labels = audits[0]["test-half"]["label_fidelity"]
    majority = np.bincount(real.subset("test").labels).max() / len(real.subset("test"))
    assert labels["reference_real_test_accuracy"] > majority + 0.05, "the encoder head must be a real classifier"
    assert labels["synthetic_accuracy"] == pytest.approx(labels["reference_real_test_accuracy"], abs=0.05)


def test_a_bad_generator_scores_worse_than_real_images(audits):
    results = audits[0]
    good, bad = (results[name]["fidelity"]["by_features"]["domain-encoder"]["all"] for name in ("test-half", "degraded"))
    assert bad["fid"] > 5 * good["fid"]
    assert bad["kid"] > good["kid"] + 3 * bad["kid_std"]
    assert bad["precision"] < good["precision"] - 0.3
    assert bad["density"] < good["density"]


def test_outputs_and_table_rows(audits, real):
    results, out, _, _ = audits
    folder = out / "degraded"
    saved = json.loads((folder / "audit.json").read_text())
    assert saved["memorization"]["near_copies"] == results["degraded"]["memorization"]["near_copies"]
    assert json.loads((folder / "config.json").read_text())["k"] == 5
    assert (folder / "nn_gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    encoder = saved["feature_extractors"]["domain-encoder"]
    assert encoder["dims"] == 4 * CONFIG.encoder_width and "real train split" in encoder["trained_on"]
    assert "off" in saved["inception_note"]
    rows = table_rows(saved)
    classes = ["all", *real.class_names]
    assert [(r["set"], r["class"]) for r in rows] == \
        [("degraded", c) for c in classes] + [("real val (reference)", c) for c in classes]
    first = saved["fidelity"]["by_features"]["domain-encoder"]["all"]
    assert rows[0]["fid"] == first["fid"] and rows[0]["near_copies"] == 0
    assert rows[1]["label_accuracy"] == saved["label_fidelity"]["synthetic_per_class"][real.class_names[0]]


def test_encoder_is_cached_per_data_and_seed(real, audits):
    messages = []
    first = features.domain_encoder(real, CONFIG, log=messages.append)
    assert any("reusing" in m for m in messages), "the module's audits already trained this encoder"
    assert first.info["cache"] == str(features.encoder_cache_dir(real, CONFIG))
    other_seed = features.encoder_cache_dir(real, AuditConfig(**{**CONFIG.__dict__, "seed": 1}))
    other_data = features.encoder_cache_dir(real.select(np.arange(len(real)) != 0), CONFIG)
    assert len({first.info["cache"], str(other_seed), str(other_data)}) == 3


def test_inception_weights_are_looked_up_locally_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, message = features.inception_weights_path(AuditConfig(inception="auto"))
    assert path is None and "not found" in message and str(tmp_path) in message
    with pytest.raises(MedsynError, match="no such file"):
        features.inception_weights_path(AuditConfig(inception_weights=str(tmp_path / "missing.pth")))


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


def test_cli_rejects_a_synthetic_set_with_other_classes(real, tmp_path, capsys):
    test = real.subset("test")
    data.save_npz(as_synthetic(test.images[:20], test.labels[:20], ("a", "b"), "x"), tmp_path / "synthetic.npz")
    assert main(["audit", "--synthetic", str(tmp_path), "--preset", "smoke"]) == 2
    assert "differ from the real data" in capsys.readouterr().err
