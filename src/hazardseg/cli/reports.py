"""CLI commands: ``hazardseg compare``, ``hazardseg report`` and ``hazardseg sensitivity``."""

from __future__ import annotations

from pathlib import Path

import typer


def compare(
    results: list[Path] = typer.Argument(
        ..., help="results.json files, or directories searched recursively for them."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the comparison to."),
    name: str = typer.Option("comparison", "--name", help="File-name prefix of the outputs."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the files of an earlier comparison with this name."
    ),
    allow_mixed: bool = typer.Option(
        False,
        "--allow-mixed",
        help="Compare results of different splits/protocols (a column labels each row).",
    ),
) -> None:
    """Tables (CSV, Markdown, JSON) and figures comparing models x anomaly methods."""
    from hazardseg.reports.compare import write_comparison
    from hazardseg.reports.tables import table_to_markdown

    comp = write_comparison(results, out, name, overwrite=overwrite, allow_mixed=allow_mixed)
    typer.echo(f"compared {len(comp.entries)} results file(s)")
    if comp.mixed:
        typer.echo(f"warning: mixed comparison ({', '.join(comp.mixed)} differ)")
    typer.echo("pooled protocol (percent, best in **bold**):")
    typer.echo(table_to_markdown(comp.tables["pooled"]))
    typer.echo(f"wrote {len(comp.files)} files to {out} ({name}.md, {name}.json, ...)")


def report(
    run_dir: Path = typer.Argument(..., help="Run directory (training and/or evaluation)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="HTML file to write (default RUN_DIR/report.html)."
    ),
    compare_dirs: list[Path] = typer.Option(
        [], "--compare", help="A `hazardseg compare` output directory to include (repeatable)."
    ),
) -> None:
    """One self-contained HTML page (images embedded) summarising a run."""
    from hazardseg.reports.html import build_report

    path = build_report(run_dir, out, compare_dirs)
    typer.echo(f"wrote {path}")


def sensitivity(
    results: Path = typer.Argument(..., help="A results.json file or its directory."),
    method: str = typer.Option(..., "--method", "-m", help="Anomaly method to analyse."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="PNG to write (default sensitivity_METHOD.png beside it)."
    ),
) -> None:
    """F1, precision and recall as the detection threshold moves (from the stored PR curve)."""
    from hazardseg.reports.compare import write_sensitivity
    from hazardseg.reports.sensitivity import sensitivity_text

    sens = write_sensitivity(results, method, out)
    typer.echo(sensitivity_text(sens.rows))
    typer.echo(f"wrote {sens.figure}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("compare")(compare)
    app.command("report")(report)
    app.command("sensitivity")(sensitivity)
