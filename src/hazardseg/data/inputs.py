"""Expanding user-given image files and folders into a list of inputs with unique output keys.

Used by ``predict``: a key names an image's outputs (``<key>_seg.png`` ...). Keys are unique
(case-insensitively, so outputs never overwrite each other on any filesystem), never absolute
and never contain ``..``; only regular files are listed (a FIFO or device named ``x.png`` is
skipped with a warning, never opened).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path, PurePosixPath

from hazardseg.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File suffixes (lower case) treated as images when a folder is scanned."""


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is (or links to) a regular file; False for folders, FIFOs, sockets,
    devices and missing paths. Never opens the file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _file_kind(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def scan_image_folder(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted); non-regular files that look like
    images are skipped with a warning."""
    files = []
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not is_regular_file(f):
            if _file_kind(f) != "folder":
                log.warning("skipping %s: a %s, not a regular file", f, _file_kind(f))
            continue
        files.append(f)
    return files


def _safe_key(key: str, path: Path) -> str:
    # The last part only prefixes an output file name (``<key>_seg.png``), so ``..`` there is
    # harmless; folder parts must not climb out of the output folder.
    pure = PurePosixPath(key)
    if not key or pure.is_absolute() or any(p in ("..", ".") for p in pure.parts[:-1]):
        raise DataError(f"{path}: cannot derive a safe output name from this path")
    return key


def unique_keys(keys: list[str]) -> list[str]:
    """Make ``keys`` unique (case-insensitively) keeping order: the first of equal keys keeps
    its name, later ones get ``_2``, ``_3``... skipping any name another input already has."""
    taken = {k.casefold() for k in keys}
    used: set[str] = set()
    out = []
    for key in keys:
        if key.casefold() not in used:
            new = key
        else:
            n = 2
            while f"{key}_{n}".casefold() in taken or f"{key}_{n}".casefold() in used:
                n += 1
            new = f"{key}_{n}"
            taken.add(new.casefold())
        used.add(new.casefold())
        out.append(new)
    return out


def collect_images(inputs: list[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """Expand files and folders (searched recursively for PNG/JPEG) into ``(path, key)``
    pairs; ``key`` names the outputs (path below the folder, or the file name, without
    suffix) and is unique across all pairs (``_2``, ``_3``... for duplicates).

    DataError for an input that does not exist, a folder without images, or an input that is
    not a regular file; non-regular files inside folders are skipped with a warning.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = scan_image_folder(p)
            if not files:
                raise DataError(f"{p}: no PNG or JPEG images in this folder")
            found += [(f, f.relative_to(p).with_suffix("").as_posix()) for f in files]
        elif is_regular_file(p):
            found.append((p, p.stem))
        elif p.exists():
            raise DataError(
                f"{p}: a {_file_kind(p)}, not a regular file (expected an image file or a folder)"
            )
        else:
            raise DataError(f"input not found: {p} (expected an image file or a folder)")
    keys = unique_keys([_safe_key(key, path) for path, key in found])
    return [(path, key) for (path, _), key in zip(found, keys, strict=True)]
