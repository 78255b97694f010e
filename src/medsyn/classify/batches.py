"""The training batches of one classifier run: which images each step sees, augmented how, with which dropout.

An epoch is `steps` batches of `batch` stream images, drawn from shuffled passes over the stream (real images lead
it, which is how they are counted). Ride-along images join each batch so that, from the first step on,
round(R x real images seen) of them have been seen, R = ride-along images per real image of the arm's draw: the
dose holds at every size and every number of steps per epoch.

Common random numbers across the arms of a replicate: the stream's order, the augmentation of its images and the
dropout masks (the stream's images lead every batch; on CPU a mask's first rows do not depend on the rows after
them, on CUDA they may) depend on `seed` and the step alone: every step draws from generators seeded by (seed,
step, purpose). The ride-along images have their own order and augmentation generators. Batch norm still mixes the
ride-along images into the batch statistics.
"""

from __future__ import annotations

import numpy as np
import torch

from medsyn.classify.arms import TrainingData
from medsyn.tensors import normalize

PURPOSES = ("stream", "ride", "dropout")  # each step's seeds: one generator per purpose keeps the arms in step
AUGMENT_GROUP = 4  # images per augmentation draw: a quarter of the per-image cost, still fresh draws every batch


class Batches:
    """`epoch()` yields the (images, labels) batches of one epoch; `seen(epochs)` counts what they held."""

    def __init__(self, data: TrainingData, batch: int, steps: int, seed: int, transform, norm: dict):
        self.data, self.batch, self.steps, self.transform, self.norm, self.seed = \
            data, batch, steps, transform, norm, seed
        self.stream = index_stream(len(data.stream_labels), np.random.default_rng(seed))
        self.ride = index_stream(len(data.ride_labels), np.random.default_rng([seed, 1]))
        self.dose = len(data.ride_labels) / data.n_real if data.n_real else 0.0
        self.images = torch.from_numpy(np.concatenate([data.stream_images, data.ride_images])).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.concatenate([data.stream_labels, data.ride_labels]).astype(np.int64))
        self.offset = len(data.stream_labels)
        self.step = 0
        self.real_seen = self.ride_seen = 0
        self.counts: list[tuple[int, int]] = []   # (real, extra) images seen per epoch

    def epoch(self):
        """`steps` batches (images, labels); torch's global generator is seeded for the step's dropout."""
        real, extra = 0, 0
        for _ in range(self.steps):
            drawn = np.fromiter((next(self.stream) for _ in range(self.batch)), np.int64, self.batch)
            n_real = int((drawn < self.data.n_real).sum())
            k = round(self.dose * (self.real_seen + n_real)) - self.ride_seen
            ride = np.fromiter((self.offset + next(self.ride) for _ in range(k)), np.int64, k)
            self.real_seen, self.ride_seen = self.real_seen + n_real, self.ride_seen + k
            real, extra = real + n_real, extra + self.batch - n_real + k
            images = torch.cat([self._tensor(drawn, "stream"), self._tensor(ride, "ride")])
            torch.manual_seed(self._step_seed("dropout"))
            self.step += 1
            yield images, self.labels[torch.from_numpy(np.concatenate([drawn, ride]))]
        self.counts.append((real, extra))

    def _step_seed(self, purpose: str) -> int:
        return int(np.random.default_rng([self.seed, self.step, PURPOSES.index(purpose)]).integers(2 ** 62))

    def _tensor(self, idx: np.ndarray, part: str) -> torch.Tensor:
        images = self.images[torch.from_numpy(idx)]
        if self.transform is not None and len(images):
            torch.manual_seed(self._step_seed(part))
            images = torch.cat([self.transform(images[i:i + AUGMENT_GROUP])
                                for i in range(0, len(images), AUGMENT_GROUP)])
        return normalize(images, self.norm)

    def seen(self, epochs: int) -> dict:
        """Real and extra (synthetic or held-out) images seen up to the end of `epochs` (the selected model), and
        their ratio: the dose the arm achieved."""
        real = sum(r for r, _ in self.counts[:epochs])
        extra = sum(s for _, s in self.counts[:epochs])
        return {"real_passes": round(real / self.data.n_real, 4) if self.data.n_real else 0.0,
                "real_seen": int(real), "synthetic_seen": int(extra),
                "dose": round(extra / real, 4) if real else None}


def steps_per_epoch(n: int, batch: int, minimum: int = 1) -> int:
    """Batches per epoch: one pass over n images, but at least `minimum` (a few dozen images make one batch, too
    little between two validation checks)."""
    return max(minimum, round(n / min(batch, n)))


def index_stream(n: int, rng: np.random.Generator):
    """Endless shuffled passes over range(n): every image is used before any is repeated."""
    while True:
        yield from rng.permutation(n)


def augmentation(size: int):
    """Traditional augmentation for chest X-rays: small rotations and shifts, mild zoom via random resized crops,
    brightness/contrast. No flips: a flipped chest puts the heart on the wrong side."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.95, 1.05)),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
    ])
