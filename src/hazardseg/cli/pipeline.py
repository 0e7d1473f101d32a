"""CLI commands: ``visualize``, ``predict``, ``ablate`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from hazardseg.cli.evaluate import TTA_HELP, spec_flags
from hazardseg.errors import DataError, HazardsegError


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HazardsegError(f"--indices {text!r}: expected comma-separated integers") from None


def visualize_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file (.pt)."),
    data: Path = typer.Option(..., "--data", help="Dataset root (StreetHazards layout)."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    out: Path = typer.Option(..., "--out", help="Output folder for the PNG panels."),
    samples: int = typer.Option(6, "--samples", help="Number of samples to draw."),
    indices: str | None = typer.Option(
        None, "--indices", help="Comma-separated sample indices (overrides --samples)."
    ),
    method: str = typer.Option("max_logit", "--method", help="Anomaly method."),
    select: str = typer.Option("even", "--select", help="even, best or worst."),
    by: str = typer.Option("miou", "--by", help="Ranking for best/worst: miou or ap."),
    model: str | None = typer.Option(None, "--model", help="Model name (bare state dicts)."),
    resize: str | None = typer.Option(
        None, "--resize", help="Input resize policy (default: the checkpoint's eval.resize)."
    ),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Also write a comparison grid."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file whose eval: section sets the spec."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: str | None = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16."),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP),
) -> None:
    """Draw per-sample panels (input, ground truth, prediction, errors, anomaly maps)."""
    from hazardseg.inference.visualize import visualize

    summary = visualize(
        checkpoint,
        data,
        split,
        out,
        samples=samples,
        indices=_indices(indices),
        method=method,
        select=select,
        by=by,
        model_name=model,
        grid=grid,
        **spec_flags(config, resize=resize, device=device, precision=precision, tta=tta),
    )
    for row in summary["samples"]:
        miou = "n/a" if row["miou"] is None else f"{100 * row['miou']:.1f}"
        typer.echo(f"#{row['index']}: mIoU {miou} -> {row['panel']}")
    if summary["grid"]:
        typer.echo(f"grid: {summary['grid']}")


def predict_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    images: list[Path] = typer.Argument(
        ..., help="Image files or folders (PNG/JPEG), or videos (mp4/avi/mkv/mov/webm)."
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint file (.pt); required by the torch backend."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    method: str = typer.Option("max_logit", "--method", help="Anomaly method."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Detection threshold (default: the calibrated one)."
    ),
    model: str | None = typer.Option(None, "--model", help="Model name (bare state dicts)."),
    resize: str | None = typer.Option(
        None, "--resize", help="Input resize policy (default: the checkpoint's eval.resize)."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file whose eval: section sets the spec."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (GPU if available), cpu, cuda, cuda:1 ..."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Images of one size per forward pass."
    ),
    precision: str | None = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16."),
    tta: str | None = typer.Option(None, "--tta", help=TTA_HELP),
    state: Path | None = typer.Option(
        None, "--state", help="Anomaly state file (default: anomaly_state.pt beside CKPT)."
    ),
    backend: str = typer.Option(
        "torch", "--backend", help="torch (the checkpoint) or onnxruntime (--onnx MODEL)."
    ),
    onnx: Path | None = typer.Option(
        None, "--onnx", help="Graph from `hazardseg export` (--backend onnxruntime)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="onnxruntime intra-op threads (default: all cores)."
    ),
    every: int = typer.Option(1, "--every", help="Videos: process every N-th frame."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar for videos."),
) -> None:
    """Segment images or videos and detect anomalies; writes seg, heat, mask and overlay PNGs
    per image, an overlay video and per-frame JSON per video."""
    from hazardseg.inference.predict import predict

    summary = predict(
        checkpoint,
        [str(p) for p in images],
        out,
        method=method,
        threshold=threshold,
        model_name=model,
        state_path=state,
        backend=backend,
        onnx=onnx,
        threads=threads,
        every=every,
        progress=not quiet,
        **spec_flags(
            config,
            resize=resize,
            device=device,
            batch_size=batch_size,
            precision=precision,
            tta=tta,
        ),
    )
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
