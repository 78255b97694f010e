"""What a generator learns from beyond its labelled train split: pseudo-labelled unlabelled images (--unlabelled)
and starting weights of another source (--generator-init, transfer.py), and the record that says so."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from medsyn import classify, data, generators
from medsyn.cli import main
from medsyn.config import gan_preset
from medsyn.data.unlabelled import UnlabelledPool
from medsyn.errors import MedsynError
from medsyn.fileio import sha256_file
from medsyn.generators.families import FAMILIES
from medsyn.generators.steps import StepContext
from medsyn.generators.distributed import runtime
from medsyn.generators.trainer import _info
from medsyn.generators.transfer import FROZEN, freeze_early_layers, start_from

from tiny import TINY_CLASSIFY, TINY_DDPM, tiny_gan

pytestmark = pytest.mark.slow  # every test trains a generator or a classifier


@pytest.fixture(scope="module")
def small(bundled_slice):
    return data.load(bundled_slice)


@pytest.fixture(scope="module")
def sources(small, tmp_path_factory):
    """A finished tiny run of each GAN family on the slice: the checkpoints other runs start from."""
    folder = tmp_path_factory.mktemp("sources")
    return {m: generators.train(small, tiny_gan(m), folder / m, progress=False) for m in ("cgan", "acgan")}


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _parts(model, config, dataset):
    """A fresh run's parts, as the training loop builds them."""
    info = _info(config, dataset.subset("train"), FAMILIES[model].module)
    ctx = StepContext(config, FAMILIES[model], runtime(config), dataset.n_classes)
    return FAMILIES[model].build_parts(ctx, info), info


@pytest.mark.parametrize("model", ["cgan", "acgan"])
def test_a_gan_starts_from_the_source_and_fine_tunes_with_its_first_discriminator_layers_frozen(model, small, sources,
                                                                                               tmp_path):
    source = _state(sources[model])
    final = generators.train(small, tiny_gan(model, init=str(sources[model]), seed=7), tmp_path / "run",
                             progress=False)
    tuned = _state(final)
    frozen = [k for k in source["discriminator"] if k.startswith(FROZEN[model]) and "_u" not in k and "_v" not in k]
    later = [k for k in source["discriminator"] if not k.startswith(FROZEN[model]) and "weight" in k
             and "_u" not in k and "_v" not in k]
    assert frozen and all(torch.equal(tuned["discriminator"][k], source["discriminator"][k]) for k in frozen)
    assert any(not torch.equal(tuned["discriminator"][k], source["discriminator"][k]) for k in later)
    # the start was the source's generator, not a fresh one of seed 7: three small steps stay close to it
    fresh = generators.train(small, tiny_gan(model, seed=7), tmp_path / "fresh", progress=False)
    distance = lambda a: sum((a["generator"][k].float() - source["generator_ema"][k].float()).norm().item()
                             for k in a["generator"] if a["generator"][k].is_floating_point())
    assert distance(tuned) < distance(_state(fresh)) / 5


@pytest.mark.parametrize("model", ["cgan", "acgan"])
def test_classes_are_mapped_by_name_and_an_unknown_class_is_re_initialised(model, small, sources):
    renamed = dataclasses.replace(small, class_names=("pneumonia", "effusion"))   # source: normal, pneumonia
    config = tiny_gan(model, seed=3)
    parts, info = _parts(model, config, renamed)
    fresh = {k: v.clone() for k, v in parts["generator"].state_dict().items()}
    source = _state(sources[model])
    start_from(parts, source, model, renamed.class_names, info)
    loaded, given = parts["generator"].state_dict(), source["generator_ema"]
    if model == "cgan":
        key = "blocks.0.norm1.gain.weight"
        rows = lambda t: (t[0], t[1])
    else:  # the one-hot columns after the latent's
        key = "dense.weight"
        rows = lambda t: (t[:, config.latent_dim], t[:, config.latent_dim + 1])
    assert torch.equal(rows(loaded[key])[0], rows(given[key])[1])          # pneumonia <- the source's pneumonia
    assert torch.equal(rows(loaded[key])[1], rows(fresh[key])[1])          # effusion: its fresh initialisation
    other = next(k for k in loaded if k != key and loaded[k].is_floating_point())
    assert torch.equal(loaded[other], given[other])                        # every other tensor copied
    assert torch.equal(parts["generator_ema"].state_dict()[key], loaded[key])


def test_a_cgan_with_a_class_head_starts_from_a_source_without_one_and_its_head_starts_fresh(small, sources):
    config = tiny_gan("cgan", seed=3, aux_weight=0.3)
    parts, info = _parts("cgan", config, small)
    fresh = {k: v.clone() for k, v in parts["discriminator"].state_dict().items()}
    source = _state(sources["cgan"])
    assert not any(k.startswith("classify.") for k in source["discriminator"])  # trained without a head
    start_from(parts, source, "cgan", small.class_names, info)
    loaded = parts["discriminator"].state_dict()
    head = [k for k in loaded if k.startswith("classify.")]
    assert head and all(torch.equal(loaded[k], fresh[k]) for k in head)
    assert all(torch.equal(loaded[k], source["discriminator"][k]) for k in loaded if k not in head)


