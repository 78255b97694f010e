"""Starting a generator from another source's checkpoint (`--generator-init CKPT`), then fine-tuning it here.

The checkpoint is read by the one safe loader (fileio.load_tensors, weights only, through checkpoint.load) and must
be of the same family, image size, channel count, width and latent size: another size or channel count is refused
with a MedsynError before anything is written. Its classes are mapped to this data's by name: each class-indexed
tensor (the class embeddings: cgan's conditional batch norm, projection and class head, acgan's one-hot inputs and class head,
ddpm's class embedding and its null class) takes the source's row of the class of the same name, and keeps its own
fresh initialisation for a class the source does not have (all of them where no name matches: the class embedding
re-initialised). Every other tensor is copied, but for a cgan class head (aux_weight) or minibatch standard
deviation layer (mbstd_group) the source was trained without, which starts fresh. The generator (and its EMA copy)
start from the source's EMA weights.

GANs fine-tune with the discriminator's early layers frozen (FreezeD, Mo et al. 2020): they keep the source's
low-level features while the later layers adapt to the small labelled set. ddpm fine-tunes every weight.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from medsyn.config import GanConfig
from medsyn.errors import MedsynError
from medsyn.fileio import sha256_file
from medsyn.generators import checkpoint

# per family and part: (pattern of a class-indexed tensor's name, class axis, entries before the classes on that
# axis, entries after them)
CLASS_TENSORS = {
    "cgan": {"generator": [(r"norm\d\.(gain|bias)\.weight$", 0, 0, 0)],
             "discriminator": [(r"^(embed|classify)\.parametrizations\.weight\.(original|0\._u)$", 0, 0, 0),
                               (r"^classify\.bias$", 0, 0, 0)]},  # classify: the class head (aux_weight > 0)
    "acgan": {"generator": [(r"^dense\.weight$", 1, "latent_dim", 0)],
              "discriminator": [(r"^class_out\.1\.(weight|bias)$", 0, 0, 0)]},
    "ddpm": {"generator": [(r"^unet\.class_embedding\.weight$", 0, 0, 1)]},  # after the classes: the null class
}
FROZEN = {"cgan": ("stem.", "blocks.0."), "acgan": ("features.0.", "features.2.")}  # FreezeD: D's first layers
SAME = ("model", "size", "channels", "base_width", "latent_dim")  # what must match for the weights to fit


def read_init(path: str | Path, config: GanConfig, channels: int, class_names) -> tuple[dict, dict]:
    """The starting checkpoint's state and the record of where the weights came from; a MedsynError where it
    cannot start this run (another family, image size, channel count, width or latent size)."""
    path = Path(path)
    state = checkpoint.load(path)
    info = state["info"]
    ours = {"model": config.model, "size": config.size, "channels": channels, "base_width": config.base_width,
            "latent_dim": info["latent_dim"] if config.model == "ddpm" else config.latent_dim}
    differing = [f"{k} {info[k]} (this run: {ours[k]})" for k in SAME if info[k] != ours[k]]
    if differing:
        fix = {"size": "--size", "channels": "--channels", "base_width": "--width", "model": "--model"}
        flags = sorted({fix[k] for k in SAME if info[k] != ours[k] and k in fix})
        raise MedsynError(f"--generator-init {path}: the checkpoint is a generator of another shape: "
                          f"{'; '.join(differing)}. Start from a checkpoint of the same kind, or train this run "
                          f"with the checkpoint's settings ({', '.join(flags) or 'its latent size'}).")
    if config.model != "ddpm" and "discriminator" not in state:
        raise MedsynError(f"--generator-init {path}: a {config.model} checkpoint without its discriminator; fine-tuning "
                          "freezes the discriminator's early layers, so give RUN/final.pt or RUN/checkpoint.pt of "
                          "`medsyn gan train`.")
    mapped = {name: info["class_names"].index(name) for name in class_names if name in info["class_names"]}
    record = {"path": str(path.resolve()), "sha256": sha256_file(path), "model": info["model"],
              "data_source": info["data_source"], "step": state["step"], "source_classes": list(info["class_names"]),
              "classes": {name: (info["class_names"][j] if name in mapped else "re-initialised")
                          for name, j in ((n, mapped.get(n)) for n in class_names)},
              "fine_tuning": "discriminator layers " + ", ".join(p.rstrip(".") for p in FROZEN[config.model]) +
                             " frozen (FreezeD)" if config.model in FROZEN else "every weight"}
    return state, record


def freeze_early_layers(parts: dict, model: str) -> None:
    """FreezeD: the discriminator's optimiser updates every layer but its first ones. Set before a resume restores
    the optimiser, so that the restored state has the same parameters."""
    if model not in FROZEN:
        return
    discriminator, optimizer = parts["discriminator"], parts["opt_d"]
    trainable = [p for name, p in discriminator.named_parameters() if not name.startswith(FROZEN[model])]
    parts["opt_d"] = type(optimizer)(trainable, **optimizer.defaults)


@torch.no_grad()
def start_from(parts: dict, state: dict, model: str, class_names, info: dict) -> None:
    """Load the starting weights into the generator, its EMA copy and (GANs) the discriminator, classes mapped by
    name (see the module's docstring)."""
    source_names = list(state["info"]["class_names"])
    mapping = [(i, source_names.index(name)) for i, name in enumerate(class_names) if name in source_names]
    sources = {"generator": state["generator_ema"], "generator_ema": state["generator_ema"],
               "discriminator": state.get("discriminator")}
    for part, source in sources.items():
        if part not in parts:
            continue
        rules = CLASS_TENSORS[model].get("generator" if part == "generator_ema" else part, [])
        target = parts[part].state_dict()
        # a tensor the source lacks (a cgan class head or mbstd layer the source was trained without) stays fresh
        loaded = {key: _mapped(key, value, source[key], rules, mapping, info) if key in source else value
                  for key, value in target.items()}
        parts[part].load_state_dict(loaded)


def _mapped(key: str, fresh: torch.Tensor, given: torch.Tensor, rules, mapping, info: dict) -> torch.Tensor:
    for pattern, axis, before, after in rules:
        if re.search(pattern, key):
            before = info[before] if isinstance(before, str) else before
            out = fresh.clone()
            n_out, n_given = fresh.shape[axis] - before - after, given.shape[axis] - before - after
            out.narrow(axis, 0, before).copy_(given.narrow(axis, 0, before))
            out.narrow(axis, before + n_out, after).copy_(given.narrow(axis, before + n_given, after))
            for i, j in mapping:
                out.narrow(axis, before + i, 1).copy_(given.narrow(axis, before + j, 1))
            return out
    return given.to(fresh.dtype)
