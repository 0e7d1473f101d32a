"""CLI command: ``hazardseg data synth`` writes a synthetic StreetHazards-format tree."""

from __future__ import annotations

from pathlib import Path

import typer


def register(data_app: typer.Typer) -> None:
    """Add the ``synth`` command to the ``data`` group."""
    data_app.command("synth")(synth)


def synth(
    out: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)."),
    train: int = typer.Option(200, "--train", help="Number of training images (town t1-3)."),
    val: int = typer.Option(50, "--val", help="Number of validation images (town t4)."),
    test: int = typer.Option(100, "--test", help="Number of test images (towns t5, t6)."),
    size: str = typer.Option("320x180", "--size", help="Image size WxH."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed (same seed -> identical files)."),
    rgba: bool = typer.Option(False, "--rgba", help="Write RGBA images like the official PNGs."),
    workers: int = typer.Option(1, "--workers", help="Processes used for rendering."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace OUT/train and OUT/test if OUT is not empty."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate procedural StreetHazards-format street scenes (anomalies only in test)."""
    from hazardseg.data.synth import generate_dataset, parse_size

    root = generate_dataset(
        out,
        train,
        val,
        test,
        size=parse_size(size),
        seed=seed,
        rgba=rgba,
        progress=not quiet,
        overwrite=overwrite,
        workers=workers,
    )
    typer.echo(
        f"wrote {train + val + test} images to {root} (train {train}, validation {val}, "
        f"test {test})"
    )
