"""The tiny settings the tests train with, and the small real dataset most of them share (loaded as a plugin by
conftest.py). A test that needs other settings sets them itself and says why beside them. The tiny audit is the
smoke preset's (`preset("smoke").audit`), defined once in config.py.

The first load of the bundled data in a session runs the leak guard's near-copy search over its 5856 images (the
cache is private to the session): about 20 s on 2 idle cores, minutes on busy ones, so a test that needs the bundled
data is marked `slow`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medsyn import data
from medsyn.config import ClassifyConfig, GanConfig, gan_preset

# One epoch of VGG16 at 1/16 of its width, 16 images a step: a classifier on the fixture X-rays in about a second.
TINY_CLASSIFY = ClassifyConfig(width=0.0625, epochs=1, batch_size=16, patience=1, threads=1)

# The smoke preset's GANs cut to 3 steps of 8 images at width 4, with a log line every step and a snapshot at step 2
# (so training writes two sample grids, and a resume has a checkpoint to start from).
TINY_GAN = dict(steps=3, batch_size=8, base_width=4, snapshot_every=2, log_every=1)

# The smoke ddpm cut to 6 steps of 8 images with 2 sampling steps, a snapshot every 3 steps (resume from the first).
TINY_DDPM = dict(steps=6, batch_size=8, snapshot_every=3, log_every=1, sampling_steps=2)


def tiny_gan(model: str, **overrides) -> GanConfig:
    """The smoke preset's `model` (cgan or acgan) at the tiny settings, with `overrides` on top."""
    return dataclasses.replace(gan_preset("smoke", model), **{**TINY_GAN, **overrides})


@pytest.fixture(scope="session")
def bundled() -> data.ImageSet:
    """The bundled PneumoniaMNIST as `data.load()` gives it: 5856 images of 28 px in the official splits."""
    return data.load()


@pytest.fixture(scope="session")
def bundled_slice(tmp_path_factory):
    """300 train, 80 val and 80 test images of the bundled npz, read directly (the leak guard then searches 460
    images, not 5856): a small real dataset that loads in seconds. Returns the .npz path. The train rows start at
    23: train[22] is MedMNIST's own copy of val[61]."""
    raw = np.load(data.bundled_path())
    rows = {"train": slice(23, 323), "val": slice(0, 80), "test": slice(0, 80)}
    arrays = {f"{s}_{kind}": raw[f"{s}_{kind}"][rows[s]] for s in rows for kind in ("images", "labels")}
    path = tmp_path_factory.mktemp("slice") / "pneumoniamnist.npz"  # MedMNIST's name: its class names
    np.savez(path, **arrays)
    return path
