"""The generator families medsyn trains, in one table (as medmnist's INFO lists its datasets).

A family is its module (networks, latent noise, losses, NORMALIZATION, LATENT), the builder of the parts its
training step updates, that step, and its settings checks beyond the shared ones. The training loop, the
checkpoints, sampling and the settings check look a family up here by its name. config.GAN_MODELS lists the same
names for the command line and the presets (config sits below this package; tests/test_generators.py keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from torch import nn

from medsyn.config import GanConfig
from medsyn.generators import acgan, cgan, ddpm, steps


def shared_checks_only(config: GanConfig) -> None:
    """A family whose settings are all shared ones (checked by the loop's check_config)."""


@dataclass(frozen=True)
class Family:
    module: ModuleType
    build_parts: Callable[..., dict]  # (StepContext, info) -> the networks, the generator's EMA copy, the optimisers
    train_step: Callable[..., dict]   # (parts, StepContext, real, labels, global labels, step) -> losses to log
    check: Callable[[GanConfig], None] = shared_checks_only  # MedsynError for settings this family cannot use

    def generator(self, info: dict) -> nn.Module:
        """The generator a checkpoint's info describes; a diffusion model's sampler settings (guidance, steps) go
        with it."""
        return self.module.Generator(info["size"], info["channels"], len(info["class_names"]), info["latent_dim"],
                                     info["base_width"], **info.get("sampler", {}))


FAMILIES = {
    "cgan": Family(cgan, steps.gan_parts, steps.gan_step),
    "acgan": Family(acgan, steps.gan_parts, steps.gan_step),
    "ddpm": Family(ddpm, steps.diffusion_parts, steps.diffusion_step, ddpm.check_settings),
}