def test_ddpm_fine_tunes_every_weight_with_its_null_class_kept(small, tmp_path):
    pytest.importorskip("diffusers")
    config = dataclasses.replace(gan_preset("smoke", "ddpm"), **TINY_DDPM)
    source = _state(generators.train(small, config, tmp_path / "source", progress=False))
    renamed = dataclasses.replace(small, class_names=("effusion", "normal", "pneumonia"),
                                  labels=small.labels + 1)
    parts, info = _parts("ddpm", config, renamed)
    fresh = parts["generator"].state_dict()["unet.class_embedding.weight"].clone()
    start_from(parts, source, "ddpm", renamed.class_names, info)
    table, given = parts["generator"].state_dict()["unet.class_embedding.weight"], \
        source["generator_ema"]["unet.class_embedding.weight"]
    assert table.shape[0] == 4 and given.shape[0] == 3
    assert torch.equal(table[0], fresh[0]) and torch.equal(table[1:3], given[0:2]) and torch.equal(table[3], given[2])
    freeze_early_layers(parts, "ddpm")   # nothing frozen: one optimiser over every weight
    assert len(parts["opt_g"].param_groups[0]["params"]) == len(list(parts["generator"].parameters()))


@pytest.mark.parametrize("flags, expected", [
    (["--size", "32"], "size 28 (this run: 32)"),
    (["--channels", "3"], "channels 1 (this run: 3)"),
    (["--model", "acgan"], "model cgan (this run: acgan)"),
])
def test_a_checkpoint_of_another_size_channel_count_or_model_is_refused(flags, expected, small, sources, tmp_path,
                                                                      bundled_slice, capsys):
    out = tmp_path / "out"
    code = main(["gan", "train", "--data", str(bundled_slice), "--preset", "smoke", "--steps", "2", "--width", "4",
                 "--generator-init", str(sources["cgan"]), "--out", str(out), *flags])   # the source's width
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_run_refuses_a_starting_checkpoint_of_another_size_before_its_folder_exists(sources, bundled_slice, tmp_path,
                                                                                     capsys):
    out = tmp_path / "out"
    code = main(["run", "--preset", "smoke", "--data", str(bundled_slice), "--size", "32", "--generator-init",
                 str(sources["cgan"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "size 28 (this run: 32)" in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_starting_checkpoint_is_read_as_weights_only(small, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "medsyn-gan-checkpoint", "payload": Payload()}, path)
    with pytest.raises(MedsynError, match="not a file of tensors medsyn can load safely"):
        generators.read_init(path, tiny_gan("cgan"), 1, small.class_names)


def test_the_generator_learns_from_the_pool_it_kept_and_records_what_it_learned_from(small, sources, tmp_path):
    model, meta = classify.real_only_model(small, TINY_CLASSIFY, seed=0)
    train = small.subset("train")
    pool = UnlabelledPool(train.images[:150], train.paths[:150], "a pool")
    pseudo = classify.pseudo_label(pool, model, meta, small.subset("val"), "real seed0")
    assert pseudo.record["n_kept"] > 0
    config = tiny_gan("cgan", init=str(sources["cgan"]))
    final = generators.train(small, config, tmp_path / "run", progress=False, pseudo=pseudo)
    assert len(_state(final)["sampler"]["order"]) == len(train) + pseudo.record["n_kept"]   # drawn from both
    record = json.loads((tmp_path / "run" / "config.json").read_text())["learned_from"]
    assert record["labelled_train_images"] == len(train) and record["unlabelled_images"] == pseudo.record
    assert record["starting_weights"]["sha256"] == sha256_file(sources["cgan"])
    assert record["starting_weights"]["path"] == str(sources["cgan"].resolve())
    assert _state(final)["info"]["learned_from"] == record
    plain = generators.train(small, tiny_gan("cgan"), tmp_path / "plain", progress=False)
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["learned_from"] == {
        "labelled_train_images": len(train), "labelled_source": small.source, "unlabelled_images": None,
        "starting_weights": "none"}
    assert len(_state(plain)["sampler"]["order"]) == len(train)


def test_gan_train_never_passes_the_pools_labels_on(small, bundled_slice, tmp_path):
    """The same images with two opposite sets of labels in the pool file, and with none: the same generator."""
    images = small.subset("train").images[:120, ..., 0]
    labels = np.random.default_rng(0).integers(0, 2, 120)
    np.savez(tmp_path / "some.npz", train_images=images, train_labels=labels)
    np.savez(tmp_path / "opposite.npz", train_images=images, train_labels=1 - labels)
    np.savez(tmp_path / "bare.npz", train_images=images)
    states = []
    for name in ("some", "opposite", "bare"):
        out = tmp_path / name
        assert main(["gan", "train", "--data", str(bundled_slice), "--preset", "smoke", "--steps", "3",
                     "--batch-size", "8", "--width", "4", "--unlabelled", str(tmp_path / f"{name}.npz"),
                     "--out", str(out), "--no-progress"]) == 0
        states.append(_state(out / "final.pt"))
    for other in states[1:]:
        assert all(torch.equal(states[0]["generator"][k], other["generator"][k]) for k in states[0]["generator"])
    assert states[0]["info"]["learned_from"]["unlabelled_images"]["n_pool"] == 120


def test_gan_train_refuses_a_pool_holding_a_test_image(small, bundled_slice, tmp_path, capsys):
    pool = np.concatenate([small.subset("train").images[:10], small.subset("test").images[:1]])[..., 0]
    np.savez(tmp_path / "pool.npz", images=pool)
    out = tmp_path / "out"
    code = main(["gan", "train", "--data", str(bundled_slice), "--preset", "smoke", "--unlabelled",
                 str(tmp_path / "pool.npz"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "val or test images" in err and "(test)" in err, err
    assert not out.exists()
