"""Read a synthetic set back: the one loader every stage uses for `medsyn gan generate` output."""

from __future__ import annotations

from pathlib import Path

from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.fileio import Field, read_json

# What load_synthetic checks in DIR/manifest.json (synth/generate.py writes it): the images the npz must hold.
MANIFEST = {"class_names": Field(list, items=str), "counts": Field(list, items=Field(int, low=0)),
            "total": Field(int, low=0), "npz": Field(str, choices=("synthetic.npz",))}
MANIFEST_FIX = "the set is damaged or was edited: generate it again (`medsyn gan generate`) into a new --out"


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
    manifest = read_json(path / "manifest.json", MANIFEST, MANIFEST_FIX) if (path / "manifest.json").is_file() \
        else None
    synthetic = data.load(npz, config, min_classes=1).subset("train")
    if manifest and (list(synthetic.class_names) != manifest["class_names"] or len(synthetic) != manifest["total"]):
        raise MedsynError(f"{npz}: {len(synthetic)} images of classes {list(synthetic.class_names)}, but its "
                          f"manifest.json records {manifest['total']} of {manifest['class_names']}; {MANIFEST_FIX}.")
    if real is not None and tuple(synthetic.class_names) != tuple(real.class_names):
        raise MedsynError(f"{npz}: classes {list(synthetic.class_names)} differ from the real data's "
                          f"{list(real.class_names)}; use a set generated from a GAN trained on this dataset.")
    return synthetic
