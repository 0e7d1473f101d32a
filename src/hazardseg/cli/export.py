"""CLI command: ``hazardseg export`` writes a checkpoint as one ONNX graph (uint8 RGB in;
logits, class map, confidence and anomaly scores out), checked with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hazardseg.errors import HazardsegError


def export_cmd(  # noqa: PLR0913  (typer: one parameter per option)
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="hazardseg checkpoint or state dict (then --model)."
    ),
    out: Path = typer.Option(..., "--out", help="The .onnx file to write."),
    method: list[str] = typer.Option(
        [],
        "--method",
        help="Anomaly score output(s): msp, max_logit, energy, entropy, sml, or all "
        "(repeatable or comma-separated). sml reads its fitted statistics from the anomaly "
        "state file.",
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Method option METHOD.KEY=VALUE, e.g. energy.temperature=2."
    ),
    height: int | None = typer.Option(
        None,
        "--height",
        min=16,
        help="Fixed input height (default: the checkpoint's eval resize WxH, else 720x1280).",
    ),
    width: int | None = typer.Option(None, "--width", min=16, help="Fixed input width."),
    dynamic: bool = typer.Option(
        False,
        "--dynamic",
        help="Accept any input size; --height/--width then set the tracing size "
        "(default 200x264; keep it off multiples of 32).",
    ),
    opset: int = typer.Option(18, "--opset", min=1, help="ONNX opset (18 or newer)."),
    model: str | None = typer.Option(None, "--model", help="Model name for a bare state dict."),
    state: Path | None = typer.Option(
        None, "--state", help="Anomaly state file (default: anomaly_state.pt beside CKPT)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=0, help="onnxruntime threads for the check (default: all)."
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", min=0.0, help="Largest accepted logits max abs difference."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a checkpoint to ONNX with the anomaly scores inside the graph.

    Input "image": uint8 (N, H, W, 3) RGB; outputs "logits", "class_map", "confidence" and
    "score_<method>" per --method. The export is run with onnxruntime on sample images and
    refused when its logits differ from PyTorch by more than --tolerance (1e-4).
    """
    from hazardseg.cli.evaluate import parse_method_options
    from hazardseg.deploy.onnx_export import ExportOptions, export_checkpoint

    if out.suffix.lower() != ".onnx":
        raise HazardsegError(f"--out {out}: expected a file name ending in .onnx")
    if (height is None) != (width is None):
        raise HazardsegError(
            f"give both --height and --width, or neither (got height={height}, width={width})"
        )
    options = ExportOptions(
        height=height,
        width=width,
        dynamic=dynamic,
        opset=opset,
        threads=threads or None,
        logits_tolerance=tolerance,
    )
    from hazardseg.models.checkpoint import open_checkpoint

    report = export_checkpoint(
        open_checkpoint(checkpoint, model),
        out,
        options=options,
        methods=method,
        state_path=state,
        method_options=parse_method_options(option),
    )
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("export")(export_cmd)
