"""CLI commands: evaluate, eval-maps, calibrate."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer
import yaml

from hazardseg.cli.options import spec_options
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.spec import RunOptions, SpecRequest


def parse_method_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """Parse ``METHOD.KEY=VALUE`` strings (values as YAML) into ``{method: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        method, dot, opt = key.strip().partition(".")
        if not sep or not dot or not method or not opt:
            raise HazardsegError(
                f"--option {item!r}: expected METHOD.KEY=VALUE, e.g. energy.temperature=2"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(method, {})[opt.strip()] = value
    return out


def is_rank_zero() -> bool:
    """True unless this process is a torchrun rank other than 0."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging() -> None:
    """Log lines as ``hazardseg: message`` on stderr."""
    logging.basicConfig(level=logging.INFO, format="hazardseg: %(message)s")


OPTION_HELP = "Method option METHOD.KEY=VALUE (repeatable), e.g. energy.temperature=2."
CHECKPOINT_OPTION = typer.Option(
    ..., "--checkpoint", metavar="CKPT", help="hazardseg checkpoint, or a bare state dict."
)
MODEL_OPTION = typer.Option(
    None, "--model", metavar="NAME", help="Model name of a bare state dict."
)
DATA_OPTION = typer.Option(..., "--data", metavar="ROOT", help="Dataset root folder.")
DATASET_OPTION = typer.Option(
    None,
    "--dataset",
    metavar="NAME",
    help="Registered dataset at --data (default: detected from its layout; `hazardseg "
    "datasets` lists them).",
)
SPLIT_OPTION = typer.Option(
    None, "--split", metavar="SPLIT", help="The split evaluated (default: the dataset's own)."
)
STATE_OPTION = typer.Option(
    None, "--state", metavar="FILE",
    help="Anomaly state file (default: anomaly_state.pt beside the checkpoint).",
)  # fmt: skip
REFIT_OPTION = typer.Option(
    False, "--refit",
    help="Fit sml, heat, knn and mahalanobis again although a stored fit applies (replaces it "
    "and removes its calibrated thresholds).",
)  # fmt: skip
OPTION_OPTION = typer.Option(None, "--option", metavar="M.K=V", help=OPTION_HELP)
QUIET_OPTION = typer.Option(False, "--quiet", help="No progress output.")
MAX_IMAGES_OPTION = typer.Option(None, "--max-images", metavar="N", help="Only the first N images.")


def load_request(checkpoint: Path, model: str | None, request: SpecRequest) -> tuple[Any, Any]:
    """The loaded checkpoint and the spec resolved over its ``eval:`` section."""
    from hazardseg.models.checkpoint import open_checkpoint

    ckpt = open_checkpoint(checkpoint, model)
    return ckpt, request.resolve(ckpt.config)


@spec_options(
    "methods", "resize", "at_input_resolution", "exclude_unlabeled", "protocols", "fit_split",
    "fit_images", "batch_size", "workers", "device", "precision", "nonfinite", "tta",
    "components", "no_components",
)  # fmt: skip
def evaluate_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = CHECKPOINT_OPTION,
    data: Path = DATA_OPTION,
    dataset: str | None = DATASET_OPTION,
    split: str | None = SPLIT_OPTION,
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Output folder for results.json (and maps/)."
    ),
    save_maps: bool = typer.Option(
        False,
        "--save-maps",
        help="Also write every score map below OUT/maps (on a split without public labels: "
        "only the maps, for the benchmark's server).",
    ),
    maps_format: str = typer.Option(
        "npy",
        "--maps-format",
        metavar="FORMAT",
        help="Saved maps: npy (METHOD/<image path>.npy, float32) or smiyc "
        "(anomaly_p/METHOD/DATASET/FRAME.hdf5, float16: SegmentMeIfYouCan's submission).",
    ),
    max_images: int | None = MAX_IMAGES_OPTION,
    model: str | None = MODEL_OPTION,
    option: list[str] | None = OPTION_OPTION,
    state: Path | None = STATE_OPTION,
    refit: bool = REFIT_OPTION,
    no_overlap: bool = typer.Option(
        False, "--no-overlap", help="Update metrics inline, not on a background thread."
    ),
    quiet: bool = QUIET_OPTION,
    request: SpecRequest = SpecRequest(),
) -> None:
    """Evaluate segmentation and anomaly methods on a split; writes OUT/results.json."""
    from hazardseg.data.split import DataSource
    from hazardseg.evaluation import evaluate, summary_table

    setup_logging()
    source = DataSource.of(data, dataset)
    ckpt, spec = load_request(checkpoint, model, request)
    run = RunOptions(
        state_path=state,
        method_options=parse_method_options(option),
        refit=refit,
        explicit=request.explicit,
        max_images=max_images,
        save_maps=save_maps,
        maps_format=maps_format,
        overlap=not no_overlap,
        progress=not quiet,
    )
    results = evaluate(ckpt, source, split, spec, run, out_dir=out)
    if not is_rank_zero():
        return
    if results.get("kind") == "score-maps":
        for name, folder in results["methods"].items():
            typer.echo(f"{name}: {results['num_images']} maps in {folder}")
        typer.echo(f"wrote {out / 'maps.json'}; nothing scored (the split's labels are not public)")
        if results.get("submit"):
            typer.echo(f"submit the maps to {results['submit']}")
        return
    typer.echo(summary_table(results))
    typer.echo(f"wrote {out / 'results.json'}")


@spec_options("exclude_unlabeled", "protocols", "nonfinite", "no_components")
def eval_maps_cmd(
    maps: Path = typer.Option(
        ...,
        "--maps",
        metavar="DIR",
        help="Folder of score maps: <image path>.npy, or SegmentMeIfYouCan's FRAME.hdf5.",
    ),
    data: Path = DATA_OPTION,
    dataset: str | None = DATASET_OPTION,
    split: str | None = SPLIT_OPTION,
    maps_format: str = typer.Option(
        "auto", "--maps-format", metavar="FORMAT", help="auto (found on disk), npy or smiyc."
    ),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder for results.json."),
    name: str = typer.Option(
        "external", "--name", metavar="NAME", help="Method/model name in the results."
    ),
    max_images: int | None = MAX_IMAGES_OPTION,
    quiet: bool = QUIET_OPTION,
    request: SpecRequest = SpecRequest(),
) -> None:
    """Evaluate precomputed score maps (one per image, higher = more anomalous)."""
    from hazardseg.config import EvalConfig
    from hazardseg.data.split import DataSource
    from hazardseg.evaluation import evaluate_maps, summary_table

    source = DataSource.of(data, dataset)
    spec = request.resolve(None, base=EvalConfig(components="oracle"))
    run = RunOptions(max_images=max_images, progress=not quiet)
    results = evaluate_maps(maps, source, split, spec, run, out, name, maps_format)
    typer.echo(summary_table(results))
    typer.echo(f"wrote {out / 'results.json'}")


@spec_options(
    "methods", "resize", "at_input_resolution", "exclude_unlabeled", "fit_split", "fit_images",
    "batch_size", "workers", "device", "precision", "tta",
)  # fmt: skip
def calibrate_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = CHECKPOINT_OPTION,
    data: Path = DATA_OPTION,
    dataset: str | None = DATASET_OPTION,
    split: str | None = typer.Option(
        None,
        "--split",
        metavar="SPLIT",
        help="Split whose known-class pixels set the thresholds (default: the dataset's "
        "validation split).",
    ),
    target_fpr: float = typer.Option(
        0.05, "--target-fpr", metavar="X", help="Fraction of known pixels flagged."
    ),
    max_images: int | None = MAX_IMAGES_OPTION,
    model: str | None = MODEL_OPTION,
    option: list[str] | None = OPTION_OPTION,
    state: Path | None = typer.Option(
        None, "--state", metavar="FILE", help="Anomaly state file to update."
    ),
    refit: bool = REFIT_OPTION,
    quiet: bool = QUIET_OPTION,
    request: SpecRequest = SpecRequest(),
) -> None:
    """Pick each method's threshold on anomaly-free data (FPR target); store it."""
    from hazardseg.data.split import DataSource
    from hazardseg.evaluation.calibrate import calibrate
    from hazardseg.evaluation.spec import state_file

    setup_logging()
    source = DataSource.of(data, dataset)
    split = split or source.dataset.val_split or source.dataset.eval_split
    ckpt, spec = load_request(checkpoint, model, request)
    run = RunOptions(
        state_path=state,
        method_options=parse_method_options(option),
        refit=refit,
        explicit=request.explicit,
        max_images=max_images,
        progress=not quiet,
    )
    entries = calibrate(ckpt, source, split, spec, run, target_fpr=target_fpr)
    if is_rank_zero():
        typer.echo(f"{'method':<12} {'threshold':>14} {'FPR':>8}  ({split}, target {target_fpr})")
        for n, e in entries.items():
            typer.echo(f"{n:<12} {e['threshold']:>14.6g} {e['fpr']:>8.4f}")
        typer.echo(f"stored in {state_file(run, ckpt.path)}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("evaluate")(evaluate_cmd)
    app.command("eval-maps")(eval_maps_cmd)
    app.command("calibrate")(calibrate_cmd)
