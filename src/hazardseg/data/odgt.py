""".odgt index files (the index format of semantic-segmentation-pytorch, used by
StreetHazards and BDD-Anomaly): one JSON object per line, or one JSON list, each entry naming
``fpath_img`` and ``fpath_segm`` relative to the dataset root; and the containment check of
those paths."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from hazardseg.errors import DataError


def read_odgt_entries(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Read an .odgt index as ``(location, entry)`` pairs; ``location`` is ``"FILE:LINE"``
    (one object per line) or ``"FILE: entry N"`` (one JSON list)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: .odgt index is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read .odgt index ({exc.strerror or exc})") from None
    stripped = text.strip()
    if not stripped:
        return []
    located: list[tuple[str, Any]] = []
    if stripped.startswith("["):
        try:
            entries = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON list ({exc.msg}); expected .odgt") from exc
        if not isinstance(entries, list):
            raise DataError(f"{path}: expected a JSON list of .odgt entries")
        located = [(f"{path}: entry {i + 1}", e) for i, e in enumerate(entries)]
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                located.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg}); expected one object per line"
                ) from exc
    for where, entry in located:
        if not isinstance(entry, dict) or not {"fpath_img", "fpath_segm"} <= entry.keys():
            raise DataError(f"{where}: lacks 'fpath_img'/'fpath_segm'; expected .odgt entries")
    return located


def read_odgt(path: str | Path) -> list[dict[str, Any]]:
    """Read an .odgt index: one JSON list, or one JSON object per line."""
    return [entry for _, entry in read_odgt_entries(path)]


def index_path(root: Path, value: Any, where: str, key: str) -> PurePosixPath:
    """The normalised path (relative to ``root``) of an index entry's ``key``.

    DataError naming ``where`` (file and line) when the value is not a relative path string or
    leaves the dataset root (an absolute path, or ``..`` climbing above it). The result never
    contains ``..``; symbolic links inside the root are not followed here (the user's layout).
    """
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise DataError(f"{where}: {key} {value!r}; expected a path relative to the dataset root")
    text = value.replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(value).drive:
        raise DataError(
            f"{where}: {key} {value!r} is an absolute path; expected a path relative to the "
            f"dataset root {root}"
        )
    norm = posixpath.normpath(text)
    if norm == ".":
        raise DataError(f"{where}: {key} {value!r} names the dataset root, not a file")
    if norm == ".." or norm.startswith("../"):
        raise DataError(f"{where}: {key} {value!r} points outside the dataset root {root}")
    return PurePosixPath(norm)
