"""The synth stage: labelled synthetic images from a GAN checkpoint, as PNG class folders and a MedMNIST-layout npz.

Public API:
    generate(checkpoint, per_class, seed, out_dir, overwrite=False, sampler=None,
             choose_guidance_on=None, guidance_scales=()) -> Path            out_dir (+ guidance.json when chosen)
    sample_grid(checkpoint, n_per_class, seed) -> uint8 (H, W, C)             one row per class
    parse_per_class(text, class_names), balance_counts(src, class_names) -> list[int]   CLI helpers
    load_synthetic(path, real=None) -> ImageSet                               a generated set, all in train
    plan_counts(n_classes, n=None, per_class=None, balance_counts=None) -> list[int]
"""

from medsyn.synth.dataset import load_synthetic
from medsyn.synth.generate import balance_counts, generate, parse_per_class, plan_counts, sample_grid

__all__ = ["balance_counts", "generate", "load_synthetic", "parse_per_class", "plan_counts", "sample_grid"]
