"""CLI command: ``hazardseg data synth`` (filled in by its owner)."""

from __future__ import annotations

import typer


def register(data_app: typer.Typer) -> None:
    """Add the ``synth`` command to the ``data`` group."""
