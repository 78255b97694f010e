"""Flags to configs: one table per verb (cli/flags.py). A flag given on the command line always overrides the
preset, even at its default value; a flag not given never does."""

from __future__ import annotations

import dataclasses

import pytest

from medsyn import config as configs
from medsyn.cli import build_parser
from medsyn.cli.flags import CLASSIFY_FLAGS, GAN_FLAGS, RUN_FLAGS
from medsyn.cli.run import run_config


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.fixture
def padded_preset(monkeypatch):
    """The smoke preset with data settings away from DataConfig's defaults, as a user's own preset might have."""
    smoke = configs.preset("smoke")
    padded = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, aspect="pad", val_fraction=0.2,
                                                                 split_seed=7))
    monkeypatch.setattr(configs, "preset", lambda name="quick", size=None: padded)
    return padded


def test_a_flag_given_at_its_default_value_still_overrides_the_preset(padded_preset):
    given = run_config(_parse("run", "--preset", "smoke", "--aspect", "center-crop", "--val-fraction", "0.1",
                              "--split-seed", "0"))
    assert (given.data.aspect, given.data.val_fraction, given.data.split_seed) == ("center-crop", 0.1, 0)
    assert run_config(_parse("run", "--preset", "smoke")).data == padded_preset.data


def test_every_run_flag_reaches_its_fields():
    config = run_config(_parse("run", "--preset", "smoke", "--size", "32", "--arms", "real, real+synth@1",
                               "--seeds", "3-5", "--n-generators", "2", "--fractions", "0.5,1", "--full-val",
                               "--guidance", "0,2", "--epochs", "3", "--gan-steps", "7", "--device", "cpu",
                               "--allow-leak", "--skip-bad", "--unlabelled", "rest", "--generator-init", "a/final.pt"))
    assert (config.data.size, config.gan.size) == (32, 32)
    assert config.arms == ("real", "real+synth@1") and config.seeds == (3, 4, 5) and config.n_generators == 2
    assert config.train_sizes == (0.5, 1.0) and config.scale_val is False and config.guidance_scales == (0.0, 2.0)
    assert (config.classify.epochs, config.gan.steps) == (3, 7)
    assert {config.gan.device, config.classify.device, config.audit.device} == {"cpu"}
    assert (config.data.leak, config.data.skip_bad) == ("allow", True)
    assert (config.unlabelled, config.gan.init) == ("rest", "a/final.pt")
    assert run_config(_parse("run", "--gan-seeds", "3", "--seeds", "0-3")).n_generators == 3  # the old name


@pytest.mark.parametrize("verb, table", [(["run"], RUN_FLAGS), (["gan", "train", "--out", "x"], GAN_FLAGS),
                                         (["classify", "train", "--arm", "real", "--out", "x"], CLASSIFY_FLAGS)])
def test_each_table_names_only_flags_its_verb_has(verb, table):
    assert set(table) <= set(vars(_parse(*verb)))
    assert all(value is None for name, value in vars(_parse(*verb)).items() if name in table)


def test_the_quick_generators_take_half_their_steps_at_64_px_unless_the_run_sets_them():
    quick_steps = configs.preset("quick").gan.steps
    assert run_config(_parse("run", "--size", "32")).gan.steps == quick_steps
    at_64 = run_config(_parse("run", "--size", "64"))
    assert (at_64.gan.size, at_64.data.size, at_64.gan.steps) == (64, 64, quick_steps // 2)
    assert run_config(_parse("run", "--size", "64", "--gan-steps", "700")).gan.steps == 700
    assert run_config(_parse("run", "--preset", "study", "--size", "64")).gan.steps == \
        configs.preset("study").gan.steps  # the study preset's own shorter schedule stands
    other = run_config(_parse("run", "--size", "64", "--gan", "acgan"))
    assert (other.gan.model, other.gan.steps) == ("acgan", configs.gan_preset("quick", "acgan").steps)
    trained = _parse("gan", "train", "--out", "x", "--size", "64")
    assert configs.gan_preset(trained.preset, trained.model, trained.size).steps == quick_steps // 2
