"""ddpm: a class-conditional diffusion model with classifier-free guidance, built from diffusers' parts.

The network is diffusers' `UNet2DModel` with a class embedding of n_classes + 1 entries: the last is the null
class, given to `label_dropout` of the training images so that one network learns both the conditional and the
unconditional prediction (classifier-free guidance, Ho & Salimans 2022). Training is the DDPM loss with
v-prediction on `DDPMScheduler`'s cosine schedule; sampling runs `DPMSolverMultistepScheduler` for `sampling_steps`
steps (a deterministic ODE solver, so the same initial noise gives the same image) with the guided prediction
v = v(y) + guidance * (v(y) - v(null)); guidance 0 is the plain conditional model.

As a medsyn generator it takes the initial noise as its latent (channels x size x size numbers), so seeded
sampling, sample grids, checkpoints and `gan generate` work as for the GANs. The training loop (trainer.py) keeps
an EMA copy of the whole module, the one that samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medsyn.config import GanConfig
from medsyn.errors import MedsynError
from medsyn.generators.distributed import WHOLE_BATCH, BatchShard

NORMALIZATION = "tanh"     # pixels scaled to [-1, 1], the range the noise schedule assumes
LATENT = "image-noise"     # the latent is the initial noise image, flattened
# Cosine noise schedule (better than linear for small images) with v-prediction (Salimans & Ho 2022): at high noise
# the target is mostly -x0, so the class embedding, the only clue there, is learnt early; with noise prediction a
# briefly trained model ignored its labels (the image mean is readable from x_t up to ~90% of the way).
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")


def require_diffusers() -> None:
    """diffusers is an optional extra: a clear error instead of an ImportError deep in training or sampling."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise MedsynError("the ddpm model needs the diffusers package: pip install 'medsyn[diffusion]'.") from None


def check_settings(config: GanConfig) -> None:
    """MedsynError for ddpm settings it cannot train or sample with (the shared ones are checked by the loop)."""
    require_diffusers()
    if config.sampling_steps < 1:
        raise MedsynError(f"sampling_steps must be at least 1, not {config.sampling_steps}.")
    if not 0 <= config.label_dropout < 1:
        raise MedsynError(f"label_dropout must be in [0, 1), not {config.label_dropout}.")
    if config.guidance < 0:
        raise MedsynError(f"guidance must be at least 0 (0 = plain conditional sampling), not {config.guidance}.")
    if config.guidance > 0 and config.label_dropout == 0:
        raise MedsynError("guidance > 0 needs label_dropout > 0: without dropped labels the model never learns the "
                          "unconditional noise that guidance pushes away from.")


def unet(size: int, channels: int, n_classes: int, width: int) -> nn.Module:
    """Three resolution levels up to 32 px (28 -> 14 -> 7), four above; attention only at the lowest one."""
    from diffusers import UNet2DModel

    widths = tuple(width * m for m in ((1, 2, 2) if size <= 32 else (1, 2, 4, 4)))
    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=widths,
        layers_per_block=2, down_block_types=("DownBlock2D",) * (len(widths) - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (len(widths) - 1),
        norm_num_groups=math.gcd(width, 32), attention_head_dim=8, num_class_embeds=n_classes + 1)


class Generator(nn.Module):
    def __init__(self, size: int, channels: int, n_classes: int, latent_dim: int, width: int,
                 guidance: float = 0.0, sampling_steps: int = 25):
        super().__init__()
        require_diffusers()
        from diffusers import DDPMScheduler

        if latent_dim != channels * size * size:
            raise ValueError(f"a ddpm latent is the {channels}x{size}x{size} noise image, not {latent_dim} numbers")
        self.unet = unet(size, channels, n_classes, width)
        self.shape, self.null_class = (channels, size, size), n_classes
        self.guidance, self.sampling_steps = guidance, sampling_steps
        self.noise_schedule = DDPMScheduler(**SCHEDULE)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, label_dropout: float,
             shard: BatchShard = WHOLE_BATCH) -> torch.Tensor:
        """v-prediction MSE at uniformly drawn timesteps, the label replaced by the null class at random. Noise,
        timesteps and dropped labels are drawn for the global batch (every process alike) and `shard` takes this
        process's rows, so that under torchrun no two processes share them."""
        n = len(images)
        noise = shard.randn(n, *images.shape[1:], device=images.device, dtype=images.dtype)
        t = shard.randint(0, SCHEDULE["num_train_timesteps"], n, device=images.device)
        dropped = shard.rand(n, device=labels.device) < label_dropout
        labels = torch.where(dropped, torch.full_like(labels, self.null_class), labels)
        noisy = self.noise_schedule.add_noise(images, noise, t)
        target = self.noise_schedule.get_velocity(images, noise, t)
        return F.mse_loss(self.unet(noisy, t, class_labels=labels).sample.float(), target.float())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] for labels y from the initial noise z (N, channels * size * size)."""
        from diffusers import DPMSolverMultistepScheduler

        solver = DPMSolverMultistepScheduler(**SCHEDULE)  # fresh per call: the multistep solver keeps a history
        solver.set_timesteps(self.sampling_steps, device=z.device)
        x = z.view(len(z), *self.shape)
        for t in solver.timesteps:
            x = solver.step(self.guided_velocity(x, t, y), t, x).prev_sample
        return x.clamp(-1, 1)

    def guided_velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.guidance == 0:
            return self.unet(x, t, class_labels=y).sample
        null = torch.full_like(y, self.null_class)
        conditional, unconditional = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample.chunk(2)
        return conditional + self.guidance * (conditional - unconditional)


def latent(n: int, dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator).to(device) if generator else torch.randn(n, dim, device=device)


def optimizer(generator: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(generator.parameters(), lr=lr, weight_decay=0.0)
