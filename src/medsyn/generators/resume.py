"""Exact resumes: which runs may continue, from which checkpoint, and the RNG states that make the steps repeat.

A run folder's config.json holds its settings and data; a resumed run must have the same ones, except those in
RESUMABLE_CHANGES. The latest checkpoint holds everything a resume needs (the parts' states, the counters and
every process's RNG states), so a resumed run takes the very steps the uninterrupted one would have.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from medsyn.config import GanConfig, to_dict
from medsyn.errors import MedsynError
from medsyn.fileio import changed_settings, holds_files, read_json, write_json
from medsyn.generators import checkpoint
from medsyn.generators.distributed import Runtime

# may differ on --resume (guidance and sampling_steps only change how ddpm samples, not what it learns)
RESUMABLE_CHANGES = ("steps", "snapshot_every", "log_every", "device", "amp", "guidance", "sampling_steps")
FRESH_COUNTERS = {"step": 0, "images_seen": 0, "train_seconds": 0.0}  # a checkpoint holds them


def check_run_dir(out_dir: Path, record: dict, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one the same settings (steps and logging may change)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 checks and writes; torchrun stops the others if it fails
    config_path = out_dir / "config.json"
    if holds_files(out_dir):
        if not resume:
            raise MedsynError(f"{out_dir} already holds files; pass --resume to continue that run, or choose "
                              "another --out.")
        if config_path.exists():
            # a setting added since the run was made had its default value then; a run made before `learned_from`
            # was recorded learned from its labelled train split alone, from fresh weights
            legacy = {**record.get("learned_from", {}), "unlabelled_images": None, "starting_weights": "none"}
            changed = changed_settings(read_json(config_path), record, RESUMABLE_CHANGES,
                                       defaults={"gan": to_dict(GanConfig()), "learned_from": legacy})
            if changed:
                raise MedsynError(f"{out_dir} was trained with different settings ({', '.join(changed)}); resume "
                                  "with the same ones, or choose another --out.")
    write_json(config_path, record)


def already_finished(final_path: Path, config: GanConfig) -> bool:
    """Whether the run's final.pt already reached config.steps, so that resuming it has nothing to do."""
    return final_path.exists() and checkpoint.load(final_path)["step"] >= config.steps


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def restore(parts: dict, path: Path, resume: bool, config: GanConfig, rt: Runtime) -> dict:
    """The counters to continue from: with `resume` and a checkpoint at `path`, its counters, with its parts'
    states and RNG states loaded; otherwise zeros, with rank 0's initial weights on every process."""
    if not (resume and path.exists()):
        if rt.world > 1:
            for net in (part for part in parts.values() if isinstance(part, torch.nn.Module)):
                for tensor in list(net.parameters()) + list(net.buffers()):
                    dist.broadcast(tensor.data, src=0)
        return dict(FRESH_COUNTERS)
    state = checkpoint.load(path)
    if state["step"] > config.steps:
        raise MedsynError(f"{path} is at step {state['step']}, beyond --steps {config.steps}; "
                          "pass --steps of at least that to continue it.")
    for name, part in parts.items():
        part.load_state_dict(state[name])
    _set_rng(state["rng"], rt)
    return {key: state[key] for key in FRESH_COUNTERS}


def save(path: Path, parts: dict, counters: dict, info: dict, config: GanConfig, rng: list[dict],
         finished: bool) -> None:
    """A checkpoint a run can resume from, and sample from (info and generator_ema)."""
    state = {name: part.state_dict() for name, part in parts.items()}
    checkpoint.save(path, {"info": info, "config": to_dict(config), **counters, **state, "rng": rng,
                           "finished": finished})


def rng_states(rt: Runtime) -> list[dict]:
    """Every process's RNG states (gathered to all, so a resume on the same world size restores each)."""
    if rt.world == 1:
        return [_rng_state()]
    states = [None] * rt.world
    dist.all_gather_object(states, _rng_state())
    return states


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(states: list[dict], rt: Runtime) -> None:
    if len(states) != rt.world:
        raise MedsynError(f"the checkpoint was written by {len(states)} process(es); resume it with the same "
                          f"number, not {rt.world}.")
    state = states[rt.rank]
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
