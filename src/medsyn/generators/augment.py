"""DiffAugment (Zhao et al., 2020): differentiable colour, translation and cutout, applied to real and fake
images alike before the discriminator, so a small dataset does not let it memorise the training images.

Under torchrun every process draws the parameters for the whole global batch and applies its own slice, so
K processes augment exactly as one process would. Each operation is applied to each image with probability `p` (1 = the original DiffAugment). With a target,
`p` adapts as in ADA (Karras et al., 2020): every few steps it moves up when the discriminator is
over-confident on real images (E[sign D(real)] above the target) and down otherwise. `p` and the running
statistic are part of the checkpoint, so a resumed run keeps its augmentation strength.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medsyn.generators.distributed import WHOLE_BATCH, BatchShard

ADJUST_EVERY = 4          # steps between adjustments of p
ADJUST_IMAGES = 20_000    # images over which p can move from 0 to 1


def brightness(x: torch.Tensor, shard: BatchShard = WHOLE_BATCH) -> torch.Tensor:
    return x + (shard.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def saturation(x: torch.Tensor, shard: BatchShard = WHOLE_BATCH) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (shard.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def contrast(x: torch.Tensor, shard: BatchShard = WHOLE_BATCH) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (shard.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, shard: BatchShard = WHOLE_BATCH, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to `ratio` of the side, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = shard.randint(-sh, sh + 1, n, 1, 1, device=x.device)
    dx = shard.randint(-sw, sw + 1, n, 1, 1, device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + dy + 1, 0, h + 1)
    gx = torch.clamp(gx + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[b, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, shard: BatchShard = WHOLE_BATCH, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of `ratio` of the side."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = shard.randint(0, h + (1 - ch % 2), n, 1, 1, device=x.device)
    ox = shard.randint(0, w + (1 - cw % 2), n, 1, 1, device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


class DiffAugment:
    def __init__(self, policy: str, p: float = 1.0, target: float = 0.0, shard: BatchShard = WHOLE_BATCH):
        self.ops = [op for name in parse_policy(policy) for op in POLICIES[name]]
        self.p, self.target, self.shard = p, target, shard
        self.sign_sum, self.sign_count = 0.0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ops or self.p <= 0:
            return x
        for op in self.ops:
            if self.p >= 1:
                x = op(x, self.shard)
            else:
                keep = (self.shard.rand(len(x), 1, 1, 1, device=x.device) >= self.p).to(x.dtype)
                x = keep * x + (1 - keep) * op(x, self.shard)
        return x

    def update(self, real_sign: float, batch_images: int, step: int) -> None:
        """ADA: accumulate E[sign D(real)] and move p towards keeping it at the target."""
        if self.target <= 0 or not self.ops:
            return
        self.sign_sum, self.sign_count = self.sign_sum + real_sign, self.sign_count + 1
        if step % ADJUST_EVERY == 0:
            direction = 1.0 if self.sign_sum / self.sign_count > self.target else -1.0
            self.p = min(max(self.p + direction * batch_images * self.sign_count / ADJUST_IMAGES, 0.0), 1.0)
            self.sign_sum, self.sign_count = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum, self.sign_count = state["p"], state["sign_sum"], state["sign_count"]


def parse_policy(policy: str) -> list[str]:
    from medsyn.errors import MedsynError

    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise MedsynError(f"unknown DiffAugment policy {', '.join(unknown)}; choose from {', '.join(POLICIES)} "
                          "(comma separated), or an empty string for none.")
    return names
