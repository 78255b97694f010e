"""The ddpm generator on real data: conditioning, guidance, exact resume, seeded generation, CLI, audit, run plan."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from medsyn import data, generators, synth
from medsyn.cli import main
from medsyn.config import DataConfig, gan_preset, preset
from medsyn.errors import MedsynError
from medsyn.audit.run import run_audit
from medsyn.report.html import _guidance_table
from medsyn.audit import guidance
from medsyn.audit.guidance import choose_guidance
from medsyn.cli.flags import parse_guidance
from medsyn.config import AUTO_GUIDANCE_SCALES
from medsyn.study.jobs import Study, run_job
from medsyn.study.plan import build_plan
from tiny import TINY_DDPM as TINY

pytest.importorskip("diffusers")

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
    return generators.train(dark_and_bright, config, tmp_path_factory.mktemp("ddpm") / "run", progress=False)


def mean_intensity_labels(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1).mean(axis=1) > 127.5).astype(int)


def generated(checkpoint, out, seed=0, **sampler) -> tuple[np.ndarray, np.ndarray]:
    folder = synth.generate(checkpoint, [PER_CLASS, PER_CLASS], seed=seed, out_dir=out, sampler=sampler or None)
    npz = np.load(folder / "synthetic.npz")
    return npz["train_images"], npz["train_labels"][:, 0]


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_samples_follow_their_class(trained, tmp_path, guidance):
    images, labels = generated(trained, tmp_path / "syn", guidance=guidance)
    accuracy = (mean_intensity_labels(images) == labels).mean()
    assert accuracy >= 0.8, f"only {accuracy:.2f} of the samples have their class's intensity (chance is 0.5)"


@pytest.mark.slow
def test_guidance_pushes_the_classes_apart(trained, tmp_path):
    def class_gap(guidance: float) -> float:
        images, labels = generated(trained, tmp_path / f"g{guidance}", guidance=guidance)
        means = images.reshape(len(images), -1).mean(axis=1)
        return means[labels == 1].mean() - means[labels == 0].mean()

    plain, guided = class_gap(0.0), class_gap(2.0)
    assert guided > plain + 5, f"guidance 2 should separate the classes more than 0 ({guided:.1f} vs {plain:.1f})"


@pytest.mark.slow
def test_generate_is_deterministic_for_a_seed(trained, tmp_path):
    first, labels = generated(trained, tmp_path / "a", seed=5)
    again, _ = generated(trained, tmp_path / "b", seed=5)
    other, _ = generated(trained, tmp_path / "c", seed=6)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert list(labels) == [0] * PER_CLASS + [1] * PER_CLASS
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["model"] == "ddpm" and manifest["sampler"] == {"guidance": 1.0, "sampling_steps": 5}


@pytest.mark.slow
def test_resume_is_bitwise_identical(dark_and_bright, tmp_path):
    config = dataclasses.replace(gan_preset("smoke", "ddpm"), **TINY)
    generators.train(dark_and_bright, config, tmp_path / "once", progress=False)
    generators.train(dark_and_bright, dataclasses.replace(config, steps=3), tmp_path / "twice", progress=False)
    generators.train(dark_and_bright, config, tmp_path / "twice", resume=True, progress=False)
    once = torch.load(tmp_path / "once" / "final.pt", weights_only=True)
    twice = torch.load(tmp_path / "twice" / "final.pt", weights_only=True)
    for part in ("generator", "generator_ema"):
        for key, value in once[part].items():
            assert torch.equal(value, twice[part][key]), f"{part}.{key} differs after resume"
    for pid, slots in once["opt_g"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(twice["opt_g"]["state"][pid][name]))
    rows = generators.read_log(tmp_path / "twice")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in rows)
    assert sorted(p.name for p in (tmp_path / "twice" / "samples").iterdir()) == ["grid-000003.png",
                                                                                    "grid-000006.png"]


@pytest.mark.slow
def test_the_audit_reads_a_ddpm_set(trained, dark_and_bright, tmp_path):
    folder = synth.generate(trained, [PER_CLASS, PER_CLASS], seed=0, out_dir=tmp_path / "syn")
    report = run_audit(dark_and_bright, synth.load_synthetic(folder, dark_and_bright), tmp_path / "audit",
                       preset("smoke").audit, "ddpm")
    assert (tmp_path / "audit" / "audit.json").exists()
    assert report["counts"]["synthetic"] == [PER_CLASS, PER_CLASS]  # the audit sees the labels ddpm was asked for
    scores = report["fidelity"]["by_features"]["random-cnn"]["ddpm"]["all"]
    assert scores["n_synthetic"] == 2 * PER_CLASS and np.isfinite(scores["fid"])


@pytest.mark.slow
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
    assert "medsyn: error: --guidance '-1': give a scale of at least 0" in capsys.readouterr().err
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
    assert "--steps 0: give a whole number from 1" in capsys.readouterr().err


def val_images_for(val: data.ImageSet, labels: np.ndarray, flip: bool = False) -> np.ndarray:
    """Real val images of each asked label (of the other class when `flip`): a sampler of known quality."""
    wanted = 1 - labels if flip else labels
    images = np.zeros((len(labels), *val.images.shape[1:]), np.uint8)
    for c in np.unique(wanted):
        images[wanted == c] = val.images[val.labels == c][: (wanted == c).sum()]
    return images


@pytest.mark.slow
def test_the_chosen_guidance_is_the_scale_whose_samples_score_best(dark_and_bright):
    val = dark_and_bright.subset("val")
    audit = preset("smoke").audit
    # only scale 1 returns images of the asked class; 0 and 2 return the other class's images
    chosen = choose_guidance(dark_and_bright, lambda scale, labels: val_images_for(val, labels, flip=scale != 1),
                             [0, 1, 2], audit)
    rows = {row["guidance"]: row for row in chosen["scales"]}
    assert chosen["chosen"] == 1.0
    assert rows[1.0]["label_fidelity"] > 0.9 and rows[0.0]["label_fidelity"] < 0.1
    assert rows[1.0]["precision"] > rows[0.0]["precision"] and rows[1.0]["recall"] > rows[2.0]["recall"]
    assert chosen["per_class"] == [32, 32] and chosen["reference"]["label_fidelity"] > 0.9
    # equally good samples at every scale: the tie goes to the smallest (cheapest) scale
    tied = choose_guidance(dark_and_bright, lambda scale, labels: val_images_for(val, labels), [2, 0.5, 4], audit)
    assert tied["chosen"] == 0.5


@pytest.mark.slow
def test_no_scale_is_chosen_when_the_audits_classifier_is_at_chance(trained, dark_and_bright, tmp_path):
    blank = dataclasses.replace(dark_and_bright, images=np.full_like(dark_and_bright.images, 128))  # no class signal
    sampler, choice = guidance.sampler_for(trained, (0.0, 2.0), blank, seed=0, audit_config=preset("smoke").audit)
    folder = synth.generate(trained, [4, 4], seed=0, out_dir=tmp_path / "syn", sampler=sampler, guidance_choice=choice)
    choice = json.loads((folder / "guidance.json").read_text())
    assert choice["chosen"] is None and "at chance on real val" in choice["not_chosen"] and choice["scales"] == []
    assert json.loads((folder / "manifest.json").read_text())["sampler"]["guidance"] == 1.0  # the trained scale
    assert "not chosen on val" in _guidance_table(folder / "guidance.json")


def test_parse_guidance():
    assert parse_guidance("2") == (2.0,)
    assert parse_guidance("auto") == AUTO_GUIDANCE_SCALES
    assert parse_guidance("0, 1,4") == (0.0, 1.0, 4.0)
    for bad in ("-1", "x", "", "1,1", "0,-2"):
        with pytest.raises(MedsynError, match="--guidance"):
            parse_guidance(bad)


@pytest.mark.slow
def test_generate_chooses_the_guidance_on_val(trained, dark_and_bright, tmp_path, capsys):
    src = tmp_path / "data.npz"
    data.save_npz(dark_and_bright, src)
    out = tmp_path / "auto"
    assert main(["gan", "generate", "--checkpoint", str(trained), "--n", "20", "--guidance", "0,2", "--data",
                 str(src), "--out", str(out)]) == 0
    choice = json.loads((out / "guidance.json").read_text())
    assert f"guidance {choice['chosen']:g} chosen on real val among 0, 2" in capsys.readouterr().out
    scores = {row["guidance"]: row["score"] for row in choice["scales"]}
    assert sorted(scores) == [0.0, 2.0] and scores[choice["chosen"]] == max(scores.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampler"]["guidance"] == choice["chosen"] and manifest["guidance_chosen_on_val"]
    fixed = tmp_path / "fixed"
    assert main(["generator", "generate", "--checkpoint", str(trained), "--n", "20", "--guidance", f"{choice['chosen']}",
                 "--out", str(fixed)]) == 0
    assert np.array_equal(np.load(out / "synthetic.npz")["train_images"],
                          np.load(fixed / "synthetic.npz")["train_images"])


@pytest.mark.slow
def test_guidance_is_chosen_only_on_the_training_data_of_a_ddpm(trained, tmp_path, capsys):
    # the bundled data has the same classes and size but not the train split the model was trained on
    assert main(["gan", "generate", "--checkpoint", str(trained), "--n", "4", "--guidance", "auto",
                 "--out", str(tmp_path / "other")]) == 2
    assert "is not the data" in capsys.readouterr().err and not (tmp_path / "other").exists()
    assert main(["gan", "train", "--model", "cgan", "--preset", "smoke", "--steps", "1", "--out",
                 str(tmp_path / "cgan"), "--no-progress"]) == 0
    assert main(["gan", "generate", "--checkpoint", str(tmp_path / "cgan" / "final.pt"), "--n", "2",
                 "--guidance", "auto", "--out", str(tmp_path / "cgan-syn")]) == 2
    assert "has no guidance to choose" in capsys.readouterr().err and not (tmp_path / "cgan-syn").exists()
    assert main(["run", "--preset", "smoke", "--guidance", "auto", "--dry-run"]) == 2
    assert "--guidance applies to the ddpm generator" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_chooses_each_generators_guidance_on_val(trained, dark_and_bright, tmp_path):
    src = tmp_path / "data.npz"
    data.save_npz(dark_and_bright, src)
    config = dataclasses.replace(preset("smoke"), gans=("ddpm",), arms=("real", "real+synth@1"), n_generators=1,
                                 guidance_scales=(0.0, 2.0))
    study = Study(config, str(src), tmp_path / "run")
    (study.run_dir / "gan" / "ddpm" / "g0").mkdir(parents=True)
    (study.run_dir / "gan" / "ddpm" / "g0" / "final.pt").write_bytes(trained.read_bytes())
    job = next(j for j in build_plan(config, 128) if j.name == "synthetic/ddpm/g0")
    run_job(job, study)
    choice = json.loads((study.run_dir / "synthetic/ddpm/g0/guidance.json").read_text())
    manifest = json.loads((study.run_dir / "synthetic/ddpm/g0/manifest.json").read_text())
    assert manifest["sampler"]["guidance"] == choice["chosen"] and manifest["counts"] == [64, 64]
    assert [row["guidance"] for row in choice["scales"]] == [0.0, 2.0]
    table = _guidance_table(study.run_dir / "synthetic/ddpm/g0/guidance.json")  # the report's view of it
    assert f"{choice['chosen']:g} (chosen)" in table and table.count("(chosen)") == 1


@pytest.mark.slow
def test_run_plans_ddpm_as_a_generator(capsys):
    assert main(["run", "--preset", "smoke", "--gan", "cgan,ddpm", "--dry-run"]) == 0
    assert "gan/ddpm/g0" in capsys.readouterr().out


def test_without_diffusers_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    with pytest.raises(MedsynError, match=r"pip install 'medsyn\[diffusion\]'"):
        generators.check_config(gan_preset("smoke", "ddpm"))
