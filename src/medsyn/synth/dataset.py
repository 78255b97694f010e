"""Read a synthetic set back: the one loader every stage uses for `medsyn gan generate` output."""

from __future__ import annotations

from pathlib import Path

from medsyn.data import ImageSet
from medsyn.errors import MedsynError


def load_synthetic(path: Path, real: ImageSet | None = None) -> ImageSet:
    """All images of a generated set (a folder holding synthetic.npz, or the npz itself) as one train split, at the
    real data's size and channels when `real` is given. A set may hold only some classes (a minority top-up)."""
    from medsyn import data
    from medsyn.config import DataConfig

    path = Path(path)
    npz = path / "synthetic.npz" if path.is_dir() else path
    if not npz.is_file():
        raise MedsynError(f"{path}: no synthetic.npz; give the folder that `medsyn gan generate` wrote, or the npz.")
    config = DataConfig(val="given") if real is None else \
        DataConfig(size=real.size, channels=real.channels, aspect=real.aspect, val="given")
    synthetic = data.load(npz, config, min_classes=1).subset("train")
    if real is not None and tuple(synthetic.class_names) != tuple(real.class_names):
        raise MedsynError(f"{npz}: classes {list(synthetic.class_names)} differ from the real data's "
                          f"{list(real.class_names)}; use a set generated from a GAN trained on this dataset.")
    return synthetic
