"""CLI commands: ``visualize``, ``predict``, ``ablate`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from hazardseg.cli.evaluate import (
    CHECKPOINT_OPTION,
    DATA_OPTION,
    DATASET_OPTION,
    MODEL_OPTION,
    STATE_OPTION,
    load_request,
)
from hazardseg.cli.options import spec_options
from hazardseg.errors import DataError, HazardsegError
from hazardseg.evaluation.spec import RunOptions, SpecRequest


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HazardsegError(f"--indices {text!r}: expected comma-separated integers") from None


@spec_options("resize", "device", "precision", "tta")
def visualize_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = CHECKPOINT_OPTION,
    data: Path = DATA_OPTION,
    dataset: str | None = DATASET_OPTION,
    split: str | None = typer.Option(
        None, "--split", metavar="SPLIT", help="The split drawn (default: the dataset's own)."
    ),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder for the panels."),
    samples: int = typer.Option(6, "--samples", metavar="N", help="Number of samples to draw."),
    indices: str | None = typer.Option(
        None,
        "--indices",
        metavar="I,J,...",
        help="Comma-separated sample indices (overrides --samples).",
    ),
    method: str = typer.Option("max_logit", "--method", metavar="NAME", help="Anomaly method."),
    select: str = typer.Option(
        "even", "--select", metavar="MODE", help="even, best or worst (ranked by --by)."
    ),
    by: str = typer.Option(
        "miou",
        "--by",
        metavar="METRIC",
        help="Per-image metric for best/worst: miou, or ap (the official per-image AP).",
    ),
    model: str | None = MODEL_OPTION,
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Also write a comparison grid."),
    state: Path | None = STATE_OPTION,
    request: SpecRequest = SpecRequest(),
) -> None:
    """Draw per-sample panels (input, ground truth, prediction, errors, anomaly maps)."""
    from hazardseg.data.split import DataSource
    from hazardseg.inference.visualize import PanelSelection, visualize

    source = DataSource.of(data, dataset)
    split = split or source.dataset.eval_split
    ckpt, spec = load_request(checkpoint, model, request)
    selection = PanelSelection(
        samples=samples, indices=_indices(indices), method=method, select=select, by=by,
        grid=grid,
    )  # fmt: skip
    run = RunOptions(state_path=state, explicit=request.explicit)
    summary = visualize(ckpt, source, split, out, spec, run, selection)
    label = "AP" if by == "ap" else "mIoU"
    for row in summary["samples"]:
        value = row[by]
        shown = row.get(f"{by}_note") or "n/a" if value is None else f"{100 * value:.1f}"
        typer.echo(f"#{row['index']}: {label} {shown} -> {row['panel']}")
    if summary["grid"]:
        typer.echo(f"grid: {summary['grid']}")


@spec_options("resize", "device", "batch_size", "precision", "tta")
def predict_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    images: list[Path] = typer.Argument(
        ...,
        metavar="INPUT",
        help="Image files or folders (PNG/JPEG), or videos (mp4/avi/mkv/mov/webm).",
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", metavar="CKPT", help="Checkpoint; required by the torch backend."
    ),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder."),
    method: str = typer.Option("max_logit", "--method", metavar="NAME", help="Anomaly method."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        metavar="X",
        help="Detection threshold (default: the one calibrated under the same settings).",
    ),
    model: str | None = MODEL_OPTION,
    state: Path | None = STATE_OPTION,
    backend: str = typer.Option(
        "torch",
        "--backend",
        metavar="NAME",
        help="torch (the checkpoint) or onnxruntime (an exported graph, --onnx).",
    ),
    onnx: Path | None = typer.Option(
        None, "--onnx", metavar="FILE", help="Graph from `hazardseg export` (onnxruntime)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", metavar="N", help="onnxruntime intra-op threads (default: all cores)."
    ),
    every: int = typer.Option(1, "--every", metavar="N", help="Videos: every N-th frame."),
    save_scores: str | None = typer.Option(
        None,
        "--save-scores",
        metavar="DTYPE",
        help="Also write each score map as OUT/scores/METHOD/KEY.npy in float32 or float16 (the "
        "layout eval-maps reads).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    request: SpecRequest = SpecRequest(),
) -> None:
    """Segment images or videos and detect anomalies; writes seg, heat, mask and overlay PNGs
    per image, an overlay video and per-frame JSON per video."""
    from hazardseg.deploy.predictor import open_predictor
    from hazardseg.inference.predict import PredictOptions, predict
    from hazardseg.models.checkpoint import open_checkpoint

    options = PredictOptions(
        threshold=threshold, every=every, save_scores=save_scores, progress=not quiet
    )
    options.check()
    source: object = onnx
    if backend == "torch" and checkpoint is not None:
        source = open_checkpoint(checkpoint, model)
    elif backend == "torch":
        source = None
    elif checkpoint is not None:
        raise HazardsegError("--checkpoint belongs to the torch backend; pass --onnx FILE")
    predictor = open_predictor(
        backend, method, source=source, request=request, run=RunOptions(state_path=state),
        threads=threads,
    )  # fmt: skip
    summary = predict(predictor, [str(p) for p in images], out, options)
    videos = f", {len(summary['videos'])} video(s)" if summary["videos"] else ""
    typer.echo(
        f"threshold {summary['threshold']:.4g} ({summary['threshold_source']}); "
        f"{len(summary['images'])} image(s){videos} -> {out}"
    )
    if summary["failed"]:
        first = summary["failed"][0]["path"]
        raise DataError(
            f"{len(summary['failed'])} image(s) could not be decoded and were skipped "
            f"(first: {first}); see {out / 'predictions.json'}"
        )


def ablate_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Base experiment config (YAML)."),
    grid: Path = typer.Option(..., "--grid", help="Grid file: variants (and seeds)."),
    out: Path = typer.Option(..., "--out", help="Output folder (resumable)."),
    data: Path | None = typer.Option(None, "--data", help="Dataset root (sets data.root)."),
    sets: list[str] = typer.Option([], "--set", help="Extra config override key=value."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (grid's default)."),
    method: str = typer.Option("max_logit", "--method", help="Anomaly method evaluated."),
) -> None:
    """Train and evaluate every variant of a grid over seeds; write a mean ± std table."""
    from hazardseg.config import load_config
    from hazardseg.workflows.ablation import load_grid, parse_seeds, run_ablation

    base = load_config(config)
    extra = list(sets) + ([f"data.root={data}"] if data is not None else [])
    doc = run_ablation(
        base,
        load_grid(grid),
        out,
        sets=extra,
        seeds=parse_seeds(seeds) if seeds is not None else None,
        method=method,
        say=typer.echo,
    )
    typer.echo((out / "ablation.md").read_text(encoding="utf-8"))
    typer.echo(f"{len(doc['runs'])} run(s); tables in {out}")


def demo_cmd(
    out: Path = typer.Option(Path("hazardseg-demo"), "--out", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="Smaller data, fewer epochs (~2 min)."),
    workers: int = typer.Option(0, "--workers", help="Data-loading / generation workers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty --out."),
) -> None:
    """Generate synthetic scenes, train, calibrate, evaluate, compare, visualize, report."""
    from hazardseg.workflows.demo import run_demo, summary_text

    summary = run_demo(out, quick=quick, workers=workers, overwrite=overwrite, say=typer.echo)
    typer.echo(summary_text(summary))


def register(app: typer.Typer) -> None:
    """Add visualize, predict, ablate and demo to the main app."""
    app.command("visualize")(visualize_cmd)
    app.command("predict")(predict_cmd)
    app.command("ablate")(ablate_cmd)
    app.command("demo")(demo_cmd)
