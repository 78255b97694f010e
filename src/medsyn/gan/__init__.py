"""The GAN stage: train a class-conditional GAN (acgan: the original design; cgan: data-efficient) on the train
split, with sample grids, JSONL logs and exactly resumable, self-describing checkpoints.

Public API:
    train(dataset, config, out_dir, resume=False, progress=True) -> Path    the final checkpoint
    read_log(out_dir) -> list[dict]                                          log.jsonl rows
    load_generator(checkpoint, device="cpu") -> (generator, info)           EMA generator in eval mode
    generate_images(generator, info, labels, seed) -> uint8 (N, H, W, C)    seeded, deterministic
    image_grid(images, rows) -> uint8 (H', W', C); save_png(image, path)
"""

from medsyn.gan.checkpoint import load_generator
from medsyn.gan.sample import class_grid, generate as generate_images, grid as image_grid, save_png
from medsyn.gan.train import read_log, train

__all__ = ["class_grid", "generate_images", "image_grid", "load_generator", "read_log", "save_png", "train"]
