"""The results files a comparison reads: found under the given paths, loaded and validated,
labelled for the tables, and checked to be comparable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hazardseg.errors import DataError

COMPARISON_KEYS: tuple[str, ...] = (
    "data.split",
    "data.num_images",
    "data.resize",
    "data.at_label_resolution",
    "protocol.exclude_unlabeled",
)
"""Fields that must agree between results compared in one table."""


@dataclass
class ResultsEntry:
    """One loaded results file and the label it gets in tables."""

    path: Path
    results: dict[str, Any]
    label: str = ""


def lookup(obj: dict[str, Any], dotted: str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``; None where a level is missing."""
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def find_results(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (searched recursively for results.json) into a sorted,
    de-duplicated list of files; DataError for a missing path or when nothing is found."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            hits = sorted(p.rglob("results.json"))
            if not hits:
                raise DataError(f"{p}: no results.json found in this directory")
            found.extend(hits)
        else:
            raise DataError(f"results path not found: {p}")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    if not unique:
        raise DataError("no results files given")
    return list(unique.values())


def _disambiguate(entries: list[ResultsEntry]) -> None:
    """Label entries by model name; files of the same model get the part of their folder path
    that tells them apart."""
    by_name: dict[str, list[ResultsEntry]] = {}
    for e in entries:
        e.label = str(lookup(e.results, "model.name") or "model")
        by_name.setdefault(e.label, []).append(e)
    for group in by_name.values():
        if len(group) < 2:
            continue
        parts = [e.path.resolve().parent.parts for e in group]
        lead = 0
        while all(len(p) > lead for p in parts) and len({p[lead] for p in parts}) == 1:
            lead += 1
        tail = 0
        while all(len(p) - tail > lead for p in parts) and len({p[-1 - tail] for p in parts}) == 1:
            tail += 1
        for e, p in zip(group, parts, strict=True):
            diff = "/".join(p[lead : len(p) - tail]) or e.path.name
            e.label = f"{e.label} [{diff}]"


def load_entries(paths: Sequence[str | os.PathLike[str]]) -> list[ResultsEntry]:
    """Load and validate every results file under ``paths`` and give each a table label."""
    from hazardseg.evaluation.results import load_results

    entries = [ResultsEntry(p, load_results(p)) for p in find_results(paths)]
    _disambiguate(entries)
    return entries


def mixed_keys(entries: Sequence[ResultsEntry]) -> list[str]:
    """The :data:`COMPARISON_KEYS` whose values differ between ``entries``."""
    return [
        key for key in COMPARISON_KEYS if len({repr(lookup(e.results, key)) for e in entries}) > 1
    ]


def check_comparable(entries: Sequence[ResultsEntry], allow_mixed: bool = False) -> list[str]:
    """Return the differing comparison keys; DataError when some differ and not ``allow_mixed``."""
    keys = mixed_keys(entries)
    if keys and not allow_mixed:
        key = keys[0]
        first = entries[0]
        other = next(
            e for e in entries if repr(lookup(e.results, key)) != repr(lookup(first.results, key))
        )
        raise DataError(
            f"results are not comparable: {key} is {lookup(first.results, key)!r} in {first.path} "
            f"but {lookup(other.results, key)!r} in {other.path}; pass --allow-mixed to compare "
            "them anyway (a column then labels each row)"
        )
    return keys
