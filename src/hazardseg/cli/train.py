"""CLI command: ``hazardseg train`` (single process, or every rank under torchrun)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hazardseg.errors import ConfigError

if TYPE_CHECKING:
    from hazardseg.config import ExperimentConfig


def resolve_train_config(
    config: Path | None,
    data: str | None,
    overrides: list[str],
    out: Path,
    resume: bool,
    dataset: str | None = None,
    init: Path | None = None,
) -> ExperimentConfig:
    """The experiment config of a ``train`` call: ``--config`` (or, with ``--resume`` and no
    ``--config``, the run's own config.yaml), then ``--set`` overrides, then ``--data``,
    ``--dataset`` and ``--init``."""
    from hazardseg.config import load_config
    from hazardseg.run_folder import RunFolder

    sets = list(overrides)
    if data is not None:
        sets.append(f"data.root={json.dumps(str(data))}")
    if dataset is not None:
        sets.append(f"data.dataset={json.dumps(dataset)}")
    if init is not None:
        sets.append(f"train.init={json.dumps(str(init))}")
    if config is None:
        saved = RunFolder(out).config
        if not resume:
            raise ConfigError("missing --config FILE (e.g. configs/synthetic_cpu.yaml)")
        if not saved.is_file():
            raise ConfigError(f"{saved} not found: pass --config FILE to start this run")
        config = saved
    return load_config(config, sets)


def train(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Experiment YAML (see configs/). Optional with --resume."
    ),
    data: str | None = typer.Option(None, "--data", help="Dataset root (overrides data.root)."),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        metavar="NAME",
        help="Registered dataset at the root (overrides data.dataset; default streethazards).",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set train.lr=0.001 (repeatable)."
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        metavar="CKPT",
        help="Start from this checkpoint's weights (fine-tuning; sets train.init).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last.pt."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the training outputs already in --out and start again."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show progress bars and per-validation lines."
    ),
) -> None:
    """Train a segmentation model; writes checkpoints, metrics and TensorBoard logs to --out.

    Launch with torchrun (``torchrun --nproc_per_node N -m hazardseg train ...``) for
    multi-GPU or multi-node training.
    """
    from hazardseg import distributed
    from hazardseg.training import fit

    cfg = resolve_train_config(config, data, overrides, out, resume, dataset, init)
    result = fit(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    if distributed.launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        return
    best = result["best_miou"]
    best_txt = "n/a" if best is None else f"{100 * best:.2f}"
    typer.echo(
        f"best val mIoU {best_txt} (epoch {result['best_epoch']}), "
        f"{result['epochs_run']} epochs{' (stopped early)' if result['stopped_early'] else ''}; "
        f"best: {result['best_checkpoint']}, last: {result['last_checkpoint']}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the main app."""
    app.command("train")(train)
