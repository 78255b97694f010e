"""The one training loop, for acgan, cgan and ddpm, on CPU, one GPU, or several GPUs under torchrun.

Per step: a batch of real training images, then the model family's update, then an EMA update of the generator.
GANs: fakes for the model's fake labels, one discriminator update, optional lazy R1, one generator update on fresh
noise with the same labels. ddpm: one denoising update of its UNet (its "generator"; there is no discriminator).
Several processes (launched by `torchrun`) draw the same global batch (data order, labels, noise, augmentation)
from identically seeded RNGs and each takes its batch_size / world slice; gradients are averaged with
torch.distributed (stylegan2-ada's approach; no DDP wrapper, so the discriminator can be frozen for the generator
step); a GAN's batch norm uses the global batch's statistics and dropout masks are slices of the global batch's,
so K processes take the single-process step (generators/distributed.py). Mixed precision on GPU.
Every `snapshot_every` steps rank 0 writes a sample grid and an atomic checkpoint holding everything a resume
needs: weights, EMA, the optimisers, the loss scaler, augmentation state, counters and all RNG states.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from medsyn.config import GAN_MODELS, GAN_SIZES, GanConfig, check_device, resolve_device, to_dict
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.fileio import atomic_path, holds_files, read_json, read_jsonl, write_json, write_text
from medsyn.generators import checkpoint, sample
from medsyn.generators.augment import DiffAugment, parse_policy
from medsyn.generators.distributed import BatchShard, average_gradients, globalise, mean_over_processes

LOG_FIELDS = {"step": int}  # each log.jsonl row: the step it was written at (checked when read back)

R1_EVERY = 16          # lazy regularisation interval (StyleGAN2)
GRID_COLUMNS = 8
# may differ on --resume (guidance and sampling_steps only change how ddpm samples, not what it learns)
RESUMABLE_CHANGES = ("steps", "snapshot_every", "log_every", "device", "amp", "guidance", "sampling_steps")


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> BatchShard:
        return BatchShard(self.rank, self.world)


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


@dataclass
class StepContext:
    """What one training step needs besides the parts it updates."""
    config: GanConfig
    model: object                 # the model's module (acgan, cgan, ddpm)
    rt: Runtime
    n_classes: int
    local_batch: int
    use_amp: bool
    amp_dtype: torch.dtype

    def autocast(self):
        return torch.autocast(self.rt.device.type, dtype=self.amp_dtype, enabled=self.use_amp)


def _gan_parts(ctx: StepContext, info: dict) -> dict:
    config = ctx.config
    generator, discriminator = (net.to(ctx.rt.device) for net in ctx.model.networks(
        config.size, info["channels"], ctx.n_classes, config.latent_dim, config.base_width))
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    if ctx.rt.world > 1:  # not the EMA copy: rank 0 alone recalibrates and samples it
        for net in (generator, discriminator):
            globalise(net, ctx.rt.shard, ctx.local_batch)
    opt_g, opt_d = ctx.model.optimizers(generator, discriminator, config.lr_g, config.lr_d)
    return dict(generator=generator, discriminator=discriminator, generator_ema=generator_ema, opt_g=opt_g,
                opt_d=opt_d, augment=DiffAugment(config.diffaugment, config.augment_p, config.ada_target,
                                                 ctx.rt.shard))


def _gan_step(parts: dict, ctx: StepContext, real: torch.Tensor, y_real: torch.Tensor, y_global: torch.Tensor,
              step: int) -> dict:
    """One discriminator update (with lazy R1 every R1_EVERY steps), then one generator update. Fake labels and
    noise are drawn for the global batch; this process takes its slice."""
    config, model, rt = ctx.config, ctx.model, ctx.rt
    generator, discriminator, augment, scaler = (parts[k] for k in ("generator", "discriminator", "augment", "scaler"))
    y_fake = rt.shard.take(model.fake_labels(y_global, ctx.n_classes))

    discriminator.requires_grad_(True)
    with ctx.autocast():
        with torch.no_grad():
            fake = generator(_noise(model, config, rt), y_fake)
        d_loss, d_stats = model.discriminator_loss(discriminator, augment(real), augment(fake.float()), y_real, y_fake)
    _update(d_loss, parts["opt_d"], discriminator, scaler, rt)
    if config.r1_gamma > 0 and (step + 1) % R1_EVERY == 0:
        real_r1 = augment(real).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.real_scores(discriminator, real_r1, y_real).sum(), real_r1,
                                      create_graph=True)
        r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean() * (config.r1_gamma / 2 * R1_EVERY)
        _update(r1, parts["opt_d"], discriminator, None, rt)
        d_stats["r1"] = r1.detach()
    real_sign = float(mean_over_processes(d_stats["real_sign"], rt.world)) if augment.target > 0 else 0.0
    augment.update(real_sign, config.batch_size, step + 1)

    discriminator.requires_grad_(False)
    with ctx.autocast():
        fake = generator(_noise(model, config, rt), y_fake)
        g_loss, g_stats = model.generator_loss(generator, discriminator, augment(fake.float()), y_fake)
    _update(g_loss, parts["opt_g"], generator, scaler, rt)
    stats = {key: value.detach() for key, value in {**d_stats, **g_stats}.items()}
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats, "augment_p": augment.p}


def _diffusion_parts(ctx: StepContext, info: dict) -> dict:
    generator = checkpoint.build_generator(info).to(ctx.rt.device)
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    return dict(generator=generator, generator_ema=generator_ema,
                opt_g=ctx.model.optimizer(generator, ctx.config.lr_g))


def _diffusion_step(parts: dict, ctx: StepContext, real: torch.Tensor, labels: torch.Tensor, y_global: torch.Tensor,
                    step: int) -> dict:
    """One denoising update: noise a batch at random timesteps, predict v, some labels dropped for guidance."""
    network = parts["generator"]
    with ctx.autocast():
        loss = network.loss(real, labels, ctx.config.label_dropout, ctx.rt.shard)
    _update(loss, parts["opt_g"], network, parts["scaler"], ctx.rt)
    return {"loss": loss.detach()}


def train(dataset: ImageSet, config: GanConfig, out_dir: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train on `dataset.subset("train")`; write config.json, log.jsonl, samples/grid-*.png, checkpoint.pt and
    final.pt into out_dir; return final.pt. With resume=True continue from checkpoint.pt (or return a finished
    final.pt of the same run when it already reached config.steps)."""
    out_dir = Path(out_dir)
    train_set = dataset.subset("train")
    _check(config, train_set)
    run_record = {"gan": to_dict(config), "data": _data_record(train_set)}
    final_path, latest_path = out_dir / "final.pt", out_dir / "checkpoint.pt"
    _check_run_dir(out_dir, run_record, resume)
    if resume and final_path.exists() and checkpoint.load(final_path)["step"] >= config.steps:
        return final_path

    rt = _runtime(config)
    _seed_everything(config.seed)  # the same on every process: each draws the global batch and takes its slice
    model = checkpoint.MODELS[config.model]
    local_batch = config.batch_size // rt.world
    images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2).contiguous().to(rt.device)
    labels = torch.from_numpy(train_set.labels).long().to(rt.device)
    info = _info(config, train_set, model)
    use_amp = config.amp and rt.device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    step_context = StepContext(config, model, rt, train_set.n_classes, local_batch, use_amp, amp_dtype)
    build_parts, train_step = (_diffusion_parts, _diffusion_step) if config.model == "ddpm" else (_gan_parts, _gan_step)
    parts = {**build_parts(step_context, info),
             "scaler": torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
             "sampler": Sampler(len(images), config.batch_size, config.seed)}
    generator, generator_ema, scaler = parts["generator"], parts["generator_ema"], parts["scaler"]
    counters = {"step": 0, "images_seen": 0, "train_seconds": 0.0}

    if resume and latest_path.exists():
        state = checkpoint.load(latest_path)
        if state["step"] > config.steps:
            raise MedsynError(f"{latest_path} is at step {state['step']}, beyond --steps {config.steps}; "
                              "pass --steps of at least that to continue it.")
        for name, part in parts.items():
            part.load_state_dict(state[name])
        counters = {key: state[key] for key in counters}
        _set_rng(state["rng"], rt)
    elif rt.world > 1:
        for net in (part for part in parts.values() if isinstance(part, torch.nn.Module)):
            for tensor in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(tensor.data, src=0)
    if rt.main:  # rows past the restart point (all of them, on a fresh start) belong to a run that was lost
        _truncate_log(out_dir / "log.jsonl", counters["step"])

    def snapshot(path: Path, finished: bool) -> None:
        rng = _rng_states(rt)
        if not rt.main:
            return
        _recalibrate_batch_norm(generator_ema, info, labels, config.seed)
        grid = sample.class_grid(generator_ema, info, GRID_COLUMNS, config.seed)
        sample.save_png(grid, out_dir / "samples" / f"grid-{counters['step']:06d}.png")
        state = {name: part.state_dict() for name, part in parts.items()}
        checkpoint.save(path, {"info": info, "config": to_dict(config), **counters, **state, "rng": rng,
                               "finished": finished})

    bar = _progress(config.steps, counters["step"], progress and rt.main)
    window_start, window_images = time.perf_counter(), 0
    while counters["step"] < config.steps:
        step_start = time.perf_counter()
        idx = parts["sampler"].next().to(rt.device)  # the global batch; this process keeps its slice
        y_global = labels[idx]
        idx = rt.shard.take(idx)
        real, y_real = sample.to_model(images[idx], info["normalization"]), labels[idx]
        losses = train_step(parts, step_context, real, y_real, y_global, counters["step"])
        # EMA warm-up: a shorter average early on, while the generator still changes fast
        _ema(generator_ema, generator, min(config.ema_decay, (1 + counters["step"]) / (10 + counters["step"])))
        if scaler.is_enabled():
            scaler.update()

        counters["step"] += 1
        counters["images_seen"] += config.batch_size
        counters["train_seconds"] += time.perf_counter() - step_start
        window_images += config.batch_size
        step = counters["step"]
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            now = time.perf_counter()
            row = {"step": step, "images_seen": counters["images_seen"],
                   "train_seconds": round(counters["train_seconds"], 3),
                   "images_per_s": round(window_images / (now - window_start), 1),
                   **{key: float(value) for key, value in losses.items()}}
            window_start, window_images = now, 0
            if rt.main:
                with open(out_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
            bar.set_postfix({key: f"{value:.3f}" for key, value in row.items() if key.endswith("loss")},
                            img_s=row["images_per_s"])
        if step % config.snapshot_every == 0 or step == config.steps:
            snapshot(latest_path, finished=step == config.steps)
    bar.close()
    if rt.main:
        with atomic_path(final_path) as tmp:
            tmp.write_bytes(latest_path.read_bytes())
    if rt.world > 1:
        dist.barrier()
    return final_path


def read_log(out_dir: Path) -> list[dict]:
    """The rows of out_dir/log.jsonl (one per `log_every` steps)."""
    path = Path(out_dir) / "log.jsonl"
    if not path.is_file():
        raise MedsynError(f"{path}: no training log; is {out_dir} a `medsyn gan train` run folder?")
    return read_jsonl(path, LOG_FIELDS)


def check_config(config: GanConfig) -> None:
    """Raise a MedsynError for settings no GAN can train with; callers check before loading data or making folders."""
    if config.model not in GAN_MODELS:
        raise MedsynError(f"unknown GAN model {config.model!r}; choose one of {', '.join(GAN_MODELS)}.")
    if config.size not in GAN_SIZES:
        raise MedsynError(f"--size {config.size}: the GANs work at {', '.join(map(str, GAN_SIZES))} px.")
    for name in ("steps", "batch_size", "base_width", "latent_dim", "snapshot_every", "log_every"):
        if getattr(config, name) < 1:
            raise MedsynError(f"GAN {name} must be at least 1, not {getattr(config, name)}.")
    if not 0 <= config.ema_decay < 1:
        raise MedsynError(f"ema_decay must be in [0, 1), not {config.ema_decay}.")
    if config.model == "ddpm":
        _check_diffusion(config)
    parse_policy(config.diffaugment)
    check_device(config.device)


def _check_diffusion(config: GanConfig) -> None:
    from medsyn.generators import ddpm

    ddpm.require_diffusers()
    if config.sampling_steps < 1:
        raise MedsynError(f"sampling_steps must be at least 1, not {config.sampling_steps}.")
    if not 0 <= config.label_dropout < 1:
        raise MedsynError(f"label_dropout must be in [0, 1), not {config.label_dropout}.")
    if config.guidance < 0:
        raise MedsynError(f"guidance must be at least 0 (0 = plain conditional sampling), not {config.guidance}.")
    if config.guidance > 0 and config.label_dropout == 0:
        raise MedsynError("guidance > 0 needs label_dropout > 0: without dropped labels the model never learns the "
                          "unconditional noise that guidance pushes away from.")


def _check(config: GanConfig, train_set: ImageSet) -> None:
    check_config(config)
    if train_set.size != config.size:
        raise MedsynError(f"the data is {train_set.size} px but the GAN is {config.size} px; load the data with "
                          f"--size {config.size}.")
    if len(train_set) == 0:
        raise MedsynError(f"{train_set.source}: the train split is empty; the GAN trains on train images only.")


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


def _check_run_dir(out_dir: Path, record: dict, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one the same settings (steps and logging may change)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 checks and writes; torchrun stops the others if it fails
    config_path = out_dir / "config.json"
    if holds_files(out_dir):
        if not resume:
            raise MedsynError(f"{out_dir} already holds files; pass --resume to continue that run, or choose "
                              "another --out.")
        if config_path.exists():
            saved = read_json(config_path)
            defaults = to_dict(GanConfig())  # a setting added since the run was made had its default value then
            changed = [key for key, value in record["gan"].items()
                       if key not in RESUMABLE_CHANGES and saved["gan"].get(key, defaults[key]) != value]
            changed += [f"data.{key}" for key, value in record["data"].items() if saved["data"].get(key) != value]
            if changed:
                raise MedsynError(f"{out_dir} was trained with different settings ({', '.join(changed)}); resume "
                                  "with the same ones, or choose another --out.")
    write_json(config_path, record)


def _runtime(config: GanConfig) -> Runtime:
    device = resolve_device(config.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.batch_size % world:
        raise MedsynError(f"batch size {config.batch_size} is not divisible by the {world} processes.")
    if world == 1:
        return Runtime(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # under torchrun each process takes its own GPU
    if device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def _update(loss: torch.Tensor, optimizer, module, scaler, rt: Runtime) -> None:
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward()
    if rt.world > 1:
        average_gradients(module, rt.world)
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
    else:
        optimizer.step()


def _noise(model, config: GanConfig, rt: Runtime) -> torch.Tensor:
    """This process's slice of the latent noise drawn for the whole global batch."""
    return rt.shard.take(model.latent(config.batch_size, config.latent_dim, rt.device))


@torch.no_grad()
def _ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def _recalibrate_batch_norm(generator: torch.nn.Module, info: dict, labels: torch.Tensor, seed: int,
                            batches: int = 8, batch: int = 64) -> None:
    """Standing statistics: batch-norm running stats recomputed for the EMA weights (the ones copied from the
    raw generator do not fit the averaged weights and wash its samples out). Own RNG, so training is unchanged."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    from medsyn.generators.checkpoint import MODELS

    noise = torch.Generator().manual_seed(seed)
    device = labels.device
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for _ in range(batches):
        y = labels[torch.randint(0, len(labels), (batch,), generator=noise).to(device)]
        generator(MODELS[info["model"]].latent(batch, info["latent_dim"], device, generator=noise), y)
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _rng_states(rt: Runtime) -> list[dict]:
    """Every process's RNG states (gathered to all, so a resume on the same world size restores each)."""
    if rt.world == 1:
        return [_rng_state()]
    states = [None] * rt.world
    dist.all_gather_object(states, _rng_state())
    return states


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


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from, so no step is logged twice."""
    if path.exists():
        rows = [row for row in read_jsonl(path, LOG_FIELDS) if row["step"] <= step]
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
