"""Write any ImageSet in the MedMNIST npz layout, and fetch official MedMNIST files for users who are online."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn.data.dataset import SPLITS, ImageSet
from medsyn.errors import MedsynError
from medsyn.fileio import atomic_path


def save_npz(dataset: ImageSet, out: Path) -> None:
    """MedMNIST layout (gray images as (N, H, W), labels as (N, 1) uint8) plus a `class_names` key."""
    arrays = {}
    for split in SPLITS:
        part = dataset.subset(split)
        images = part.images[..., 0] if dataset.channels == 1 else part.images
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = part.labels.astype(np.uint8 if dataset.n_classes < 256 else np.int64)[:, None]
    arrays["class_names"] = np.array(dataset.class_names)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def download_medmnist(flag: str, size: int, root: Path) -> Path:
    """Download `<flag>[_<size>].npz` from the official MedMNIST record through the medmnist package."""
    from medmnist import INFO

    flag = flag.lower()
    if flag not in INFO:
        raise MedsynError(f"unknown MedMNIST dataset {flag!r}; choose one of {', '.join(sorted(INFO))}.")
    if size not in (28, 64, 128, 224):
        raise MedsynError(f"MedMNIST comes in sizes 28, 64, 128 and 224, not {size}.")
    if "3d" in flag:
        raise MedsynError(f"{flag} is a 3D dataset; medsyn handles 2D images only.")
    from torchvision.datasets.utils import download_url

    info = INFO[flag]
    suffix = "" if size == 28 else f"_{size}"
    name = f"{flag}{suffix}.npz"
    root.mkdir(parents=True, exist_ok=True)
    url = info["url" if size == 28 else f"url_{size}"]
    md5 = info["MD5" if size == 28 else f"MD5_{size}"]
    try:
        download_url(url, root=str(root), filename=name, md5=md5)
    except Exception as err:  # urllib and requests raise many types; the user needs the cause and the fix
        raise MedsynError(f"could not download {name} from {url} ({type(err).__name__}: {err}); check the network, "
                          f"or download it by hand into {root} and pass that file as the data source.") from err
    return root / name
