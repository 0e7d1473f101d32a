"""CLI commands: evaluate, eval-maps, calibrate."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer
import yaml

from hazardseg.errors import HazardsegError


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


def _is_rank_zero() -> bool:
    """True unless this process is a torchrun rank other than 0."""
    return int(os.environ.get("RANK", "0")) == 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="hazardseg: %(message)s")


OPTION_HELP = "Method option METHOD.KEY=VALUE (repeatable), e.g. energy.temperature=2."


def evaluate_cmd(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="hazardseg checkpoint or state dict."
    ),
    data: Path = typer.Option(..., "--data", help="StreetHazards root folder."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    methods: str = typer.Option("all", "--methods", help="'all' or names, e.g. msp,max_logit."),
    out: Path = typer.Option(..., "--out", help="Output folder for results.json (and maps/)."),
    resize: str = typer.Option("native", "--resize", help="native, WxH or short:N."),
    at_input_resolution: bool = typer.Option(
        False,
        "--at-input-resolution",
        help="Evaluate at the resized input resolution (labels resized with nearest).",
    ),
    exclude_unlabeled: bool = typer.Option(
        False, "--exclude-unlabeled", help="Leave 'unlabeled' pixels out of anomaly metrics."
    ),
    fit_split: str = typer.Option("train", "--fit-split", help="Split that fits SML/HEAT."),
    fit_images: int = typer.Option(100, "--fit-images", help="Images used for fitting."),
    save_maps: bool = typer.Option(
        False, "--save-maps", help="Write OUT/maps/<method>/<town>/<n>.npy (float32)."
    ),
    max_images: int | None = typer.Option(None, "--max-images", help="First N images only."),
    model: str | None = typer.Option(None, "--model", help="Model name for bare state dicts."),
    batch_size: int = typer.Option(1, "--batch-size"),
    workers: int = typer.Option(0, "--workers", help="Data-loading worker processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    nonfinite: str = typer.Option(
        "error", "--nonfinite", help="NaN/inf scores: 'error' or 'exclude' (count recorded)."
    ),
    no_components: bool = typer.Option(
        False, "--no-components", help="Skip component metrics (no score maps kept)."
    ),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
    state: Path | None = typer.Option(
        None, "--state", help="Anomaly state file (default: anomaly_state.pt beside CKPT)."
    ),
    no_overlap: bool = typer.Option(
        False, "--no-overlap", help="Update metrics inline, not on a background thread."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Evaluate segmentation and anomaly methods on a split; writes OUT/results.json."""
    from hazardseg.evaluation import evaluate, summary_table

    _setup_logging()
    results = evaluate(
        checkpoint,
        data,
        split,
        methods,
        out,
        resize=resize,
        at_label_resolution=not at_input_resolution,
        exclude_unlabeled=exclude_unlabeled,
        fit_split=fit_split,
        fit_images=fit_images,
        save_maps=save_maps,
        max_images=max_images,
        model_name=model,
        batch_size=batch_size,
        workers=workers,
        device=device,
        method_options=parse_method_options(option),
        nonfinite=nonfinite,
        components=not no_components,
        state_path=state,
        progress=not quiet,
        overlap=not no_overlap,
    )
    if _is_rank_zero():
        typer.echo(summary_table(results))
        typer.echo(f"wrote {out / 'results.json'}")


def eval_maps_cmd(
    maps: Path = typer.Option(..., "--maps", help="Folder of <town>/<n>.npy score maps."),
    data: Path = typer.Option(..., "--data", help="StreetHazards root folder."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    out: Path = typer.Option(..., "--out", help="Output folder for results.json."),
    name: str = typer.Option("external", "--name", help="Method/model name in the results."),
    exclude_unlabeled: bool = typer.Option(False, "--exclude-unlabeled"),
    nonfinite: str = typer.Option("error", "--nonfinite", help="'error' or 'exclude'."),
    max_images: int | None = typer.Option(None, "--max-images", help="First N images only."),
    no_components: bool = typer.Option(False, "--no-components"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Evaluate precomputed score maps (.npy per image, higher = more anomalous)."""
    from hazardseg.evaluation import evaluate_maps, summary_table

    results = evaluate_maps(
        maps,
        data,
        split,
        out,
        name=name,
        exclude_unlabeled=exclude_unlabeled,
        nonfinite=nonfinite,
        components=not no_components,
        max_images=max_images,
        progress=not quiet,
    )
    typer.echo(summary_table(results))
    typer.echo(f"wrote {out / 'results.json'}")


def calibrate_cmd(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="hazardseg checkpoint or state dict."
    ),
    data: Path = typer.Option(..., "--data", help="StreetHazards root folder."),
    split: str = typer.Option("validation", "--split", help="Anomaly-free split to use."),
    methods: str = typer.Option("all", "--methods", help="'all' or names, e.g. msp,sml."),
    target_fpr: float = typer.Option(
        0.05, "--target-fpr", help="Fraction of known pixels flagged."
    ),
    resize: str = typer.Option("native", "--resize", help="native, WxH or short:N."),
    at_input_resolution: bool = typer.Option(False, "--at-input-resolution"),
    exclude_unlabeled: bool = typer.Option(False, "--exclude-unlabeled"),
    fit_split: str = typer.Option("train", "--fit-split"),
    fit_images: int = typer.Option(100, "--fit-images"),
    max_images: int | None = typer.Option(None, "--max-images"),
    model: str | None = typer.Option(None, "--model", help="Model name for bare state dicts."),
    batch_size: int = typer.Option(1, "--batch-size"),
    workers: int = typer.Option(0, "--workers"),
    device: str = typer.Option("auto", "--device"),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
    state: Path | None = typer.Option(None, "--state", help="Anomaly state file to update."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Pick each method's threshold on anomaly-free data (FPR target); store it."""
    from hazardseg.calibration import calibrate

    _setup_logging()
    entries = calibrate(
        checkpoint,
        data,
        split,
        methods,
        target_fpr,
        resize=resize,
        at_label_resolution=not at_input_resolution,
        exclude_unlabeled=exclude_unlabeled,
        fit_split=fit_split,
        fit_images=fit_images,
        max_images=max_images,
        model_name=model,
        batch_size=batch_size,
        workers=workers,
        device=device,
        method_options=parse_method_options(option),
        state_path=state,
        progress=not quiet,
    )
    from hazardseg.anomaly.state import default_state_path

    if _is_rank_zero():
        typer.echo(f"{'method':<10} {'threshold':>14} {'FPR':>8}  ({split}, target {target_fpr})")
        for n, e in entries.items():
            typer.echo(f"{n:<10} {e['threshold']:>14.6g} {e['fpr']:>8.4f}")
        typer.echo(f"stored in {state or default_state_path(checkpoint)}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("evaluate")(evaluate_cmd)
    app.command("eval-maps")(eval_maps_cmd)
    app.command("calibrate")(calibrate_cmd)
