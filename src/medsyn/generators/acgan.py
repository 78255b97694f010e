"""acgan: the original design (the Keras ACGAN this project started from), in PyTorch, scaled to the chosen
resolution.

Faithful parts: latent of 100 drawn uniform in [-1, 1] concatenated with the one-hot label; Dense(1024) ->
Dense(start*start*8w) with L2(0.001); four blocks of 8w, 4w, 2w, w filters, each LayerNorm (over channels, as
Keras' LayerNormalization(axis=-1)) -> ReLU -> ConvTranspose(kernel 5, 'same'); a ConvTranspose(kernel 5) to the
image channels and a sigmoid (pixels in [0, 1]). Discriminator: Conv(kernel 5, 'same', L2(0.001)) + LeakyReLU(0.2)
with w, 2w, 4w, 8w filters and strides 2, 2, 2, 1; flatten; a linear real/fake score trained with MSE (least
squares GAN) and a class head Dense(256, L2(0.001)) -> Dropout(0.3) -> Dense(n_classes) -> softmax trained with
binary cross-entropy on the one-hot label. RMSprop (rho 0.9, eps 1e-7 as Keras), D lr 1e-4 / weight decay 6e-9,
G lr 5e-5 / weight decay 3e-9. Fakes get uniformly random labels; the generator step reuses them on fresh noise.
w = base_width = 32 reproduces the original (208 M + 53 M parameters at 224 px).

Where scaling forced a change:
- Resolution: the original projects to 28x28 (= 224 / 8) and upsamples three times. Here the projection is
  size / 8 (32 -> 4, 64 -> 8, 128 -> 16, 224 -> 28, as the original). 28 px is not divisible by 8, so at 28 px it
  projects to 7x7 and only the first two blocks (8w, 4w) have stride 2; the 2w block runs at stride 1 like w.
- Width: `base_width` scales every filter count (the original is 32); the smoke and quick presets use 4 so that the
  dense projection (the bulk of the parameters) and the 5x5 transposed convolutions fit a CPU; full uses 32.
- Channels and classes: any channel count (the original forced RGB) and any number of classes (the original
  had two); the class head has n_classes outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMALIZATION = "sigmoid"  # pixels scaled to [0, 1]
LATENT = "uniform"
L2 = 1e-3                  # Keras kernel_regularizer=L2(0.001): adds 0.001 * sum(w^2) to the loss


def upsampling_steps(size: int) -> int:
    return 3 if size % 8 == 0 else 2


class ChannelLayerNorm(nn.LayerNorm):
    """Keras LayerNormalization on NHWC: normalise each pixel over its channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def transposed_conv(c_in: int, c_out: int, stride: int) -> nn.ConvTranspose2d:
    """Conv2DTranspose(kernel 5, padding 'same'): output = input * stride."""
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=stride, padding=2, output_padding=stride - 1)


class Generator(nn.Module):
    def __init__(self, size: int, channels: int, n_classes: int, latent_dim: int = 100, width: int = 32):
        super().__init__()
        steps = upsampling_steps(size)
        self.start, self.n_classes = size // 2 ** steps, n_classes
        filters = [8 * width, 4 * width, 2 * width, width]
        self.dense = nn.Linear(latent_dim + n_classes, 1024)
        self.project = nn.Linear(1024, self.start * self.start * filters[0])
        blocks, c_in = [], filters[0]
        for i, c_out in enumerate(filters):
            blocks += [ChannelLayerNorm(c_in), nn.ReLU(), transposed_conv(c_in, c_out, 2 if i < steps else 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks, transposed_conv(c_in, channels, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(self.dense(torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], 1)))
        return self.blocks(h.view(len(z), -1, self.start, self.start))

    def l2_penalty(self) -> torch.Tensor:
        return L2 * self.project.weight.pow(2).sum()


class Discriminator(nn.Module):
    def __init__(self, size: int, channels: int, n_classes: int, width: int = 32):
        super().__init__()
        layers, c_in, side = [], channels, size
        for c_out, stride in zip((width, 2 * width, 4 * width, 8 * width), (2, 2, 2, 1)):
            layers += [nn.Conv2d(c_in, c_out, 5, stride=stride, padding=2), nn.LeakyReLU(0.2)]
            c_in, side = c_out, -(-side // stride)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.real_fake = nn.Linear(c_in * side * side, 1)
        self.class_hidden = nn.Linear(c_in * side * side, 256)
        self.class_out = nn.Sequential(nn.Dropout(0.3), nn.Linear(256, n_classes))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.real_fake(h).squeeze(1), self.class_out(self.class_hidden(h))

    def l2_penalty(self) -> torch.Tensor:
        convs = [m.weight for m in self.features if isinstance(m, nn.Conv2d)]
        return L2 * sum(w.pow(2).sum() for w in convs + [self.class_hidden.weight])


def networks(size: int, channels: int, n_classes: int, latent_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    return Generator(size, channels, n_classes, latent_dim, width), Discriminator(size, channels, n_classes, width)


def optimizers(generator: nn.Module, discriminator: nn.Module, lr_g: float, lr_d: float):
    rmsprop = dict(alpha=0.9, eps=1e-7)
    return (torch.optim.RMSprop(generator.parameters(), lr=lr_g, weight_decay=3e-9, **rmsprop),
            torch.optim.RMSprop(discriminator.parameters(), lr=lr_d, weight_decay=6e-9, **rmsprop))


def latent(n: int, dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    if generator:
        return (torch.rand(n, dim, generator=generator) * 2 - 1).to(device)
    return torch.rand(n, dim, device=device) * 2 - 1


def fake_labels(real_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.randint(0, n_classes, real_labels.shape, device=real_labels.device)


def _class_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Keras binary_crossentropy on a softmax output and a one-hot target (probabilities clipped to 1e-7)."""
    p = logits.float().softmax(1).clamp(1e-7, 1 - 1e-7)
    target = F.one_hot(y, p.shape[1]).float()
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


def discriminator_loss(discriminator, real, fake, y_real, y_fake) -> tuple[torch.Tensor, dict]:
    scores, logits = discriminator(torch.cat([real, fake]))
    scores = scores.float()
    tags = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(scores.device)
    adversarial, classes = F.mse_loss(scores, tags), _class_loss(logits, torch.cat([y_real, y_fake]))
    loss = adversarial + classes + discriminator.l2_penalty()
    real_scores = scores[:len(real)]
    return loss, {"d_real": real_scores.mean(), "d_fake": scores[len(real):].mean(), "d_class": classes,
                  "real_sign": (real_scores - 0.5).sign().mean()}


def generator_loss(generator, discriminator, fake, y) -> tuple[torch.Tensor, dict]:
    scores, logits = discriminator(fake)
    classes = _class_loss(logits, y)
    adversarial = F.mse_loss(scores.float(), torch.ones_like(scores, dtype=torch.float32))
    return adversarial + classes + generator.l2_penalty(), {"g_class": classes}


def real_scores(discriminator, real, y) -> torch.Tensor:
    return discriminator(real)[0].float()
