"""What makes one quick classifier job faster on a CPU: each variant of the training step timed in one run, as a
ratio to the recipe medsyn uses (1 torch thread, batches cut from a uint8 tensor kept in memory, NCHW float,
augmentation drawn per group of 4 images, validation in batches of 256).

    python benchmarks/classify_speed.py [--steps 40] [--threads 1] [--note TEXT]

Variants: channels-last memory format; torch.compile (timed after its warm-up compilation); batches converted from
numpy per step (the old recipe); augmentation drawn per image and per whole batch; validation inference in
batches of 1024. Writes benchmarks/results/classify_speed_<date>.json (with the machine's reference speed:
benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from medsyn import data
from medsyn.classify import models
from medsyn.classify.batches import AUGMENT_GROUP, augmentation
from medsyn.config import preset
from medsyn.tensors import normalize, to_tensor

from common import add_note_argument, dated, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    add_note_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = preset("quick").classify
    dataset = data.load(None, preset("quick").data)
    train, val = dataset.subset("train"), dataset.subset("val")
    norm = models.normalization(False, dataset.channels)
    kept = torch.from_numpy(train.images).permute(0, 3, 1, 2).contiguous()
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(train), config.batch_size, replace=False) for _ in range(args.steps)]
    augment = augmentation(dataset.size)

    def tensors(idx):
        return normalize(kept[torch.from_numpy(idx)], norm)

    def from_numpy(idx):
        return to_tensor(train.images[idx], norm)

    def grouped(group):
        def make(idx):
            images = kept[torch.from_numpy(idx)]
            images = torch.cat([augment(images[i:i + group]) for i in range(0, len(images), group)])
            return normalize(images, norm)
        return make

    results = {}
    results["medsyn recipe (tensors kept, NCHW)"] = train_steps(batches, tensors, train.labels, config)
    results["channels-last"] = train_steps(batches, tensors, train.labels, config, channels_last=True)
    results["batches from numpy each step"] = train_steps(batches, from_numpy, train.labels, config)
    results["torch.compile (after warm-up)"] = train_steps(batches, tensors, train.labels, config, compile=True)
    results[f"augmentation per {AUGMENT_GROUP} images (medsyn)"] = train_steps(batches, grouped(AUGMENT_GROUP),
                                                                             train.labels, config)
    results["augmentation per image"] = train_steps(batches, grouped(1), train.labels, config)
    results["augmentation per batch"] = train_steps(batches, grouped(config.batch_size), train.labels, config)
    base = results["medsyn recipe (tensors kept, NCHW)"]
    aug_base = results[f"augmentation per {AUGMENT_GROUP} images (medsyn)"]
    print(f"quick classifier (vgg16 width {config.width}, batch {config.batch_size}, {dataset.size} px), "
          f"{args.steps} training steps, {args.threads} thread(s)")
    rows = []
    for name, seconds in results.items():
        ref = aug_base if name.startswith("augmentation") else base
        print(f"{name:<40}{seconds:8.2f} s   {ref / seconds:5.2f}x the recipe's speed")
        rows.append({"variant": name, "seconds": round(seconds, 2), "speed_vs_recipe": round(ref / seconds, 3)})
    inference_s = {}
    for batch in (256, 1024):
        inference_s[batch] = round(inference(val, norm, config, batch), 2)
        print(f"validation inference, batches of {batch:<5}{inference_s[batch]:8.2f} s")
    write_results(dated("classify_speed"), {"steps": args.steps, "threads_per_run": args.threads, "rows": rows,
                                            "validation_inference_s_by_batch": inference_s}, note=args.note)


def _model(config, channels_last=False, compile=False):
    torch.manual_seed(0)
    model = models.build(config.arch, 2, 1, config.width, config.batch_norm, config.dropout)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def train_steps(batches, make, labels, config, channels_last=False, compile=False) -> float:
    model = _model(config, channels_last, compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    y_all = torch.from_numpy(labels.astype(np.int64))

    def step(idx):
        x = make(idx)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y_all[torch.from_numpy(idx)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for idx in batches[:3]:  # warm-up (and, for torch.compile, the compilation)
        step(idx)
    start = time.perf_counter()
    for idx in batches:
        step(idx)
    return time.perf_counter() - start


def inference(val, norm, config, batch) -> float:
    model = _model(config).eval()
    x = to_tensor(val.images, norm)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(3):
            torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return (time.perf_counter() - start) / 3


if __name__ == "__main__":
    main()
