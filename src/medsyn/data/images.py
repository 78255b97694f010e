"""Decode one image file (PNG, JPEG, BMP, TIFF 8/16-bit, DICOM) to uint8 and resize it to a square."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
MAX_PIXELS = 64_000_000  # refuse larger images: a decompression bomb guard (8000 x 8000)


class BadImage(Exception):
    """One file that cannot be used, with the reason."""


class TooManyPixels(BadImage):
    """An image over the pixel limit (a decompression-bomb guard), refused before decoding."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def native_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the header alone."""
    try:
        if is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        with _open_pil(path) as im:
            return im.size
    except BadImage:
        raise
    except Exception as err:  # any decoder failure is a property of the file, reported with its name
        raise BadImage(f"cannot read the header ({type(err).__name__}: {err})") from err


def load_image(path: Path) -> np.ndarray:
    """The full-resolution image as uint8, (H, W) for grayscale or (H, W, 3) for colour."""
    try:
        array = _load_dicom(path) if is_dicom(path) else _load_pil(path)
    except BadImage:
        raise
    except Exception as err:
        raise BadImage(f"cannot decode ({type(err).__name__}: {err})") from err
    if array.ndim == 3 and _is_gray_rgb(array):
        array = array[..., 0]
    return np.ascontiguousarray(array)


def resize_square(array: np.ndarray, size: int, aspect: str) -> np.ndarray:
    """Resize to size x size. aspect: center-crop (keep the centre square), pad (black borders), stretch."""
    image = Image.fromarray(array)
    if image.size == (size, size):
        return array
    resample = Image.Resampling.BICUBIC
    if aspect == "center-crop":
        image = ImageOps.fit(image, (size, size), method=resample)
    elif aspect == "pad":
        image = ImageOps.pad(image, (size, size), method=resample, color=0)
    elif aspect == "stretch":
        image = image.resize((size, size), resample)
    else:
        raise ValueError(f"unknown aspect policy {aspect!r}")
    return np.asarray(image)


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W, channels)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=2)
    return np.asarray(Image.fromarray(array).convert("L"))[..., None]


def _open_pil(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as err:
            raise TooManyPixels(f"refused: too many pixels, a possible decompression bomb ({err})") from err
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise TooManyPixels(f"refused: {width}x{height} pixels is over the limit of {MAX_PIXELS:,} "
                       "(a possible decompression bomb); downscale it first")
    return image


def _load_pil(path: Path) -> np.ndarray:
    with _open_pil(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return _window_to_uint8(np.asarray(image, dtype=np.float64))
        if image.mode in ("1", "L", "LA", "I;8"):
            return np.asarray(image.convert("L"))
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            # Transparent pixels become black, as in a radiograph's background.
            background = Image.new("RGB", image.size)
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
            return np.asarray(background)
        return np.asarray(image.convert("RGB"))


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows * cols > MAX_PIXELS:
        raise TooManyPixels(f"refused: {cols}x{rows} pixels is over the limit of {MAX_PIXELS:,}")
    pixels = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise BadImage("multi-frame DICOM is not supported; export one frame per file")
    if getattr(ds, "SamplesPerPixel", 1) == 3:
        return _window_to_uint8(pixels.astype(np.float64)) if pixels.dtype != np.uint8 else pixels
    values = apply_modality_lut(pixels, ds)
    values = apply_voi_lut(values, ds)
    values = _window_to_uint8(np.asarray(values, dtype=np.float64))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = 255 - values  # MONOCHROME1 stores bright as low values
    return values


def to_uint8(values: np.ndarray, where: str) -> np.ndarray:
    """Image values of any numeric dtype -> uint8, never truncated or wrapped: uint8 as it is, booleans and floats
    in [0, 1] times 255, integers already in 0..255 as they are, anything else (12/16-bit, HU, any float range)
    scaled from its own range, as 16-bit files and DICOM are. Text, objects and NaN/inf are refused."""
    from medsyn.errors import MedsynError

    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "b":
        return values.astype(np.uint8) * 255
    if values.dtype.kind not in "iuf":
        raise MedsynError(f"{where} are {values.dtype} values; images must be numbers (uint8 0..255 best).")
    if values.size == 0:
        return values.astype(np.uint8)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise MedsynError(f"{where} contain NaN or infinite values; replace them before loading.")
    low, high = values.min(), values.max()
    if values.dtype.kind == "f" and 0 <= low and high <= 1:
        return np.round(values * 255.0).astype(np.uint8)
    if values.dtype.kind in "iu" and 0 <= low and high <= 255:
        return values.astype(np.uint8)
    return _window_to_uint8(values.astype(np.float64))


def _window_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale the image's own value range linearly onto 0..255 (16-bit and float images, DICOM)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _is_gray_rgb(array: np.ndarray) -> bool:
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))
