"""The synth stage: labelled synthetic images from a generator checkpoint, as PNG class folders and a MedMNIST-layout npz.
Nothing is chosen here: the run layer (or `gan generate`) decides the sampler settings.

Public API:
    generate(checkpoint, per_class, seed, out_dir, overwrite=False, sampler=None,
             guidance_choice=None) -> Path       out_dir (+ guidance.json: a choice made by medsyn.audit.guidance)
    sample_grid(checkpoint, n_per_class, seed) -> uint8 (H, W, C)             one row per class
    parse_per_class(text, class_names), balance_counts(src, class_names) -> list[int]   CLI helpers
    load_synthetic(path, real=None) -> ImageSet                               a generated set, all in train
    plan_counts(n_classes, n=None, per_class=None, balance_counts=None) -> list[int]
"""

from medsyn.synth.dataset import load_synthetic
from medsyn.synth.generate import balance_counts, generate, parse_per_class, plan_counts, sample_grid

__all__ = ["balance_counts", "generate", "load_synthetic", "parse_per_class", "plan_counts", "sample_grid"]
