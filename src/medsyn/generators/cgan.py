"""cgan: a data-efficient class-conditional GAN for small medical datasets.

Generator: BigGAN-style residual up-blocks with class-conditional batch norm (the class picks each block's gain
and bias), tanh output in [-1, 1]. Discriminator: residual down-blocks, spectral norm on every layer, projection
conditioning (score = linear(h) + <embed(y), h>), optionally an auxiliary class head on the same features
(GanConfig.aux_weight) and a minibatch standard deviation layer before one last convolution (GanConfig.mbstd_group).
Hinge loss, Adam(0, 0.99); the training loop adds DiffAugment on real and fake images, an EMA copy of the generator
and optional lazy R1. Works for any channel and class count; `base_width` sets the cost: 12 at 28 px (quick, with
the minibatch std layer) is 0.26 M + 0.06 M parameters for a CPU; 64 at 128 px (full) is 13 M + 15 M parameters for
a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMALIZATION = "tanh"     # pixels scaled to [-1, 1]
LATENT = "normal"
MAX_MULTIPLIER = 8         # the widest layer is 8 x base_width


def pyramid(size: int) -> tuple[int, int]:
    """(start resolution, number of 2x steps): 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4), 224 -> (7, 5)."""
    start, steps = size, 0
    while start % 2 == 0 and start // 2 >= 4:
        start, steps = start // 2, steps + 1
    return start, steps


class ConditionalBatchNorm(nn.Module):
    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(n_classes, channels)
        self.bias = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int):
        super().__init__()
        self.norm1, self.conv1 = ConditionalBatchNorm(c_in, n_classes), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = ConditionalBatchNorm(c_out, n_classes), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2.0)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class Generator(nn.Module):
    def __init__(self, size: int, channels: int, n_classes: int, latent_dim: int = 100, width: int = 16):
        super().__init__()
        self.start, steps = pyramid(size)
        widths = [width * min(2 ** (steps - i), MAX_MULTIPLIER) for i in range(steps + 1)]
        self.project = nn.Linear(latent_dim, self.start * self.start * widths[0])
        self.blocks = nn.ModuleList(UpBlock(a, b, n_classes) for a, b in zip(widths, widths[1:]))
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(len(z), -1, self.start, self.start)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


class Discriminator(nn.Module):
    """Projection discriminator; with aux_weight > 0 also an auxiliary class head on the same pooled features
    (ACGAN-style), whose cross-entropy the losses add with that weight; with mbstd_group > 0 a minibatch standard
    deviation layer. Each exists only when used, so a discriminator without them has the parameters (and the initial
    random draws) it always had."""

    def __init__(self, size: int, channels: int, n_classes: int, width: int = 16, aux_weight: float = 0.0,
                 mbstd_group: int = 0):
        super().__init__()
        _, steps = pyramid(size)
        widths = [width * min(2 ** i, MAX_MULTIPLIER) for i in range(steps + 1)]
        self.stem = spectral_norm(nn.Conv2d(channels, widths[0], 3, padding=1))
        self.blocks = nn.Sequential(*(DownBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, widths[-1]))
        self.aux_weight = aux_weight
        self.classify = spectral_norm(nn.Linear(widths[-1], n_classes)) if aux_weight > 0 else None
        self.mbstd_group = mbstd_group
        self.mbstd_conv = spectral_norm(nn.Conv2d(widths[-1] + 1, widths[-1], 3, padding=1)) if mbstd_group else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        if self.mbstd_conv is not None:
            h = self.mbstd_conv(F.leaky_relu(torch.cat([h, minibatch_std(h, self.mbstd_group)], dim=1), 0.2))
        return F.leaky_relu(h, 0.2).sum(dim=(2, 3))

    def score(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x), y)


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """A feature map of one channel: per group of `group` consecutive images (fewer where the batch does not
    divide), the standard deviation of each feature over the group, averaged over features. D then sees how varied
    a group is, so G cannot win with one good image per class (StyleGAN's minibatch standard deviation layer).
    Groups are consecutive, so the real and the fake halves of a discriminator batch never share one."""
    n, c, height, width = h.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    std = h.float().view(n // g, g, c, height, width).var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    return std.repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, height, width).to(h.dtype)


def networks(size: int, channels: int, n_classes: int, latent_dim: int, width: int,
             aux_weight: float = 0.0, mbstd_group: int = 0) -> tuple[nn.Module, nn.Module]:
    return (Generator(size, channels, n_classes, latent_dim, width),
            Discriminator(size, channels, n_classes, width, aux_weight, mbstd_group))


def optimizers(generator: nn.Module, discriminator: nn.Module, lr_g: float, lr_d: float):
    return (torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.0, 0.99)),
            torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.0, 0.99)))


def latent(n: int, dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator).to(device) if generator else torch.randn(n, dim, device=device)


def fake_labels(real_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Fakes get the real batch's labels, so D cannot tell them apart by class frequency on imbalanced data."""
    return real_labels


def aux_loss(discriminator, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the discriminator's class head on its pooled features h for labels y."""
    return F.cross_entropy(discriminator.classify(h).float(), y)


def discriminator_loss(discriminator, real, fake, y_real, y_fake) -> tuple[torch.Tensor, dict]:
    """Hinge loss, plus (with a class head) aux_weight x its cross-entropy on the real images' labels: the head
    learns the classes from real images only, so it never learns to accept a fake's wrong class."""
    h = discriminator.features(torch.cat([real, fake]))
    scores = discriminator.score(h, torch.cat([y_real, y_fake])).float()
    real_scores, fake_scores = scores[:len(real)], scores[len(real):]
    loss = F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    stats = {"d_real": real_scores.mean(), "d_fake": fake_scores.mean(), "real_sign": real_scores.sign().mean()}
    if discriminator.classify is not None:
        stats["d_aux"] = aux_loss(discriminator, h[:len(real)], y_real)
        loss = loss + discriminator.aux_weight * stats["d_aux"]
    return loss, stats


def generator_loss(generator, discriminator, fake, y) -> tuple[torch.Tensor, dict]:
    """-D(fake), plus (with a class head) aux_weight x the head's cross-entropy on the intended labels: a direct
    push towards images of the asked-for class, which the projection term alone gives weakly."""
    h = discriminator.features(fake)
    loss = -discriminator.score(h, y).float().mean()
    if discriminator.classify is None:
        return loss, {}
    aux = aux_loss(discriminator, h, y)
    return loss + discriminator.aux_weight * aux, {"g_aux": aux}


def real_scores(discriminator, real, y) -> torch.Tensor:
    return discriminator(real, y).float()
