"""The training loop for every generator family (families.py), on CPU, one GPU, or several GPUs under torchrun.

Per step: a batch of real training images, the family's update (steps.py), then an EMA update of the generator.
Several processes (launched by `torchrun`) draw the same global batch (data order, labels, noise, augmentation)
from identically seeded RNGs and each takes its batch_size / world slice, so K processes take the single-process
step (distributed.py). Mixed precision on GPU. Every `snapshot_every` steps rank 0 writes a sample grid and an
atomic checkpoint holding everything an exact resume needs (resume.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from medsyn.config import GAN_SIZES, GanConfig, check_device, to_dict
from medsyn.data import ImageSet
from medsyn.data.unlabelled import PseudoLabelled
from medsyn.errors import MedsynError
from medsyn.fileio import atomic_path, read_jsonl, write_text
from medsyn.generators import sample
from medsyn.generators.augment import parse_policy
from medsyn.generators.distributed import runtime
from medsyn.generators.families import FAMILIES
from medsyn.generators.resume import already_finished, check_run_dir, restore, rng_states, save, seed_everything
from medsyn.generators.steps import StepContext, recalibrate_batch_norm, update_ema
from medsyn.generators.transfer import freeze_early_layers, read_init, start_from

LOG_FIELDS = {"step": int}  # each log.jsonl row: the step it was written at (checked when read back)
GRID_COLUMNS = 8


def train(dataset: ImageSet, config: GanConfig, out_dir: Path, resume: bool = False, progress: bool = True,
          pseudo: PseudoLabelled | None = None) -> Path:
    """Train on `dataset.subset("train")` and, with `pseudo`, on the unlabelled pool images it kept with their
    pseudo-labels (classify.pseudo_label); with config.init, start from that checkpoint (transfer.py). Write
    config.json (with `learned_from`: what the generator learned from), log.jsonl, samples/grid-*.png,
    checkpoint.pt and final.pt into out_dir; return final.pt. With resume=True continue from checkpoint.pt (or
    return a finished final.pt of the same run when it already reached config.steps)."""
    # -- setup: settings, what it learns from, run folder, this process's device and rank, seeds -----------------
    out_dir, train_set = Path(out_dir), dataset.subset("train")
    final_path, latest_path, log_path = out_dir / "final.pt", out_dir / "checkpoint.pt", out_dir / "log.jsonl"
    _check(config, train_set)
    init_state, init_record = read_init(config.init, config, train_set.channels, train_set.class_names) \
        if config.init else (None, "none")
    learned_from = learned_from_record(train_set, pseudo, init_record)
    learn_set = train_set if pseudo is None else _joined(train_set, pseudo.images)
    check_run_dir(out_dir, {"gan": to_dict(config), "data": _data_record(train_set), "learned_from": learned_from},
                  resume)
    if resume and already_finished(final_path, config):
        return final_path
    rt = runtime(config)
    seed_everything(config.seed)  # the same on every process: each draws the global batch and takes its slice
    family = FAMILIES[config.model]
    ctx = StepContext(config, family, rt, train_set.n_classes)

    # -- data: the train split on the device, and the generator's description of it ------------------------------
    images = torch.from_numpy(learn_set.images).permute(0, 3, 1, 2).contiguous().to(rt.device)
    labels = torch.from_numpy(learn_set.labels).long().to(rt.device)
    info = {**_info(config, train_set, family.module), "learned_from": learned_from}

    # -- models and optimisers: the family's parts, the loss scaler and the data order, all resumable -----------
    parts = {**family.build_parts(ctx, info), "scaler": ctx.grad_scaler(),
             "sampler": Sampler(len(images), config.batch_size, config.seed)}
    generator, generator_ema, scaler = parts["generator"], parts["generator_ema"], parts["scaler"]
    if init_state is not None:  # fine-tuning: the discriminator's first layers stay as the source trained them
        freeze_early_layers(parts, config.model)

    # -- resume: the latest checkpoint's state and counters, or a fresh start (from the starting weights) --------
    counters = restore(parts, latest_path, resume, config, rt)
    if init_state is not None and counters["step"] == 0:
        start_from(parts, init_state, config.model, train_set.class_names, info)
    if rt.main:  # rows past the restart point (all of them, on a fresh start) belong to a run that was lost
        _truncate_log(log_path, counters["step"])

    # -- the loop ------------------------------------------------------------------------------------------------
    bar = _progress(config.steps, counters["step"], progress and rt.main)
    window_start, window_images = time.perf_counter(), 0
    while counters["step"] < config.steps:
        step_start = time.perf_counter()
        # the global batch, drawn alike by every process; this process keeps its slice
        idx = parts["sampler"].next().to(rt.device)
        y_global = labels[idx]
        idx = rt.shard.take(idx)
        real, y_real = sample.to_model(images[idx], info["normalization"]), labels[idx]

        # the family's update, then the EMA (warm-up: a shorter average early on, while the generator changes fast)
        losses = family.train_step(parts, ctx, real, y_real, y_global, counters["step"])
        update_ema(generator_ema, generator, min(config.ema_decay, (1 + counters["step"]) / (10 + counters["step"])))
        if scaler.is_enabled():
            scaler.update()

        # count
        counters["step"] += 1
        counters["images_seen"] += config.batch_size
        counters["train_seconds"] += time.perf_counter() - step_start
        window_images += config.batch_size
        step = counters["step"]
        bar.update(1)

        # log: the losses and the speed since the last row
        if step % config.log_every == 0 or step == config.steps:
            now = time.perf_counter()
            row = {"step": step, "images_seen": counters["images_seen"],
                   "train_seconds": round(counters["train_seconds"], 3),
                   "images_per_s": round(window_images / (now - window_start), 1),
                   **{key: float(value) for key, value in losses.items()}}
            window_start, window_images = now, 0
            if rt.main:
                _append_log(log_path, row)
            bar.set_postfix({key: f"{value:.3f}" for key, value in row.items() if key.endswith("loss")},
                            img_s=row["images_per_s"])

        # snapshot: a sample grid of the EMA generator and a checkpoint to resume from
        if step % config.snapshot_every == 0 or step == config.steps:
            rng = rng_states(rt)  # every process's, gathered before rank 0 alone samples the grid
            if rt.main:
                recalibrate_batch_norm(generator_ema, family.module.latent, info["latent_dim"], labels, config.seed)
                grid = sample.class_grid(generator_ema, info, GRID_COLUMNS, config.seed)
                sample.save_png(grid, out_dir / "samples" / f"grid-{step:06d}.png")
                save(latest_path, parts, counters, info, config, rng, finished=step == config.steps)
    bar.close()

    # -- final checkpoint: a copy of the last snapshot -----------------------------------------------------------
    if rt.main:
        with atomic_path(final_path) as tmp:
            tmp.write_bytes(latest_path.read_bytes())
    if rt.world > 1:
        dist.barrier()
    return final_path


class Sampler:
    """Shuffled epochs over the training images; a batch may span two epochs (tiny datasets)."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.pos, self.epoch = torch.randperm(n, generator=self.generator), 0, 0

    def next(self) -> torch.Tensor:
        parts, need = [], self.batch
        while need:
            if self.pos == self.n:
                self.order, self.pos, self.epoch = torch.randperm(self.n, generator=self.generator), 0, self.epoch + 1
            take = min(need, self.n - self.pos)
            parts.append(self.order[self.pos:self.pos + take])
            self.pos, need = self.pos + take, need - take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos, self.epoch = state["order"], state["pos"], state["epoch"]


