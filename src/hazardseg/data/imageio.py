"""Reading image files: one place that opens PNG/JPEG files and reports bad ones clearly.

Untrusted files are handled here: only regular files are opened (a FIFO would block forever),
the pixel count is read from the header and checked against :data:`MAX_IMAGE_PIXELS` before
anything is decoded (so a decompression bomb is refused without allocating it), and every
decoding failure becomes a one-line :class:`~hazardseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from hazardseg.errors import DataError

MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest image (width x height) hazardseg decodes or resizes to: 67 megapixels, 73 times a
1280x720 StreetHazards frame. Larger files are refused before decoding."""

MAX_IMAGE_SIDE = 32768
"""Longest side (pixels) of an image hazardseg decodes or resizes to."""

_UNSUPPORTED_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_EXIF_ORIENTATION = 0x0112


def check_image_size(width: int, height: int, what: str) -> None:
    """DataError naming ``what`` unless ``width`` x ``height`` is within the image limits."""
    if width < 1 or height < 1:
        raise DataError(f"{what}: empty image ({width}x{height})")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{what}: image of {width}x{height} pixels exceeds the limit of "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels (at most {MAX_IMAGE_SIDE} per side); "
            "refused before decoding (a decompression bomb?)"
        )


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """DataError unless ``path`` is (or links to) a regular file; never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
        raise DataError(f"{path}: {kind}, not a regular image file; refused")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and decode an image file as is; DataError naming the file if it is not a regular
    file, exceeds :data:`MAX_IMAGE_PIXELS` or cannot be decoded."""
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_image_size(img.width, img.height, str(path))
                img.load()
                return img.copy()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image") from None


def apply_exif_orientation(img: Image.Image) -> Image.Image:
    """The image turned upright as viewers show it (EXIF orientation tag); unchanged when the
    file has no orientation tag."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        return img
    if orientation in (None, 1):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as PIL RGB, turned upright by its EXIF orientation (an alpha
    channel is dropped); DataError if unreadable."""
    img = apply_exif_orientation(open_image(Path(path)))
    if img.mode == "RGB":
        return img
    if img.mode in _UNSUPPORTED_MODES:
        raise DataError(f"{path}: {img.mode} images are not supported; expected RGB or RGBA")
    return img.convert("RGB")
