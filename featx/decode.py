"""decode: image file -> RGB uint8 array at the model's input size.

The one place preprocessing of pixels lives (extract, predict, neighbors and the baseline all call
it): EXIF orientation, conversion of every mode to RGB, a decompression-bomb guard, and the resize
policy. It is a pure function of (file bytes, settings).

Every image featx opens, in every pass (size hints, content hashes, decoding, predict, neighbour
queries, the transformer, the baseline, thumbnails), goes through :func:`read_file` (regular files
only: a FIFO, a socket or a folder named ``x.jpg`` is refused without blocking) and
:func:`open_image` (the pixel limit, PIL's own bomb error, every PIL failure as a
:class:`DecodeError` with the reason recorded in the skip list).
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

RESIZE_POLICIES = ("squash", "crop")
RESAMPLE = Image.Resampling.BILINEAR
DEFAULT_MAX_PIXELS = 64_000_000


class DecodeError(Exception):
    """The file is not a readable image; the message is the reason recorded in the skip list."""


@dataclass(frozen=True)
class DecodeSettings:
    """How a file becomes pixels. Stored with the features so a new image is decoded identically."""

    size: int = 224
    resize: str = "squash"  # "squash": stretch to size x size; "crop": shorter side, centre crop
    resample: str = "bilinear"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def read_file(path: str | os.PathLike) -> bytes:
    """A file's bytes; DecodeError (with the reason) for anything but a readable regular file.

    The type is checked first, so a FIFO or a device named like an image never blocks a pass."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise DecodeError("a folder, not an image file")
        if not stat.S_ISREG(mode):
            raise DecodeError("not a regular file (a FIFO, socket or device)")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror or e}") from None
    if not data:
        raise DecodeError("empty file")
    return data


@contextmanager
def open_image(source: bytes | str | os.PathLike,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """Open an image (bytes or a path; header only) behind featx's guards, for a ``with`` block.

    The image is checked against ``max_pixels`` before any pixel is decoded. Every failure, when
    opening or inside the block (``im.load()``, a conversion), is a :class:`DecodeError` whose
    message is the reason; nothing else escapes (PIL's DecompressionBombError included)."""
    data = source if isinstance(source, bytes) else read_file(source)
    if not data:
        raise DecodeError("empty file")
    try:
        with _open(data) as im:
            _check_pixels(im, max_pixels)
            yield im
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(f"decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError,
            MemoryError, Image.UnidentifiedImageError) as e:
        raise DecodeError(_reason(e)) from None


def load_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, upright (EXIF orientation applied)."""
    im.load()
    return to_rgb(_exif_transpose(im))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header, through :func:`open_image`; DecodeError if not an image."""
    with open_image(path) as im:
        return im.size


def decode_bytes(data: bytes, settings: DecodeSettings = DecodeSettings()) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of shape (size, size, 3); raise DecodeError."""
    with open_image(data, settings.max_pixels) as im:
        return np.asarray(resize(load_rgb(im), settings), dtype=np.uint8)


_OPEN = threading.Lock()  # warnings filters are process-wide: one decode thread changes them at once


def _open(data: bytes) -> Image.Image:
    """``Image.open`` (reads the header only) without PIL's DecompressionBombWarning: featx applies
    its own, lower pixel limit right after, so the warning would only be noise."""
    with _OPEN, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def decode_file(path: str | os.PathLike, settings: DecodeSettings = DecodeSettings()) -> np.ndarray:
    """Read and decode one file (see :func:`decode_bytes`)."""
    return decode_bytes(read_file(path), settings)


def decode_files(
    paths, settings: DecodeSettings = DecodeSettings()
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode several files: (pixels (N, size, size, 3) uint8, indices decoded, (path, reason))."""
    pixels, ok, failures = [], [], []
    for i, p in enumerate(paths):
        try:
            pixels.append(decode_file(p, settings))
            ok.append(i)
        except DecodeError as e:
            failures.append((str(p), str(e)))
    size = settings.size
    stack = np.stack(pixels) if pixels else np.empty((0, size, size, 3), np.uint8)
    return stack, ok, failures


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit and float greyscale scaled, transparency on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def resize(im: Image.Image, settings: DecodeSettings) -> Image.Image:
    """Apply the resize policy: squash to a square, or shorter side + centre crop."""
    target = (settings.size, settings.size)
    if settings.resize == "crop":
        return ImageOps.fit(im, target, method=RESAMPLE, centering=(0.5, 0.5))
    return im.resize(target, RESAMPLE)


def _check_pixels(im: Image.Image, max_pixels: int) -> None:
    width, height = im.size
    if width * height > max_pixels:
        raise DecodeError(
            f"decompression bomb guard: {width}x{height} pixels exceeds {max_pixels:,}"
        )
    if width == 0 or height == 0:
        raise DecodeError("image has zero size")


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block should not cost the image itself
        return im


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if "cannot identify image file" in text:
        return "not an image (cannot identify image format)"
    if "truncated" in text.lower():
        return f"truncated image ({text})"
    return f"undecodable image ({text})"
