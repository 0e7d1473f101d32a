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
SPEC_HELP = "unset: the checkpoint's eval section, then --config"
TTA_HELP = (
    "Test-time augmentation: 'none' or scales and/or flip, e.g. 0.75,1,1.25,flip "
    "(logits averaged at label resolution before any score; default none)."
)


def spec_flags(config: Path | None, **flags: Any) -> dict[str, Any]:
    """Spec settings given on the command line (None = not given) and the ``--config`` file;
    the command combines them with the checkpoint's own ``eval:`` section."""
    given = {k: v for k, v in flags.items() if v is not None}
    if config is not None:
        given["config_file"] = config
    return given


def evaluate_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="hazardseg checkpoint or state dict."
    ),
    data: Path = typer.Option(..., "--data", help="StreetHazards root folder."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    methods: str | None = typer.Option(
        None, "--methods", help="'all' or names, e.g. msp,max_logit (default: all)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for results.json (and maps/)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file whose eval: section sets the spec."
    ),
    resize: str | None = typer.Option(
        None, "--resize", help=f"native, WxH or short:N ({SPEC_HELP}; default native)."
    ),
    at_input_resolution: bool = typer.Option(
        False,
        "--at-input-resolution",
        help="Evaluate at the resized input resolution (labels resized with nearest).",
    ),
    exclude_unlabeled: bool = typer.Option(
        False, "--exclude-unlabeled", help="Leave 'unlabeled' pixels out of anomaly metrics."
    ),
    fit_split: str | None = typer.Option(
        None, "--fit-split", help="Split that fits SML/HEAT (default train)."
    ),
    fit_images: int | None = typer.Option(
        None, "--fit-images", help="Images used for fitting (default 100)."
    ),
    save_maps: bool = typer.Option(
        False, "--save-maps", help="Write OUT/maps/<method>/<town>/<n>.npy (float32)."
    ),
    max_images: int | None = typer.Option(None, "--max-images", help="First N images only."),
    model: str | None = typer.Option(None, "--model", help="Model name for bare state dicts."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per forward."),
    workers: int | None = typer.Option(None, "--workers", help="Data-loading worker processes."),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, cuda:1 ... (default auto)."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."
    ),
    nonfinite: str | None = typer.Option(
        None, "--nonfinite", help="NaN/inf scores: 'error' or 'exclude' (count recorded)."
    ),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP),
    components: str | None = typer.Option(
        None,
        "--components",
        help="Component metrics: calibrated (default, thresholds from calibrate), oracle "
        "(pooled best-F1 on this split, a second forward pass) or none.",
    ),
    no_components: bool = typer.Option(
        False, "--no-components", help="Skip component metrics (same as --components none)."
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
    flags = spec_flags(
        config,
        methods=methods,
        resize=resize,
        at_label_resolution=False if at_input_resolution else None,
        exclude_unlabeled=True if exclude_unlabeled else None,
        fit_split=fit_split,
        fit_images=fit_images,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        nonfinite=nonfinite,
        components="none" if no_components else components,
        tta=tta,
    )
    results = evaluate(
        checkpoint,
        data,
        split,
        flags.pop("methods", None),
        out,
        **flags,
        save_maps=save_maps,
        max_images=max_images,
        model_name=model,
        method_options=parse_method_options(option),
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


def calibrate_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="hazardseg checkpoint or state dict."
    ),
    data: Path = typer.Option(..., "--data", help="StreetHazards root folder."),
    split: str = typer.Option("validation", "--split", help="Anomaly-free split to use."),
    methods: str | None = typer.Option(
        None, "--methods", help="'all' or names, e.g. msp,sml (default: all)."
    ),
    target_fpr: float = typer.Option(
        0.05, "--target-fpr", help="Fraction of known pixels flagged."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file whose eval: section sets the spec."
    ),
    resize: str | None = typer.Option(None, "--resize", help="native, WxH or short:N."),
    at_input_resolution: bool = typer.Option(False, "--at-input-resolution"),
    exclude_unlabeled: bool = typer.Option(False, "--exclude-unlabeled"),
    fit_split: str | None = typer.Option(None, "--fit-split"),
    fit_images: int | None = typer.Option(None, "--fit-images"),
    max_images: int | None = typer.Option(None, "--max-images"),
    model: str | None = typer.Option(None, "--model", help="Model name for bare state dicts."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    workers: int | None = typer.Option(None, "--workers"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: str | None = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16."),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
    state: Path | None = typer.Option(None, "--state", help="Anomaly state file to update."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Pick each method's threshold on anomaly-free data (FPR target); store it."""
    from hazardseg.evaluation.calibrate import calibrate

    _setup_logging()
    flags = spec_flags(
        config,
        methods=methods,
        resize=resize,
        at_label_resolution=False if at_input_resolution else None,
        exclude_unlabeled=True if exclude_unlabeled else None,
        fit_split=fit_split,
        fit_images=fit_images,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        tta=tta,
    )
    entries = calibrate(
        checkpoint,
        data,
        split,
        flags.pop("methods", None),
        target_fpr,
        **flags,
        max_images=max_images,
        model_name=model,
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
