"""The ddpm generator on real data: conditioning, guidance, exact resume, seeded generation, CLI, audit, run plan."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from medsyn import data, gan, synth
from medsyn.cli import main
from medsyn.config import DataConfig, gan_preset, preset
from medsyn.errors import MedsynError
from medsyn.evaluate.audit import run_audit

pytest.importorskip("diffusers")

TINY = dict(steps=6, batch_size=8, snapshot_every=3, log_every=1, sampling_steps=2)
PER_CLASS = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small UNets on a shared 2-core machine run several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dark_and_bright():
    """64 train and 32 val images per class of the bundled chest X-rays, class 0 darkened to [0, 63] and class 1
    brightened to [192, 255]: two classes told apart by mean intensity alone, so samples can be labelled by it."""
    full = data.load(None, DataConfig(size=28))
    keep = np.zeros(len(full), bool)
    for split, n in (("train", 64), ("val", 32)):
        index = np.flatnonzero(full.split == split)
        for label in (0, 1):
            keep[index[full.labels[index] == label][:n]] = True
    subset = full.select(keep)
    dark = subset.labels[:, None, None, None] == 0
    return dataclasses.replace(subset, images=np.where(dark, subset.images // 4, 192 + subset.images // 4))


@pytest.fixture(scope="module")
def trained(dark_and_bright, tmp_path_factory):
    """60 steps of the smoke ddpm (about 10 s on one core) on the dark and bright classes."""
    config = dataclasses.replace(gan_preset("smoke", "ddpm"), steps=60, snapshot_every=60, log_every=10)
    return gan.train(dark_and_bright, config, tmp_path_factory.mktemp("ddpm") / "run", progress=False)


def mean_intensity_labels(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1).mean(axis=1) > 127.5).astype(int)


def generated(checkpoint, out, seed=0, **sampler) -> tuple[np.ndarray, np.ndarray]:
    folder = synth.generate(checkpoint, [PER_CLASS, PER_CLASS], seed=seed, out_dir=out, sampler=sampler or None)
    npz = np.load(folder / "synthetic.npz")
    return npz["train_images"], npz["train_labels"][:, 0]


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_samples_follow_their_class(trained, tmp_path, guidance):
    images, labels = generated(trained, tmp_path / "syn", guidance=guidance)
    accuracy = (mean_intensity_labels(images) == labels).mean()
    assert accuracy >= 0.8, f"only {accuracy:.2f} of the samples have their class's intensity (chance is 0.5)"


def test_guidance_pushes_the_classes_apart(trained, tmp_path):
    def class_gap(guidance: float) -> float:
        images, labels = generated(trained, tmp_path / f"g{guidance}", guidance=guidance)
        means = images.reshape(len(images), -1).mean(axis=1)
        return means[labels == 1].mean() - means[labels == 0].mean()

    plain, guided = class_gap(0.0), class_gap(2.0)
    assert guided > plain + 5, f"guidance 2 should separate the classes more than 0 ({guided:.1f} vs {plain:.1f})"


def test_generate_is_deterministic_for_a_seed(trained, tmp_path):
    first, labels = generated(trained, tmp_path / "a", seed=5)
    again, _ = generated(trained, tmp_path / "b", seed=5)
    other, _ = generated(trained, tmp_path / "c", seed=6)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert list(labels) == [0] * PER_CLASS + [1] * PER_CLASS
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["model"] == "ddpm" and manifest["sampler"] == {"guidance": 1.0, "sampling_steps": 5}


def test_resume_is_bitwise_identical(dark_and_bright, tmp_path):
    config = dataclasses.replace(gan_preset("smoke", "ddpm"), **TINY)
    gan.train(dark_and_bright, config, tmp_path / "once", progress=False)
    gan.train(dark_and_bright, dataclasses.replace(config, steps=3), tmp_path / "twice", progress=False)
    gan.train(dark_and_bright, config, tmp_path / "twice", resume=True, progress=False)
    once = torch.load(tmp_path / "once" / "final.pt", weights_only=True)
    twice = torch.load(tmp_path / "twice" / "final.pt", weights_only=True)
    for part in ("generator", "generator_ema"):
        for key, value in once[part].items():
            assert torch.equal(value, twice[part][key]), f"{part}.{key} differs after resume"
    for pid, slots in once["opt_g"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(twice["opt_g"]["state"][pid][name]))
    rows = gan.read_log(tmp_path / "twice")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in rows)
    assert sorted(p.name for p in (tmp_path / "twice" / "samples").iterdir()) == ["grid-000003.png",
                                                                                    "grid-000006.png"]


def test_the_audit_reads_a_ddpm_set(trained, dark_and_bright, tmp_path):
    folder = synth.generate(trained, [PER_CLASS, PER_CLASS], seed=0, out_dir=tmp_path / "syn")
    report = run_audit(dark_and_bright, synth.load_synthetic(folder, dark_and_bright), tmp_path / "audit",
                       preset("smoke").audit, "ddpm", log=lambda *_: None)
    assert (tmp_path / "audit" / "audit.json").exists()
    assert report["counts"]["synthetic"] == [PER_CLASS, PER_CLASS]  # the audit sees the labels ddpm was asked for
    scores = report["fidelity"]["by_features"]["random-cnn"]["ddpm"]["all"]
    assert scores["n_synthetic"] == 2 * PER_CLASS and np.isfinite(scores["fid"])


def test_cli_train_generate_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["gan", "train", "--model", "ddpm", "--preset", "smoke", "--steps", "2", "--batch-size", "8",
                 "--sampling-steps", "2", "--out", str(run), "--no-progress"]) == 0
    assert "ddpm" in capsys.readouterr().out
    assert main(["gan", "generate", "--checkpoint", str(run / "final.pt"), "--n", "4", "--guidance", "0.5",
                 "--out", str(tmp_path / "syn")]) == 0
    assert json.loads((tmp_path / "syn" / "manifest.json").read_text())["sampler"]["guidance"] == 0.5
    assert main(["gan", "generate", "--checkpoint", str(run / "final.pt"), "--n", "4", "--guidance", "-1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "medsyn: error: --guidance must be at least 0" in capsys.readouterr().err
    assert main(["gan", "train", "--model", "cgan", "--preset", "smoke", "--guidance", "1",
                 "--out", str(tmp_path / "cgan")]) == 2
    assert "apply to --model ddpm" in capsys.readouterr().err
    assert main(["gan", "train", "--model", "cgan", "--preset", "smoke", "--steps", "1", "--out",
                 str(tmp_path / "cgan"), "--no-progress"]) == 0
    assert main(["gan", "generate", "--checkpoint", str(tmp_path / "cgan" / "final.pt"), "--n", "2",
                 "--sampling-steps", "3", "--out", str(tmp_path / "cgan-syn")]) == 2
    assert "apply to ddpm checkpoints only" in capsys.readouterr().err
    assert main(["gan", "train", "--model", "ddpm", "--preset", "smoke", "--guidance", "1", "--out",
                 str(tmp_path / "x"), "--no-progress", "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err


def test_run_plans_ddpm_as_a_generator(capsys):
    assert main(["run", "--preset", "smoke", "--gan", "cgan,ddpm", "--dry-run"]) == 0
    assert "gan/ddpm/g0" in capsys.readouterr().out


def test_without_diffusers_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    with pytest.raises(MedsynError, match=r"pip install 'medsyn\[diffusion\]'"):
        gan.check_config(gan_preset("smoke", "ddpm"))
