"""Self-describing checkpoints: the networks, optimisers and every piece of training state, plus what `generate`
needs to rebuild the generator (model, size, channels, classes, normalisation, latent) without any other file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsyn.config import MAX_SIZE
from medsyn.errors import MedsynError
from medsyn.fileio import NUMBER, Field, atomic_path, check_fields, load_tensors, sha256_file
from medsyn.generators.families import FAMILIES

FORMAT = "medsyn-gan-checkpoint"
VERSION = 1
INFO = {"model": Field(str, choices=tuple(FAMILIES)), "size": Field(int, 1, MAX_SIZE),
        "channels": Field(int, choices=(1, 3)), "class_names": Field(list, items=str),
        "normalization": Field(str, choices=("tanh", "sigmoid")), "latent": str,
        "latent_dim": Field(int, low=1), "base_width": Field(int, low=1), "data_source": str,
        "train_counts": Field(list, items=Field(int, low=0)),
        "sampler": Field(dict, optional=True, fields={"guidance": Field(NUMBER, 0, 100),
                                                      "sampling_steps": Field(int, 1, 1000)})}
SCHEMA = {"info": Field(dict, fields=INFO), "generator_ema": dict, "step": Field(int, low=0),
          "images_seen": Field(int, low=0), "train_seconds": Field(float, low=0)}  # what generate and resume read


def save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def load(path: str | Path) -> dict:
    """Read and check a checkpoint; every way it can be wrong is a MedsynError naming the file."""
    path = Path(path)
    state = load_tensors(path, "generator checkpoint", "`medsyn gan train --out RUN` writes RUN/final.pt (finished) "
                         "and RUN/checkpoint.pt (latest).")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MedsynError(f"{path}: not a medsyn GAN checkpoint (no '{FORMAT}' marker); use RUN/final.pt or "
                          "RUN/checkpoint.pt of a `medsyn gan train` run.")
    if state.get("version", 0) > VERSION:
        raise MedsynError(f"{path}: checkpoint format version {state['version']} is newer than this medsyn "
                          f"understands ({VERSION}); upgrade medsyn.")
    check_fields(state, SCHEMA, str(path), "the checkpoint is damaged or from another version: use another "
                 "checkpoint of the run (RUN/final.pt or RUN/checkpoint.pt), or train again into a new --out")
    return state


def load_generator(path: str | Path, device: str | torch.device = "cpu",
                   sampler: dict | None = None) -> tuple[nn.Module, dict]:
    """The generator to sample from (the EMA copy), in eval mode, and the checkpoint's info plus its sha256.
    `sampler` replaces a diffusion model's saved sampling settings (guidance, sampling_steps) for this use."""
    state = load(path)
    info = dict(state["info"])
    if sampler:
        if "sampler" not in info:
            raise MedsynError(f"{path}: a {info['model']} checkpoint has no sampler settings; "
                              f"{', '.join(sampler)} apply to ddpm checkpoints only.")
        info["sampler"] = {**info["sampler"], **sampler}
    try:
        generator = FAMILIES[info["model"]].generator(info)
        generator.load_state_dict(state["generator_ema"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise MedsynError(f"{path}: the generator weights do not match the model described in the checkpoint "
                          f"({str(err)[:160]}).") from err
    info["sha256"] = sha256_file(path)
    info["step"] = state.get("step")
    return generator.to(device).eval().requires_grad_(False), info
