"""CLI commands: ``hazardseg data check|stats|preview|download`` (and ``synth``, see synth.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hazardseg.data.check import CheckReport

data_app = typer.Typer(
    help="Inspect, download and generate StreetHazards-format data.", no_args_is_help=True
)


def _print_report(report: CheckReport) -> None:
    """Print split summaries and problems; exit 1 when there are problems."""
    for summary in report.splits.values():
        typer.echo(summary.describe())
    for line in report.problems:
        typer.echo(f"problem: {line}", err=True)
    if report.problems:
        typer.echo(f"{len(report.problems)} problem(s) found in {report.root}", err=True)
        raise typer.Exit(1)
    typer.echo(f"OK: {report.root}")


@data_app.command("check")
def check(
    root: Path = typer.Argument(..., help="Dataset root (contains train/ and test/)."),
    split: list[str] = typer.Option(
        None, "--split", "-s", help="Check only this split (repeatable): train|validation|test."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes that read the files."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Verify the layout, pairing, PNGs, sizes and label values; exit 1 on problems."""
    from hazardseg.data.check import check_dataset

    _print_report(check_dataset(root, split or None, workers=workers, progress=progress))


@data_app.command("stats")
def stats(
    root: Path = typer.Argument(..., help="Dataset root."),
    split: str = typer.Option("train", "--split", "-s", help="train|validation|test."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Bar chart PNG (default: class_pixels_<split>.png)."
    ),
    max_images: int = typer.Option(None, "--max-images", help="Count only the first N images."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Print the per-class pixel distribution and write a log-scale bar chart."""
    from hazardseg.data.stats import class_pixel_counts, format_counts, plot_counts
    from hazardseg.errors import DataError

    if max_images is not None and max_images < 1:
        raise DataError(f"--max-images {max_images}; expected a positive integer")
    counts = class_pixel_counts(root, split, max_images=max_images, progress=progress)
    for line in format_counts(counts):
        typer.echo(line)
    out = out or Path(f"class_pixels_{split}.png")
    plot_counts(counts, out, title=f"StreetHazards {split}: pixels per class ({root})")
    typer.echo(f"wrote {out}")


@data_app.command("preview")
def preview(
    root: Path = typer.Argument(..., help="Dataset root."),
    split: str = typer.Option("train", "--split", "-s", help="train|validation|test."),
    n: int = typer.Option(8, "--n", "-n", help="Number of random samples."),
    out: Path = typer.Option(None, "--out", "-o", help="Grid PNG (default: preview_<split>.png)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sample choice."),
    tile_width: int = typer.Option(256, "--tile-width", help="Width of each tile in pixels."),
    cols: int = typer.Option(2, "--cols", help="Image/label pairs per row."),
) -> None:
    """Write a grid of images beside their coloured label maps, with a class legend."""
    from hazardseg.data.preview import write_preview

    out = out or Path(f"preview_{split}.png")
    write_preview(root, split, out, n=n, seed=seed, tile_width=tile_width, cols=cols)
    typer.echo(f"wrote {out}")


@data_app.command("download")
def download(
    root: Path = typer.Argument(..., help="Folder that will hold train/ and test/."),
    from_archive: list[Path] = typer.Option(
        None, "--from-archive", help="Use this already downloaded archive (repeatable)."
    ),
    train_url: str = typer.Option(None, "--train-url", help="Override the train archive URL."),
    test_url: str = typer.Option(None, "--test-url", help="Override the test archive URL."),
    keep_archives: bool = typer.Option(
        True, "--keep-archives/--remove-archives", help="Keep downloaded .tar files."
    ),
    retries: int = typer.Option(3, "--retries", help="Resume attempts after a dropped link."),
    timeout: float = typer.Option(60.0, "--timeout", help="Network timeout in seconds."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes for the final check."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Download (resumable), extract and check the official StreetHazards archives."""
    from hazardseg.data.download import download_dataset

    urls = {k: v for k, v in (("train", train_url), ("test", test_url)) if v}
    report = download_dataset(
        root,
        archives=from_archive or None,
        urls=urls,
        keep_archives=keep_archives,
        retries=retries,
        timeout=timeout,
        progress=progress,
        workers=workers,
    )
    _print_report(report)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the main app."""
    from hazardseg.cli import synth

    synth.register(data_app)
    app.add_typer(data_app, name="data")
