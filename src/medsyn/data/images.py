"""Decode one image file (PNG, JPEG, BMP, TIFF 8/16-bit, GIF first frame, DICOM) to uint8 and resize it to a square.

Every image medsyn opens (folders, manifests, `predict`, the server) goes through `open_image` / `load_image`: the
format is read from the file's first bytes (never its name) and must be on the allow-list below; Pillow is then
told to use that one decoder only (so no file can reach a plugin that runs a program, such as EPS -> Ghostscript),
and EXIF orientation is applied. DICOM is read by pydicom, its size checked from the header before pixel data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
MAX_PIXELS = 64_000_000  # refuse larger images: a decompression bomb guard (8000 x 8000)
MAX_IMAGE_BYTES = 512 << 20  # refuse larger files before reading (or hashing) them: 64 MP of 16-bit RGBA is 512 MiB
# The allow-list: Pillow format name -> the signatures its files start with. Nothing else is ever decoded.
SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "BMP": (b"BM",),
              "TIFF": (b"II*\x00", b"MM\x00*"), "GIF": (b"GIF87a", b"GIF89a")}
SUPPORTED = "PNG, JPEG, BMP, TIFF, GIF or DICOM"


class BadImage(Exception):
    """One file that cannot be used, with the reason."""


class TooManyPixels(BadImage):
    """An image over the pixel limit (a decompression-bomb guard), refused before decoding."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def sniff(head: bytes) -> str | None:
    """The allowed format a file's first 132 bytes show (PNG, JPEG, BMP, TIFF, GIF, DICOM), or None."""
    for kind, signatures in SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    if head[128:132] == b"DICM":
        return "DICOM"
    return None


def image_format(path: Path) -> str:
    """The file's format from its bytes; BadImage unless it is one medsyn decodes and at most MAX_IMAGE_BYTES (a
    sparse 1 TiB file is refused by its size, never read). A .dcm without the 128-byte preamble is left to
    pydicom, which runs no programs."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(132)
    except OSError as err:
        raise BadImage(f"cannot read ({err.strerror or err})") from err
    if size > MAX_IMAGE_BYTES:
        raise BadImage(f"refused: a file of {size / 2**20:,.0f} MiB, over the limit of {MAX_IMAGE_BYTES >> 20} MiB "
                       "per image (no image medsyn decodes needs more); remove it or save it smaller")
    kind = sniff(head)
    if kind is None and Path(path).suffix.lower() in DICOM_SUFFIXES:
        kind = "DICOM"
    if kind is None:
        raise BadImage(f"not a {SUPPORTED} image: the file starts with {head[:12]!r} (medsyn checks the content, "
                       "not the name, and decodes no other format); convert it or remove it")
    return kind


def is_dicom(path: Path) -> bool:
    return image_format(path) == "DICOM"


def native_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the header alone."""
    try:
        kind = image_format(path)
        if kind == "DICOM":
            ds = dicom_header(path)
            return int(ds.Columns), int(ds.Rows)
        with open_image(path, kind) as im:
            return im.size
    except BadImage:
        raise
    except Exception as err:  # any decoder failure is a property of the file, reported with its name
        raise BadImage(f"cannot read the header ({type(err).__name__}: {err})") from err


def load_image(path: Path) -> np.ndarray:
    """The full-resolution image as uint8, (H, W) for grayscale or (H, W, 3) for colour."""
    try:
        kind = image_format(path)
        array = _load_dicom(path) if kind == "DICOM" else _load_pil(path, kind)
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


