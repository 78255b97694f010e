"""The generator stage: train a class-conditional GAN (acgan: the original design; cgan: data-efficient) or
diffusion model (ddpm, with classifier-free guidance) on the train split, with sample grids, JSONL logs and exactly
resumable, self-describing checkpoints. Read trainer.py (the loop) first; families.py is the table of families,
steps.py their training steps, resume.py what makes a resume exact.

Public API:
    train(dataset, config, out_dir, resume=False, progress=True, pseudo=None) -> Path   the final checkpoint
        (pseudo: pool images with pseudo-labels to learn from too; config.init: starting weights, transfer.py)
    read_init(path, config, channels, class_names) -> (state, record)      a --generator-init checkpoint, checked
    read_log(out_dir) -> list[dict]                                          log.jsonl rows
    check_config(config)                                                     MedsynError for untrainable settings
    load_generator(checkpoint, device="cpu") -> (generator, info)           EMA generator in eval mode
    generate_images(generator, info, labels, seed) -> uint8 (N, H, W, C)    seeded, deterministic
    image_grid(images, rows) -> uint8 (H', W', C); save_png(image, path)
    generator_folder(model, unlabelled) -> str                              `cgan` or `cgan-unlabelled` (a run's)
"""

import importlib

# the loop lives in trainer.py, not train.py, so that the function `medsyn.generators.train` is never shadowed by a module

# name -> (module, attribute); imported on first use so that `medsyn --help` does not import torch
_API = {"train": ("trainer", "train"), "read_log": ("trainer", "read_log"),
        "check_config": ("trainer", "check_config"),
        "load_generator": ("checkpoint", "load_generator"), "generate_images": ("sample", "generate"),
        "class_grid": ("sample", "class_grid"), "image_grid": ("sample", "grid"), "save_png": ("sample", "save_png"),
        "read_init": ("transfer", "read_init")}
__all__ = sorted([*_API, "generator_folder"])


def generator_folder(model: str, unlabelled: bool) -> str:
    """The folder name of a run's generators of `model` (gan/, synthetic/, audit/): `cgan` learned from the labelled
    train split only, `cgan-unlabelled` from the unlabelled pool too (what unlabelled-synth arms draw from)."""
    return f"{model}-unlabelled" if unlabelled else model


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'medsyn.generators' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(f"medsyn.generators.{module}"), attribute)
    globals()[name] = value
    return value
