"""CLI command: ``hazardseg data synth`` writes a tree of synthetic scenes in a dataset's
layout."""

from __future__ import annotations

from pathlib import Path

import typer


def register(data_app: typer.Typer) -> None:
    """Add the ``synth`` command to the ``data`` group."""
    data_app.command("synth")(synth)


def synth(  # noqa: PLR0913  (typer: one parameter per option)
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)."),
    dataset: str = typer.Option(
        "streethazards",
        "--dataset",
        metavar="NAME",
        help="Layout and label encoding to write (`hazardseg datasets` lists them).",
    ),
    train: int | None = typer.Option(
        None, "--train", help="Training images (StreetHazards default 200, town t1-3)."
    ),
    val: int | None = typer.Option(
        None, "--val", help="Validation images (StreetHazards default 50, town t4)."
    ),
    test: int | None = typer.Option(
        None, "--test", help="Test images (StreetHazards default 100, towns t5, t6)."
    ),
    size: str = typer.Option("320x180", "--size", help="Image size WxH."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed (same seed -> identical files)."),
    rgba: bool = typer.Option(False, "--rgba", help="Write RGBA images like the official PNGs."),
    workers: int = typer.Option(1, "--workers", help="Processes used for rendering."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace OUT/train and OUT/test if OUT is not empty."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate procedural street scenes in a dataset's layout (anomalies only where the
    dataset has them); docs/data.md says what --train/--val/--test mean for each dataset."""
    from hazardseg.data.synth import generate_synthetic, parse_size
    from hazardseg.data.synth.generate import default_counts

    train, val, test = default_counts(dataset, train, val, test)
    root = generate_synthetic(
        out,
        dataset,
        (train, val, test),
        size=parse_size(size),
        seed=seed,
        progress=not quiet,
        overwrite=overwrite,
        workers=workers,
        rgba=rgba,
    )
    typer.echo(
        f"wrote {train + val + test} images to {root} ({dataset}: train {train}, validation "
        f"{val}, test {test})"
    )
