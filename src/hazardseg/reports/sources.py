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
    "evaluation.grid",
    "protocol.exclude_unlabeled",
)
"""What must agree between results compared in one table: the settings that change what a
metric measures (which images, which pixel grid, which pixels). ``evaluation.grid`` is
derived (:func:`comparison_value`): "label resolution", or the input resize policy when a
model was scored at its input resolution."""
LABEL_KEYS: tuple[str, ...] = ("data.resize",)
"""Settings that change a model's predictions but not the metric's definition: shown as a
column when they differ, never refused (a model at 640x360 and score maps scored at label
resolution measure the same pixels)."""


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


def comparison_value(results: dict[str, Any], key: str) -> Any:
    """The value of a comparison or label key in a results document (see
    :data:`COMPARISON_KEYS`)."""
    if key == "evaluation.grid":
        data = results.get("data") or {}
        if data.get("at_label_resolution", True):
            return "label resolution"
        return f"input resolution ({data.get('resize', 'native')})"
    return lookup(results, key)


def _differing(entries: Sequence[ResultsEntry], keys: Sequence[str]) -> list[str]:
    return [
        key for key in keys if len({repr(comparison_value(e.results, key)) for e in entries}) > 1
    ]


def mixed_keys(entries: Sequence[ResultsEntry]) -> list[str]:
    """The :data:`COMPARISON_KEYS` whose values differ between ``entries``."""
    return _differing(entries, COMPARISON_KEYS)


def label_keys(entries: Sequence[ResultsEntry]) -> list[str]:
    """The :data:`LABEL_KEYS` whose values differ (shown as columns)."""
    return _differing(entries, LABEL_KEYS)


def check_comparable(entries: Sequence[ResultsEntry], allow_mixed: bool = False) -> list[str]:
    """Return the differing comparison and label keys (the table's extra columns); DataError
    when a comparison key differs and not ``allow_mixed``."""
    keys = mixed_keys(entries)
    if keys and not allow_mixed:
        key = keys[0]
        first = entries[0]
        value = comparison_value(first.results, key)
        other = next(e for e in entries if repr(comparison_value(e.results, key)) != repr(value))
        raise DataError(
            f"results are not comparable: {key} is {value!r} in {first.path} but "
            f"{comparison_value(other.results, key)!r} in {other.path}; pass --allow-mixed to "
            "compare them anyway (a column then labels each row)"
        )
    return keys + label_keys(entries)
