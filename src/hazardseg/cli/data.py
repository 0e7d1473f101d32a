"""CLI commands: ``hazardseg data check|stats|preview|download`` (and ``synth``, see synth.py)."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Inspect, download and generate StreetHazards-format data.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the main app."""
    from hazardseg.cli import synth

    synth.register(data_app)
    app.add_typer(data_app, name="data")