def open_image(path: Path, kind: str | None = None) -> Image.Image:
    """The one way medsyn opens a file with Pillow: its sniffed format only (`formats=[kind]`), pixel count checked
    from the header. DICOM is not Pillow's: use `load_image`."""
    kind = kind or image_format(path)
    if kind not in SIGNATURES:
        raise BadImage(f"{kind} is not decoded by Pillow here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=[kind])
        except Image.DecompressionBombError as err:
            raise TooManyPixels(f"refused: too many pixels, a possible decompression bomb ({err})") from err
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise TooManyPixels(f"refused: {width}x{height} pixels is over the limit of {MAX_PIXELS:,} "
                       "(a possible decompression bomb); downscale it first")
    return image


def _load_pil(path: Path, kind: str) -> np.ndarray:
    with open_image(path, kind) as opened:
        opened.seek(0)  # GIF and TIFF: the first frame
        opened.load()
        image = ImageOps.exif_transpose(opened)  # a photo's EXIF orientation: the image as it is meant to be seen
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


MAX_DICOM_BYTES = 256 << 20  # decoded pixel data (frames x rows x columns x samples x bytes), from the header
DEFLATED = "1.2.840.10008.1.2.1.99"


def dicom_header(path: Path):
    """The DICOM header (no pixel data), refused before any pixel is decoded when it declares several frames, too
    many pixels or more than MAX_DICOM_BYTES; a deflated file is refused when it inflates beyond that budget
    (measured streaming, without keeping the output)."""
    import pydicom

    meta = pydicom.filereader.read_file_meta_info(path)
    if str(getattr(meta, "TransferSyntaxUID", "")) == DEFLATED:
        _check_inflated_size(path, meta)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImage(f"multi-frame DICOM ({frames} frames) is not supported; export one frame per file")
    if rows * cols > MAX_PIXELS:
        raise TooManyPixels(f"refused: {cols}x{rows} pixels is over the limit of {MAX_PIXELS:,}")
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    depth = -(-int(getattr(ds, "BitsAllocated", 8) or 8) // 8)
    decoded = frames * rows * cols * samples * depth
    if decoded > MAX_DICOM_BYTES:
        raise TooManyPixels(f"refused: the header declares {decoded / 2**20:,.0f} MiB of pixel data, over the "
                            f"limit of {MAX_DICOM_BYTES >> 20} MiB")
    return ds


def _check_inflated_size(path: Path, meta) -> None:
    import zlib

    length = getattr(meta, "FileMetaInformationGroupLength", None)
    if length is None:
        raise BadImage("a deflated DICOM without a file meta group length cannot be checked; save it uncompressed")
    budget = MAX_DICOM_BYTES + (1 << 20)
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as handle:
        handle.seek(132 + 12 + int(length))
        while block := handle.read(1 << 16):
            while block:
                total += len(inflater.decompress(block, 1 << 20))
                block = inflater.unconsumed_tail
                if total > budget:
                    raise TooManyPixels(f"refused: the deflated DICOM inflates to more than {budget >> 20} MiB "
                                        "(a possible decompression bomb)")
            if inflater.eof:
                break


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    dicom_header(path)  # every limit, before the pixel data is read
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if getattr(ds, "SamplesPerPixel", 1) == 3:
        return _window_to_uint8(pixels.astype(np.float64)) if pixels.dtype != np.uint8 else pixels
    values = apply_modality_lut(pixels, ds)
    values = apply_voi_lut(values, ds)
    values = _window_to_uint8(np.asarray(values, dtype=np.float64))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = 255 - values  # MONOCHROME1 stores bright as low values
    return values


CONVERSIONS = {"uint8": "uint8 values, kept as they are", "bool": "booleans, times 255",
               "unit": "floats in [0, 1], times 255", "byte": "integers in 0..255, kept as they are",
               "range": "values scaled from their own range onto 0..255", "empty": "no values"}


def conversion_rule(values: np.ndarray, where: str) -> str:
    """Which of `CONVERSIONS` `to_uint8` applies to `values`; text, objects and NaN/inf are refused."""
    from medsyn.errors import MedsynError

    if values.dtype == np.uint8:
        return "uint8"
    if values.dtype.kind == "b":
        return "bool"
    if values.dtype.kind not in "iuf":
        raise MedsynError(f"{where} are {values.dtype} values; images must be numbers (uint8 0..255 best).")
    if values.size == 0:
        return "empty"
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise MedsynError(f"{where} contain NaN or infinite values; replace them before loading.")
    low, high = values.min(), values.max()
    if values.dtype.kind == "f" and 0 <= low and high <= 1:
        return "unit"
    if values.dtype.kind in "iu" and 0 <= low and high <= 255:
        return "byte"
    return "range"


def to_uint8(values: np.ndarray, where: str) -> np.ndarray:
    """Image values of any numeric dtype -> uint8, never truncated or wrapped: uint8 as it is, booleans and floats
    in [0, 1] times 255, integers already in 0..255 as they are, anything else (12/16-bit, HU, any float range)
    scaled from its own range, as 16-bit files and DICOM are. Text, objects and NaN/inf are refused."""
    rule = conversion_rule(values, where)
    if rule == "uint8":
        return values
    if rule in ("bool", "empty", "byte"):
        return values.astype(np.uint8) * (255 if rule == "bool" else 1)
    if rule == "unit":
        return np.round(values * 255.0).astype(np.uint8)
    return _window_to_uint8(values.astype(np.float64))


def _window_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale the image's own value range linearly onto 0..255 (16-bit and float images, DICOM)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _is_gray_rgb(array: np.ndarray) -> bool:
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))
