"""CLI commands: ``hazardseg data check|stats|preview|index|download`` (and ``synth``, see
synth.py), and ``hazardseg datasets``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hazardseg.data.check import CheckReport

data_app = typer.Typer(
    help="Inspect, index, download and generate data in every registered dataset's layout.",
    no_args_is_help=True,
)
DATASET_OPTION = typer.Option(
    None,
    "--dataset",
    metavar="NAME",
    help="Registered dataset at ROOT (default: detected from its layout).",
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
    root: Path = typer.Argument(..., help="Dataset root (e.g. StreetHazards' train/ and test/)."),
    dataset: str | None = DATASET_OPTION,
    split: list[str] = typer.Option(
        None,
        "--split",
        "-s",
        help="Check only this split (repeatable; default: every split of the dataset).",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes that read the files."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Verify the layout, pairing, images, sizes and label values; exit 1 on problems."""
    from hazardseg.data.check import check_dataset

    report = check_dataset(root, split or None, workers=workers, progress=progress, dataset=dataset)
    _print_report(report)


@data_app.command("stats")
def stats(
    root: Path = typer.Argument(..., help="Dataset root."),
    dataset: str | None = DATASET_OPTION,
    split: str | None = typer.Option(
        None, "--split", "-s", help="Split to count (default: the dataset's training split)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Bar chart PNG (default: class_pixels_<split>.png)."
    ),
    max_images: int = typer.Option(None, "--max-images", help="Count only the first N images."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Print the per-class pixel distribution and write a log-scale bar chart."""
    from hazardseg.data.registry import resolve_dataset
    from hazardseg.data.stats import class_pixel_counts, format_counts, plot_counts
    from hazardseg.errors import DataError

    if max_images is not None and max_images < 1:
        raise DataError(f"--max-images {max_images}; expected a positive integer")
    d = resolve_dataset(dataset, root)
    split = split or d.train_split or d.eval_split
    counts = class_pixel_counts(root, split, max_images, progress, d)
    for line in format_counts(counts, d):
        typer.echo(line)
    out = out or Path(f"class_pixels_{split}.png")
    plot_counts(counts, out, f"{d.title} {split}: pixels per class ({root})", d)
    typer.echo(f"wrote {out}")


@data_app.command("preview")
def preview(
    root: Path = typer.Argument(..., help="Dataset root."),
    dataset: str | None = DATASET_OPTION,
    split: str | None = typer.Option(
        None, "--split", "-s", help="Split shown (default: the dataset's training split)."
    ),
    n: int = typer.Option(8, "--n", "-n", help="Number of random samples."),
    out: Path = typer.Option(None, "--out", "-o", help="Grid PNG (default: preview_<split>.png)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sample choice."),
    tile_width: int = typer.Option(256, "--tile-width", help="Width of each tile in pixels."),
    cols: int = typer.Option(2, "--cols", help="Image/label pairs per row."),
) -> None:
    """Write a grid of images beside their coloured label maps, with a class legend."""
    from hazardseg.data.preview import write_preview
    from hazardseg.data.registry import resolve_dataset

    d = resolve_dataset(dataset, root)
    split = split or d.train_split or d.eval_split
    out = out or Path(f"preview_{split}.png")
    write_preview(root, split, out, n, seed, tile_width, cols, d)
    typer.echo(f"wrote {out}")


outliers_app = typer.Typer(
    help="Write cut-outs of negative objects for outlier exposure (train.outliers).",
    no_args_is_help=True,
)


@outliers_app.command("coco")
def outliers_coco(
    annotations: Path = typer.Option(
        ...,
        "--annotations",
        metavar="FILE",
        help="COCO instances file, e.g. instances_train2017.json.",
    ),
    images: Path = typer.Option(..., "--images", metavar="DIR", help="The COCO images folder."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New folder for the cut-outs."),
    dataset: str = typer.Option(
        "cityscapes",
        "--dataset",
        metavar="NAME",
        help="Training dataset whose known classes are left out (streethazards, cityscapes, "
        "bdd-anomaly).",
    ),
    exclude_classes: str = typer.Option(
        "", "--exclude-classes", metavar="A,B", help="More COCO categories to leave out."
    ),
    min_area: int = typer.Option(1000, "--min-area", metavar="PX", help="Smallest instance kept."),
    max_cutouts: int | None = typer.Option(None, "--max", metavar="N", help="At most N cut-outs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """RGBA cut-outs of COCO instances of categories the training dataset does not know (the
    Meta-OoD recipe), for train.outliers.source=folder."""
    from hazardseg.data.coco_outliers import write_coco_cutouts

    names = [n.strip() for n in exclude_classes.split(",") if n.strip()]
    manifest = write_coco_cutouts(
        annotations, images, out, dataset, names, min_area, max_cutouts, progress
    )
    typer.echo(f"wrote {manifest['num_cutouts']} cut-outs to {out}")


@data_app.command("index")
def index(
    root: Path = typer.Argument(..., help="Dataset root."),
    dataset: str = typer.Option(
        "bdd-anomaly", "--dataset", metavar="NAME", help="Dataset whose lists are written."
    ),
) -> None:
    """Write a dataset's split lists from its label files with the benchmark's own rule
    (BDD-Anomaly: train.odgt, validation.odgt, anom.odgt)."""
    from hazardseg.data.registry import get_dataset
    from hazardseg.errors import DataError

    d = get_dataset(dataset)
    writer = getattr(d, "write_indexes", None)
    if writer is None:
        raise DataError(f"dataset {d.name}: has no split lists to write (its layout is enough)")
    counts = writer(Path(root))
    typer.echo(
        f"wrote the {d.title} lists in {root}: "
        + ", ".join(f"{split} {n}" for split, n in counts.items())
    )


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
    """Download (resumable), extract and check the official StreetHazards archives (the
    other datasets are downloaded from their own sites: docs/data.md)."""
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


def datasets() -> None:
    """List the registered datasets: layout, classes, splits and default protocols."""
    from hazardseg.data.registry import DATASETS

    for d in DATASETS.values():
        classes = f"{d.labels.num_classes} classes" if d.labels.num_classes else "anomaly-only"
        anomaly = "anomalies" if d.labels.anomaly_id is not None else "no anomalies"
        splits = ", ".join(
            s + ("" if info.public_labels else " (hidden)") for s, info in d.splits.items()
        )
        protocols = ", ".join(d.protocols) or "segmentation only"
        typer.echo(f"{d.name:<16} {d.title}: {classes}, {anomaly}; protocols {protocols}")
        typer.echo(f"{'':<16} splits: {splits}; evaluated on {d.eval_split}")
        typer.echo(f"{'':<16} source: {d.source}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group and ``datasets`` to the main app."""
    from hazardseg.cli import synth

    synth.register(data_app)
    data_app.add_typer(outliers_app, name="outliers")
    app.add_typer(data_app, name="data")
    app.command("datasets")(datasets)
