"""The data stage: any source (MedMNIST npz, image folders, DICOM, CSV manifest) -> a cached, split ImageSet.

Public API:
    load(src=None, config=DataConfig()) -> ImageSet     (src None: the bundled PneumoniaMNIST)
    summarize(dataset) -> dict, format_summary(...)     what `medsyn data info` prints
    save_npz(dataset, path)                             MedMNIST layout, readable by `load`
"""

from medsyn.data.dataset import SPLITS, ImageSet, top_up_to_majority
from medsyn.data.export import download_medmnist, save_npz
from medsyn.data.info import duplicate_groups, format_summary, summarize, warnings
from medsyn.data.loader import bundled_path, cache_entry, load, resolve

__all__ = ["SPLITS", "ImageSet", "top_up_to_majority", "bundled_path", "cache_entry", "download_medmnist", "duplicate_groups",
           "format_summary", "load", "resolve", "save_npz", "summarize", "warnings"]
