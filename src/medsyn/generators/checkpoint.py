"""Self-describing checkpoints: the networks, optimisers and every piece of training state, plus what `generate`
needs to rebuild the generator (model, size, channels, classes, normalisation, latent) without any other file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsyn.errors import MedsynError
from medsyn.fileio import atomic_path, load_tensors, sha256_file
from medsyn.generators.families import FAMILIES

FORMAT = "medsyn-gan-checkpoint"
VERSION = 1
INFO_KEYS = ("model", "size", "channels", "class_names", "normalization", "latent", "latent_dim", "base_width")


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
    missing = [key for key in INFO_KEYS if key not in state.get("info", {})]
    if missing or "generator_ema" not in state:
        raise MedsynError(f"{path}: incomplete medsyn checkpoint (missing {', '.join(missing) or 'generator_ema'}).")
    if state["info"]["model"] not in FAMILIES:
        raise MedsynError(f"{path}: names the model {state['info']['model']!r}, which this medsyn does not know "
                          f"({', '.join(FAMILIES)}); the file is damaged or from another version.")
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
