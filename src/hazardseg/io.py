"""Atomic file writing: a file is either absent or complete, never half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: changing the umask later, even briefly, would race with other threads
# creating files.
_UMASK = _read_umask()


_LOW_SPACE = 16 * 2**20
"""Free bytes below which a failed write is reported as a full disk."""


def _is_torch_write_error(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return ("write" in text and "fail" in text) or "inline_container" in text


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return _LOW_SPACE


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception (an OSError such as a full disk included, or an interrupt) the temporary
    file is removed and ``path`` is left untouched; an OSError that names no file (a failed
    write) is re-raised naming ``path``.
    ``durable=False`` skips the fsync before the rename: readers still never see a partial
    file, but a power loss may lose the newest data (fine for bulk-generated files).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            # a failed write() names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    except RuntimeError as exc:
        if _is_torch_write_error(exc):
            # torch.save reports a failed write (e.g. a full disk) as a RuntimeError of its
            # zip writer ("file write failed", or "unexpected pos" when closing the archive)
            if _free_bytes(target.parent) < _LOW_SPACE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from exc
            first = str(exc).strip().splitlines()[0]
            raise OSError(errno.EIO, f"could not write the file ({first})", str(target)) from exc
        raise
    finally:
        # never let a failing clean-up (e.g. the folder became read-only) hide the real error
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")
