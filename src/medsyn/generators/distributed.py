"""What makes K processes under `torchrun` take the same training step as one process on the whole batch.

Every process draws the whole global batch (data indices, labels, noise, augmentation parameters) from identically
seeded generators and keeps its own slice of it (`BatchShard`). Gradients are averaged over processes, batch norm
uses statistics of the whole global batch (`GlobalBatchNorm2d`; torch's SyncBatchNorm is GPU-only) and dropout
masks are this process's rows of the global batch's mask (`GlobalDropout`), so the update equals the
single-process one up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

from medsyn.config import GanConfig, resolve_device
from medsyn.errors import MedsynError


@dataclass(frozen=True)
class BatchShard:
    """Rows rank*n .. (rank+1)*n of a batch of n*world rows that every process drew identically."""
    rank: int = 0
    world: int = 1

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        n = len(batch) // self.world
        return batch[self.rank * n:(self.rank + 1) * n]

    def rand(self, n: int, *tail: int, device=None, dtype=None) -> torch.Tensor:
        """This process's n rows of uniform noise drawn for all n*world images."""
        return self.take(torch.rand(n * self.world, *tail, device=device, dtype=dtype))

    def randn(self, n: int, *tail: int, device=None, dtype=None) -> torch.Tensor:
        """This process's n rows of normal noise drawn for all n*world images."""
        return self.take(torch.randn(n * self.world, *tail, device=device, dtype=dtype))

    def randint(self, low: int, high: int, n: int, *tail: int, device=None) -> torch.Tensor:
        return self.take(torch.randint(low, high, (n * self.world, *tail), device=device))


WHOLE_BATCH = BatchShard()


@dataclass
class Runtime:
    """This process's device, and its place among the processes torchrun started (rank 0 of 1 without it)."""
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> BatchShard:
        return BatchShard(self.rank, self.world)


def runtime(config: GanConfig) -> Runtime:
    """The device, and under torchrun this process's GPU and the process group."""
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


def mean_over_processes(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of a per-process mean over all processes (equal shards, so the mean over the global batch)."""
    value = value.detach()
    if world == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world


def average_gradients(module: nn.Module, world: int) -> None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch over all processes.

    The statistics are summed with the differentiable all-reduce, whose backward sums the gradients reaching them
    from every process; with gradients then averaged over processes this is the exact gradient of the global
    batch's mean loss. Outside training it is plain batch norm (rank 0 alone samples with the EMA copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        world = dist.get_world_size()
        channel = (slice(None), None, None)
        x32 = x.float()  # statistics in float32 under mixed precision, as torch's batch norm keeps them
        mean = all_reduce(x32.mean(dim=(0, 2, 3))) / world
        var = all_reduce((x32 - mean[channel]).pow(2).mean(dim=(0, 2, 3))) / world  # two passes, as torch's own
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), x.numel() // x.shape[1] * world)
        y = (x32 - mean[channel]) * torch.rsqrt(var + self.eps)[channel]
        return (y * self.weight[channel] + self.bias[channel] if self.affine else y).to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var * count / (count - 1), momentum)  # unbiased, as torch's BatchNorm


class GlobalDropout(nn.Dropout):
    """Dropout whose mask is this process's rows of the mask one process would draw for the global batch.

    The input may stack several local batches of `local_batch` rows (the discriminator scores real and fake images
    in one call); each is a slice of its own global batch, so the mask is drawn in that global layout. On CPU this
    is the mask one process draws; on CUDA torch's fused dropout uses the RNG differently, so there the masks
    match in distribution only."""

    def __init__(self, p: float, shard: BatchShard, local_batch: int):
        super().__init__(p)
        self.shard, self.local_batch = shard, local_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        world, n, rest = self.shard.world, self.local_batch, x.shape[1:]
        # as torch's CPU dropout: a Bernoulli(1 - p) tensor the shape of the (global) input, divided by 1 - p
        noise = torch.empty((len(x) * world, *rest), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        mask = noise.view(len(x) // n, world, n, *rest)[:, self.shard.rank].reshape(x.shape)
        return x * (mask / (1 - self.p))


def globalise(module: nn.Module, shard: BatchShard, local_batch: int) -> None:
    """Replace every BatchNorm2d and Dropout in `module` by its global-batch version, holding the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats, device=child.running_mean.device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        elif type(child) is nn.Dropout:
            setattr(module, name, GlobalDropout(child.p, shard, local_batch))
        else:
            globalise(child, shard, local_batch)
