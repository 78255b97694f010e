"""The decode cache: arrays keyed by source fingerprint, size, channels and aspect policy.

Location: $MEDSYN_CACHE, else ~/.cache/medsyn. Each entry is a folder holding `images.npz` and `meta.json`;
split assignments are saved beside them, one CSV per split policy.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from medsyn.fileio import atomic_path, write_json

CACHE_VERSION = 2  # 2: entries hold `thumbs`, the leak guard's thumbnails of the source images
ENTRY_ARRAYS = ("images", "thumbs", "labels", "given_split", "groups", "paths")  # one row per image each


def cache_root() -> Path:
    return Path(os.environ.get("MEDSYN_CACHE") or Path.home() / ".cache" / "medsyn")


def entry_dir(source_name: str, key_fields: dict) -> Path:
    key = hashlib.sha256(json.dumps({**key_fields, "v": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()
    return cache_root() / f"{source_name}-{key[:16]}"


def load_entry(folder: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    arrays, meta = folder / "images.npz", folder / "meta.json"
    if not (arrays.is_file() and meta.is_file()):
        return None
    from medsyn.errors import MedsynError
    from medsyn.fileio import Field, open_npz, read_json, read_npz_member

    fix = f"medsyn's decode cache entry {folder} is damaged or was not written by medsyn: remove that folder"
    info = read_json(meta, {"class_names": Field(list, items=str), "skipped": Field(list, items=str),
                            "ignored": Field(int, low=0), "notes": Field(list, items=str)}, fix)
    with open_npz(arrays, str(arrays), fix) as archive:
        data = {k: read_npz_member(archive, k, str(arrays), fix) for k in archive.files}
    lengths = {len(data[k]) if k in data and data[k].ndim else None for k in ENTRY_ARRAYS}
    if len(lengths) != 1 or None in lengths:
        raise MedsynError(f"{arrays}: not the arrays {', '.join(ENTRY_ARRAYS)} of one length; {fix}.")
    return data, info


def save_entry(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "images.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    write_json(folder / "meta.json", meta)
