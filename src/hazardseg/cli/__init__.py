"""The ``hazardseg`` command: a thin layer that parses arguments and calls the Python API.

Each command group lives in its own module with a ``register(app)`` function.
Expected user errors (:class:`hazardseg.errors.HazardsegError`) print one line and exit 2;
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import typer

from hazardseg import __version__
from hazardseg.errors import HazardsegError

app = typer.Typer(
    name="hazardseg",
    help="Semantic segmentation and pixel anomaly detection for driving scenes (StreetHazards).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hazardseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """hazardseg command-line interface."""


def _register_all() -> None:
    from hazardseg.cli import data, evaluate, models, pipeline, reports, train

    for module in (data, models, train, evaluate, reports, pipeline):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hazardseg`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="hazardseg", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        typer.echo(str(code), err=True)
        return 1
    except HazardsegError as exc:
        if debug:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()
        typer.echo(f"hazardseg: error: {' '.join(m.strip() for m in msg)}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("hazardseg: interrupted", err=True)
        return 130
    return 0
