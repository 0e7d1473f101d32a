"""Reading image files: one place that opens PNG/JPEG files and reports bad ones clearly."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from hazardseg.errors import DataError

_UNSUPPORTED_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and decode an image file as is; DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as PIL RGB (an alpha channel is dropped); DataError if unreadable."""
    img = open_image(Path(path))
    if img.mode == "RGB":
        return img
    if img.mode in _UNSUPPORTED_MODES:
        raise DataError(f"{path}: {img.mode} images are not supported; expected RGB or RGBA")
    return img.convert("RGB")