def check_config(config: GanConfig) -> None:
    """Raise a MedsynError for settings no GAN can train with; callers check before loading data or making folders."""
    if config.model not in FAMILIES:
        raise MedsynError(f"unknown GAN model {config.model!r}; choose one of {', '.join(FAMILIES)}.")
    if config.size not in GAN_SIZES:
        raise MedsynError(f"--size {config.size}: the GANs work at {', '.join(map(str, GAN_SIZES))} px.")
    for name in ("steps", "batch_size", "base_width", "latent_dim", "snapshot_every", "log_every"):
        if getattr(config, name) < 1:
            raise MedsynError(f"GAN {name} must be at least 1, not {getattr(config, name)}.")
    if not 0 <= config.ema_decay < 1:
        raise MedsynError(f"ema_decay must be in [0, 1), not {config.ema_decay}.")
    if config.aux_weight < 0 or (config.aux_weight > 0 and config.model != "cgan"):
        raise MedsynError(f"aux_weight {config.aux_weight}: the auxiliary class head is a cgan option (>= 0); "
                          "acgan has its own class head and ddpm none.")
    if config.mbstd_group < 0 or config.mbstd_group == 1 or (config.mbstd_group > 1 and config.model != "cgan"):
        raise MedsynError(f"mbstd_group {config.mbstd_group}: the minibatch standard deviation layer is a cgan option "
                          "(a group size >= 2, or 0 for none).")
    FAMILIES[config.model].check(config)
    parse_policy(config.diffaugment)
    check_device(config.device)


