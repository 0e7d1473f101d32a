"""The ``hazardseg`` command: a thin layer that parses arguments and calls the Python API.

Each command group lives in its own module with a ``register(app)`` function.
Expected user errors (:class:`hazardseg.errors.HazardsegError`) and OS errors (permission
denied, disk full, a file where a folder is expected) print one line naming the path and exit
2; ``--debug`` shows the full traceback too.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from typing import Any

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
    from hazardseg.cli import data, evaluate, export, models, pipeline, reports, train

    for module in (data, models, train, evaluate, reports, pipeline, export):
        module.register(app)


_register_all()


def _tidy(command: Any) -> Any:
    """Help without type placeholders: flags show no value, options and arguments their
    metavar (or the option's name in capitals). Typer's click parameters are matched by
    their ``param_type_name`` (typer vendors its own click)."""
    for param in command.params:
        kind = getattr(param, "param_type_name", "")
        if kind == "option":
            if param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = param.name.upper() if param.name else "VALUE"
        elif kind == "argument":
            param.metavar = param.metavar or (param.name or "ARG").upper()
            param.display_type_rich = lambda ctx: None
    help_option = command.get_help_option

    def quiet_help_option(ctx: Any) -> Any:
        option = help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = quiet_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)
    return command


def cli_command() -> Any:
    """The click command of the ``hazardseg`` app, with tidy help."""
    return _tidy(typer.main.get_command(app))


_WORKER_HEADER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.", re.M)
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?:[A-Z]\w*(?:Error|Exception|Warning))\b:\s?(.*)$")


def _root_cause(text: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (torch wraps it in
    "Caught X in DataLoader worker process N. Original Traceback ..."); other text as is."""
    if not _WORKER_HEADER.search(text):
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        match = _EXC_LINE.match(lines[i])
        if match:
            return " ".join([match.group(1), *(m.strip() for m in lines[i + 1 :])]).strip()
    return lines[-1].strip() if lines else text


def error_line(exc: BaseException) -> str:
    """The one-line ``hazardseg: error: ...`` text of an expected error (HazardsegError or
    OSError): worker wrappers removed, an OS error as "PATH: reason"."""
    if isinstance(exc, OSError) and not isinstance(exc, HazardsegError):
        msg = _os_error_text(exc)
    else:
        msg = _root_cause(str(exc))
    parts = [m.strip() for m in msg.strip().splitlines() if m.strip()]
    return f"hazardseg: error: {' '.join(parts) or type(exc).__name__}"


def _os_error_text(exc: OSError) -> str:
    if exc.strerror is None:  # re-raised from a worker, or created with one message
        return _root_cause(str(exc)) or type(exc).__name__
    reason = exc.strerror
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device (free some space and run the command again)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif exc.errno == errno.EROFS:
        reason = "read-only file system"
    elif exc.errno == errno.EEXIST and exc.filename is not None:
        if os.path.lexists(exc.filename) and not os.path.isdir(exc.filename):
            reason = "exists and is not a folder (expected a folder here)"
    elif exc.errno == errno.ENOTDIR:
        reason = "a file is in the way where a folder is expected"
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hazardseg`` console script; returns the exit code.

    Expected errors print one line ``hazardseg: error: ...`` on stderr and return 2:
    :class:`HazardsegError` and OS errors (permission denied, no space left, a file where a
    folder is expected, ...), which name the path. ``--debug`` adds the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = cli_command()
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
    except (HazardsegError, OSError) as exc:
        if debug:
            traceback.print_exc()
        typer.echo(error_line(exc), err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("hazardseg: interrupted", err=True)
        return 130
    return 0
