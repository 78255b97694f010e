"""Each family's training step and the parts it updates, and the EMA copy of the generator that samples.

GANs (acgan, cgan): fakes for the model's fake labels, one discriminator update, optional lazy R1, one generator
update on fresh noise with the same labels. ddpm: one denoising update of its UNet (its "generator"; there is no
discriminator). Noise and labels are drawn for the global batch and each process takes its slice, and gradients
are averaged over processes, so K processes under torchrun take the single-process step (distributed.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from medsyn.config import GanConfig
from medsyn.generators.augment import DiffAugment
from medsyn.generators.distributed import Runtime, average_gradients, globalise, mean_over_processes

if TYPE_CHECKING:
    from medsyn.generators.families import Family

R1_EVERY = 16  # lazy regularisation interval (StyleGAN2)


@dataclass
class StepContext:
    """What one training step needs besides the parts it updates."""
    config: GanConfig
    family: Family
    rt: Runtime
    n_classes: int
    local_batch: int = field(init=False)   # this process's share of config.batch_size
    use_amp: bool = field(init=False)      # mixed precision, on GPU only
    amp_dtype: torch.dtype = field(init=False)

    def __post_init__(self):
        self.local_batch = self.config.batch_size // self.rt.world
        self.use_amp = self.config.amp and self.rt.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16

    def autocast(self):
        return torch.autocast(self.rt.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, which float16 needs and bfloat16 does not."""
        return torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)


def gan_parts(ctx: StepContext, info: dict) -> dict:
    config = ctx.config
    options = {"aux_weight": config.aux_weight, "mbstd_group": config.mbstd_group}  # cgan only (check_config)
    generator, discriminator = (net.to(ctx.rt.device) for net in ctx.family.module.networks(
        config.size, info["channels"], ctx.n_classes, config.latent_dim, config.base_width,
        **{name: value for name, value in options.items() if value}))
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    if ctx.rt.world > 1:  # not the EMA copy: rank 0 alone recalibrates and samples it
        for net in (generator, discriminator):
            globalise(net, ctx.rt.shard, ctx.local_batch)
    opt_g, opt_d = ctx.family.module.optimizers(generator, discriminator, config.lr_g, config.lr_d)
    return dict(generator=generator, discriminator=discriminator, generator_ema=generator_ema, opt_g=opt_g,
                opt_d=opt_d, augment=DiffAugment(config.diffaugment, config.augment_p, config.ada_target,
                                                 ctx.rt.shard))


def gan_step(parts: dict, ctx: StepContext, real: torch.Tensor, y_real: torch.Tensor, y_global: torch.Tensor,
             step: int) -> dict:
    """One discriminator update (with lazy R1 every R1_EVERY steps), then one generator update. Fake labels and
    noise are drawn for the global batch; this process takes its slice."""
    config, model, rt = ctx.config, ctx.family.module, ctx.rt
    generator, discriminator, augment, scaler = (parts[k] for k in ("generator", "discriminator", "augment", "scaler"))
    y_fake = rt.shard.take(model.fake_labels(y_global, ctx.n_classes))

    discriminator.requires_grad_(True)
    with ctx.autocast():
        with torch.no_grad():
            fake = generator(_noise(ctx), y_fake)
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
        fake = generator(_noise(ctx), y_fake)
        g_loss, g_stats = model.generator_loss(generator, discriminator, augment(fake.float()), y_fake)
    _update(g_loss, parts["opt_g"], generator, scaler, rt)
    stats = {key: value.detach() for key, value in {**d_stats, **g_stats}.items()}
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats, "augment_p": augment.p}


def diffusion_parts(ctx: StepContext, info: dict) -> dict:
    generator = ctx.family.generator(info).to(ctx.rt.device)
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    return dict(generator=generator, generator_ema=generator_ema,
                opt_g=ctx.family.module.optimizer(generator, ctx.config.lr_g))


def diffusion_step(parts: dict, ctx: StepContext, real: torch.Tensor, labels: torch.Tensor, y_global: torch.Tensor,
                   step: int) -> dict:
    """One denoising update: noise a batch at random timesteps, predict v, some labels dropped for guidance."""
    network = parts["generator"]
    with ctx.autocast():
        loss = network.loss(real, labels, ctx.config.label_dropout, ctx.rt.shard)
    _update(loss, parts["opt_g"], network, parts["scaler"], ctx.rt)
    return {"loss": loss.detach()}


def _update(loss: torch.Tensor, optimizer, module, scaler, rt: Runtime) -> None:
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward()
    if rt.world > 1:
        average_gradients(module, rt.world)
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
    else:
        optimizer.step()


def _noise(ctx: StepContext) -> torch.Tensor:
    """This process's slice of the latent noise drawn for the whole global batch."""
    config = ctx.config
    return ctx.rt.shard.take(ctx.family.module.latent(config.batch_size, config.latent_dim, ctx.rt.device))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def recalibrate_batch_norm(generator: torch.nn.Module, latent, latent_dim: int, labels: torch.Tensor, seed: int,
                           batches: int = 8, batch: int = 64) -> None:
    """Standing statistics: batch-norm running stats recomputed for the EMA weights (the ones copied from the
    raw generator do not fit the averaged weights and wash its samples out). `latent` is the family's noise
    function. Own RNG, so training is unchanged."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    noise = torch.Generator().manual_seed(seed)
    device = labels.device
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for _ in range(batches):
        y = labels[torch.randint(0, len(labels), (batch,), generator=noise).to(device)]
        generator(latent(batch, latent_dim, device, generator=noise), y)
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()
