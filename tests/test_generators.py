"""GAN stage and synthesis on real data: the bundled PneumoniaMNIST (28 px) and the Kaggle chest X-ray fixture."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from medsyn import data, generators, synth
from medsyn.cli import main
from medsyn.config import GAN_MODELS, DataConfig
from medsyn.errors import MedsynError
from medsyn.fileio import sha256_file
from medsyn.generators.families import FAMILIES

from conftest import CHEST_XRAY_SMALL
from tiny import tiny_gan as tiny


@pytest.fixture(scope="module")
def checkpoint(bundled, tmp_path_factory):
    return generators.train(bundled, tiny("cgan"), tmp_path_factory.mktemp("run") / "cgan", progress=False)


def initial_generator(config, dataset):
    torch.manual_seed(config.seed)
    generator, _ = FAMILIES[config.model].module.networks(config.size, dataset.channels, dataset.n_classes,
                                                          config.latent_dim, config.base_width)
    return generator.state_dict()


def assert_trained(run, config, dataset):
    rows = generators.read_log(run)
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in rows)
    assert rows[-1]["images_seen"] == config.steps * config.batch_size
    state = torch.load(run / "final.pt", weights_only=True)
    before = initial_generator(config, dataset)
    changed = [k for k, v in state["generator"].items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2, "most generator tensors should have moved"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["grid-000002.png", "grid-000003.png"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["acgan", "cgan"])
def test_trains_on_bundled_28px(model, bundled, tmp_path):
    config = tiny(model)
    final = generators.train(bundled, config, tmp_path / "run", progress=False)
    assert final == tmp_path / "run" / "final.pt"
    assert_trained(tmp_path / "run", config, bundled)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["train_counts"] == bundled.counts()["train"]


@pytest.mark.parametrize("model", ["acgan", "cgan"])
def test_trains_on_real_chest_xrays_64px(model, tmp_path):
    xrays = data.load(CHEST_XRAY_SMALL, DataConfig(size=64))
    config = tiny(model, size=64, batch_size=4)
    generators.train(xrays, config, tmp_path / "run", progress=False)
    assert_trained(tmp_path / "run", config, xrays)
    grid = synth.sample_grid(tmp_path / "run" / "final.pt", n_per_class=3, seed=0)
    assert grid.shape == (2 * 64 + 2, 3 * 64 + 4, 1) and grid.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize("model", ["acgan", "cgan"])
def test_resume_is_bitwise_identical(model, bundled, tmp_path):
    # adaptive augmentation starting at p=0.5, so the augmentation state and its RNG draws matter too
    config = tiny(model, steps=6, snapshot_every=3, diffaugment="color,translation,cutout", augment_p=0.5,
                  ada_target=0.6)
    generators.train(bundled, config, tmp_path / "once", progress=False)
    generators.train(bundled, dataclasses.replace(config, steps=3), tmp_path / "twice", progress=False)
    generators.train(bundled, config, tmp_path / "twice", resume=True, progress=False)
    once = torch.load(tmp_path / "once" / "final.pt", weights_only=True)
    twice = torch.load(tmp_path / "twice" / "final.pt", weights_only=True)
    for part in ("generator", "discriminator", "generator_ema"):
        for key, value in once[part].items():
            assert torch.equal(value, twice[part][key]), f"{part}.{key} differs after resume"
    for opt in ("opt_g", "opt_d"):
        for pid, slots in once[opt]["state"].items():
            for name, value in slots.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(twice[opt]["state"][pid][name]))
    assert once["augment"] == twice["augment"] and once["augment"]["p"] != 0.5
    assert once["images_seen"] == twice["images_seen"] == 6 * config.batch_size
    assert [r["step"] for r in generators.read_log(tmp_path / "twice")] == list(range(1, 7))
    # a finished run resumed with the same settings returns its final checkpoint without training
    mtime = (tmp_path / "twice" / "final.pt").stat().st_mtime_ns
    assert generators.train(bundled, config, tmp_path / "twice", resume=True, progress=False) == tmp_path / "twice" / "final.pt"
    assert (tmp_path / "twice" / "final.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_restarts_its_log(bundled, tmp_path):
    config = tiny("cgan", steps=4, snapshot_every=4)
    run = tmp_path / "run"
    generators.train(bundled, config, run, progress=False)
    for name in ("checkpoint.pt", "final.pt"):          # as if killed after logging, before the first snapshot
        (run / name).unlink()
    generators.train(bundled, config, run, resume=True, progress=False)
    assert [r["step"] for r in generators.read_log(run)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_made_before_a_setting_existed_resumes(bundled, tmp_path):
    config = tiny("cgan", steps=2)
    generators.train(bundled, config, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    del record["gan"]["label_dropout"]                    # added with ddpm; older run folders lack it
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    generators.train(bundled, dataclasses.replace(config, steps=3), tmp_path / "run", resume=True, progress=False)
    assert generators.read_log(tmp_path / "run")[-1]["step"] == 3


@pytest.mark.slow
def test_run_folder_is_never_silently_reused(bundled, checkpoint):
    run = checkpoint.parent
    with pytest.raises(MedsynError, match="--resume"):
        generators.train(bundled, tiny("cgan"), run, progress=False)
    with pytest.raises(MedsynError, match="base_width"):
        generators.train(bundled, tiny("cgan", base_width=8), run, resume=True, progress=False)


def test_a_cgan_with_a_class_head_and_minibatch_std_trains_logs_and_checkpoints_them(tmp_path):
    xrays = data.load(CHEST_XRAY_SMALL, DataConfig(size=64))
    config = tiny("cgan", size=64, batch_size=4, aux_weight=0.5, mbstd_group=2)
    generators.train(xrays, config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    assert any(key.startswith("classify.") for key in state["discriminator"])
    assert any(key.startswith("mbstd_conv.") for key in state["discriminator"])
    assert {"d_aux", "g_aux"} <= set(generators.read_log(tmp_path / "run")[-1])
    generators.load_generator(tmp_path / "run" / "final.pt")  # sampling needs nothing of the head


@pytest.mark.parametrize("model, option", [("acgan", {"aux_weight": 1.0}), ("ddpm", {"aux_weight": 1.0}),
                                           ("cgan", {"aux_weight": -1.0})])
def test_the_class_head_is_a_cgan_option(model, option):
    with pytest.raises(MedsynError, match="cgan option"):
        generators.check_config(dataclasses.replace(tiny(model), **option))


@pytest.mark.parametrize("model, group", [("acgan", 4), ("ddpm", 4), ("cgan", 1), ("cgan", -2)])
def test_minibatch_std_is_a_cgan_option_over_groups_of_two_or_more(model, group):
    with pytest.raises(MedsynError, match="minibatch standard deviation layer is a cgan option"):
        generators.check_config(dataclasses.replace(tiny(model), mbstd_group=group))


def test_the_family_registry_and_the_settings_name_the_same_families():
    assert tuple(FAMILIES) == GAN_MODELS  # --model's choices and the presets are config.GAN_MODELS
    assert {name: family.module.__name__ for name, family in FAMILIES.items()} == {
        name: f"medsyn.generators.{name}" for name in GAN_MODELS}


def test_an_unknown_family_is_refused_by_the_settings_check():
    with pytest.raises(MedsynError, match=r"unknown GAN model 'stylegan'; choose one of cgan, acgan, ddpm\."):
        generators.check_config(dataclasses.replace(tiny("cgan"), model="stylegan"))


@pytest.mark.slow
def test_generate_counts_shapes_determinism_and_npz(checkpoint, tmp_path):
    out = synth.generate(checkpoint, [3, 5], seed=7, out_dir=tmp_path / "a")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".medsyn")) == ["manifest.json", "normal", "pneumonia",
                                                                           "synthetic.npz"]
    assert [len(list((out / c).glob("*.png"))) for c in ("normal", "pneumonia")] == [3, 5]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == [3, 5] and manifest["seed"] == 7 and manifest["model"] == "cgan"
    assert manifest["checkpoint_sha256"] == sha256_file(checkpoint)

    synthetic = data.load(out / "synthetic.npz", DataConfig(val="given"))
    assert synthetic.counts() == {"train": [3, 5], "val": [0, 0], "test": [0, 0]}
    assert data.load(out / "synthetic.npz").counts()["test"] == [0, 0]  # default val=auto carves val from train
    assert synthetic.class_names == ("normal", "pneumonia") and synthetic.images.shape == (8, 28, 28, 1)
    folder = data.load(out, DataConfig(size=28))  # the PNG class folders, with medsyn-made splits
    assert sum(sum(c) for c in folder.counts().values()) == 8

    again = synth.generate(checkpoint, [3, 5], seed=7, out_dir=tmp_path / "b")
    other = synth.generate(checkpoint, [3, 5], seed=8, out_dir=tmp_path / "c")
    arrays = {name: np.load(path / "synthetic.npz") for name, path in (("a", out), ("b", again), ("c", other))}
    assert np.array_equal(arrays["a"]["train_images"], arrays["b"]["train_images"])
    assert not np.array_equal(arrays["a"]["train_images"], arrays["c"]["train_images"])
    assert np.array_equal(arrays["a"]["train_labels"][:, 0], [0, 0, 0, 1, 1, 1, 1, 1])


@pytest.mark.slow
def test_generate_refuses_to_overwrite(checkpoint, tmp_path):
    synth.generate(checkpoint, [1, 1], seed=0, out_dir=tmp_path / "out")
    with pytest.raises(MedsynError, match="--overwrite"):
        synth.generate(checkpoint, [2, 2], seed=0, out_dir=tmp_path / "out")
    synth.generate(checkpoint, [2, 2], seed=0, out_dir=tmp_path / "out", overwrite=True)
    assert data.load(tmp_path / "out" / "synthetic.npz", DataConfig(val="given")).counts()["train"] == [2, 2]


@pytest.mark.slow
def test_sample_grid_has_one_row_per_class(checkpoint):
    grid = synth.sample_grid(checkpoint, n_per_class=4, seed=0)
    assert grid.shape == (2 * 28 + 2, 4 * 28 + 3 * 2, 1)
    assert np.array_equal(grid, synth.sample_grid(checkpoint, n_per_class=4, seed=0))


def test_count_planning():
    assert synth.plan_counts(2, n=5) == [3, 2]
    assert synth.plan_counts(2, balance_counts=[10, 25]) == [15, 0]
    assert synth.plan_counts(2, n=4, balance_counts=[10, 25]) == [17, 2]
    assert synth.parse_per_class("pneumonia=4", ["normal", "pneumonia"]) == [0, 4]
    with pytest.raises(MedsynError, match="3 numbers but the checkpoint has 2 classes"):
        synth.plan_counts(2, per_class=[1, 2, 3])
    with pytest.raises(MedsynError, match="unknown class 'covid'"):
        synth.parse_per_class("covid=3", ["normal", "pneumonia"])


@pytest.mark.slow
def test_bad_checkpoints_get_clear_errors(checkpoint, tmp_path):
    with pytest.raises(MedsynError, match="generator checkpoint .*no such file"):
        synth.generate(tmp_path / "missing.pt", [1, 1], 0, tmp_path / "o1")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(MedsynError, match="truncated, damaged or foreign"):
        synth.generate(truncated, [1, 1], 0, tmp_path / "o2")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(MedsynError, match="not a medsyn GAN checkpoint"):
        synth.generate(foreign, [1, 1], 0, tmp_path / "o3")
    with pytest.raises(MedsynError, match="3 numbers but the checkpoint has 2 classes"):
        synth.generate(checkpoint, [1, 1, 1], 0, tmp_path / "o4")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))


@pytest.mark.slow
def test_cli_train_generate_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["gan", "train", "--model", "acgan", "--preset", "smoke", "--steps", "2", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["gan", "generate", "--checkpoint", str(run / "final.pt"), "--per-class", "normal=2,pneumonia=1",
                 "--seed", "3", "--out", str(tmp_path / "syn")]) == 0
    assert data.load(tmp_path / "syn" / "synthetic.npz", DataConfig(val="given")).counts()["train"] == [2, 1]
    assert main(["gan", "generate", "--checkpoint", str(run / "final.pt"), "--per-class", "covid=2",
                 "--out", str(tmp_path / "syn2")]) == 2
    assert "unknown class 'covid'" in capsys.readouterr().err
    assert main(["gan", "generate", "--checkpoint", str(run / "config.json"), "--n", "2",
                 "--out", str(tmp_path / "syn3")]) == 2
    assert "not a file of tensors medsyn can load safely" in capsys.readouterr().err