def _check(config: GanConfig, train_set: ImageSet) -> None:
    check_config(config)
    if train_set.size != config.size:
        raise MedsynError(f"the data is {train_set.size} px but the GAN is {config.size} px; load the data with "
                          f"--size {config.size}.")
    if len(train_set) == 0:
        raise MedsynError(f"{train_set.source}: the train split is empty; the GAN trains on train images only.")


def learned_from_record(train_set: ImageSet, pseudo: PseudoLabelled | None, init: dict | str) -> dict:
    """What a generator learned from: its labelled train images, the unlabelled pool images it used (with how they
    were labelled) and its starting weights ("none", or the checkpoint's path and sha256)."""
    return {"labelled_train_images": len(train_set), "labelled_source": train_set.source,
            "unlabelled_images": None if pseudo is None else pseudo.record, "starting_weights": init}


def _joined(train_set: ImageSet, extra: ImageSet) -> ImageSet:
    """The labelled train split followed by the pool's pseudo-labelled images, as one training set."""
    if tuple(extra.class_names) != tuple(train_set.class_names) or extra.images.shape[1:] != train_set.images.shape[1:]:
        raise MedsynError(f"the pseudo-labelled pool ({extra.images.shape[1:]}, classes {list(extra.class_names)}) "
                          f"does not match the train split ({train_set.images.shape[1:]}, classes "
                          f"{list(train_set.class_names)}); load the pool at the data's size and channels.")
    return dataclasses.replace(train_set, images=np.concatenate([train_set.images, extra.images]),
                               labels=np.concatenate([train_set.labels, extra.labels]),
                               split=np.concatenate([train_set.split, extra.split]),
                               groups=np.concatenate([train_set.groups, extra.groups]),
                               paths=np.concatenate([train_set.paths, extra.paths]), given_split=None)


def _data_record(train_set: ImageSet) -> dict:
    return {"source": train_set.source, "size": train_set.size, "channels": train_set.channels,
            "class_names": list(train_set.class_names), "train_counts": train_set.counts()["train"]}


def _info(config: GanConfig, train_set: ImageSet, model) -> dict:
    image_noise = model.LATENT == "image-noise"  # ddpm starts from a noise image, not a latent vector
    info = {"model": config.model, "size": config.size, "channels": train_set.channels,
            "class_names": list(train_set.class_names), "normalization": model.NORMALIZATION,
            "latent": model.LATENT,
            "latent_dim": train_set.channels * config.size ** 2 if image_noise else config.latent_dim,
            "base_width": config.base_width, "data_source": train_set.source,
            "train_counts": train_set.counts()["train"]}
    if image_noise:
        info["sampler"] = {"guidance": config.guidance, "sampling_steps": config.sampling_steps}
    return info


def read_log(out_dir: Path) -> list[dict]:
    """The rows of out_dir/log.jsonl (one per `log_every` steps)."""
    path = Path(out_dir) / "log.jsonl"
    if not path.is_file():
        raise MedsynError(f"{path}: no training log; is {out_dir} a `medsyn gan train` run folder?")
    return read_jsonl(path, LOG_FIELDS)


def _append_log(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from, so no step is logged twice."""
    if path.exists():
        rows = [row for row in read_jsonl(path, LOG_FIELDS) if row["step"] <= step]
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
