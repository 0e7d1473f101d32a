"""A run's checkpoints and resume policy: the run directory checks, best.pt / last.pt, what a
resumed run may change, and restoring last.pt."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hazardseg import distributed
from hazardseg.config import (
    ExperimentConfig,
    config_to_dict,
    load_config,
    save_config,
)
from hazardseg.distributed import DistContext
from hazardseg.errors import CheckpointError, ConfigError
from hazardseg.models.checkpoint import (
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)
from hazardseg.models.rng import restore_rng_state
from hazardseg.run_folder import RunFolder
from hazardseg.training import rundir

RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "name",
        "data.root",
        "data.num_workers",
        "train.epochs",
        "train.device",
        "eval.batch_size",
        "train.log_every_iters",
        "train.num_threads",
    }
)
"""Config keys that may differ between a run and its resumption (the rest must match)."""


@dataclass
class RunState:
    """Progress counters saved in every checkpoint (plain values, weights_only-safe)."""

    epoch: int = 0
    """Epochs completed."""
    global_iter: int = 0
    best_miou: float = -math.inf
    best_epoch: int = 0
    best_iter: int = 0
    stopped_early: bool = False
    finished: bool = False
    elapsed_s: float = 0.0
    early_stopping: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict for the checkpoint's ``extra``."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(saved: ExperimentConfig, new: ExperimentConfig, path: Path) -> None:
    """Raise ConfigError when ``new`` changes a key outside :data:`RESUME_MAY_CHANGE`."""
    a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(new))
    for key in a:
        if key not in RESUME_MAY_CHANGE and a[key] != b.get(key):
            raise ConfigError(
                f"cannot resume {path}: {key} was {a[key]!r}, now {b.get(key)!r}; "
                "resume with the run's own config (drop --config) or start a new run"
            )


def check_out_dir(cfg: ExperimentConfig, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Raise when ``out_dir`` cannot take this run as asked (read-only): a run already there
    without ``resume``/``overwrite``, or, resuming, a config that changes what must not."""
    rundir.check_run_dir(out_dir, resume, overwrite)
    folder = RunFolder(out_dir)
    if resume and folder.config.is_file():
        check_resume_config(load_config(folder.config), cfg, out_dir)


def prepare_out_dir(
    cfg: ExperimentConfig, out_dir: Path, ctx: DistContext, resume: bool, overwrite: bool
) -> Path | None:
    """Check ``out_dir`` (every process), then clear it on ``overwrite`` and save the config
    (rank 0); return the last.pt to resume from, if any."""
    check_out_dir(cfg, out_dir, resume, overwrite)
    last = RunFolder(out_dir).last
    resume_from = last if resume and last.is_file() else None
    distributed.barrier(ctx)
    if ctx.is_main:
        if overwrite:
            rundir.clear_run_dir(out_dir)
        rundir.remove_stale_temp_files(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, RunFolder(out_dir).config)
    distributed.barrier(ctx)
    return resume_from


@dataclass
class Checkpointer:
    """Writes a run's best.pt (the weights) and last.pt (all a resume needs) from rank 0, and
    restores last.pt on resume."""

    out_dir: Path
    cfg: ExperimentConfig
    model: nn.Module
    """The model itself, not its DDP wrapper."""
    training: TrainingState
    precision: str
    """The run's precision label ("fp32", "bf16", "fp16"), recorded in every checkpoint."""
    class_names: list[str]
    ctx: DistContext

    def save_best(self, state: RunState) -> None:
        """Write best.pt and its dated copy ``best_<model>_<date>_miou<xx.xx>.pt`` (rank 0)."""
        if not self.ctx.is_main:
            return
        best = RunFolder(self.out_dir).best
        self._save(best, state, None)
        rundir.publish_best_copy(self.out_dir, best, self.cfg.model.name, state.best_miou)

    def save_last(self, state: RunState) -> None:
        """Write last.pt (rank 0), then wait for every process."""
        if self.ctx.is_main:
            self._save(RunFolder(self.out_dir).last, state, self.training)
        distributed.barrier(self.ctx)

    def _save(self, path: Path, state: RunState, training: TrainingState | None) -> None:
        save_checkpoint(
            path,
            self.model,
            model_name=self.cfg.model.name,
            class_names=self.class_names,
            config=config_to_dict(self.cfg),
            epoch=state.epoch,
            best_metric=state.best_miou if math.isfinite(state.best_miou) else None,
            training=training,
            rng=True,
            extra={
                "run_state": state.to_dict(),
                "precision": self.precision,
                "world_size": self.ctx.world_size,
            },
        )

    def restore(self, path: Path) -> RunState:
        """Load last.pt ``path`` into the model, optimiser, schedule and scaler, restore the
        random generators and return the run's state. The number of processes must match."""
        ckpt = load_checkpoint(path)
        world_size = self.ctx.world_size
        saved_world = int((ckpt.get("extra") or {}).get("world_size", world_size))
        if saved_world != world_size:
            # iterations per epoch, the poly schedule's length and the global batch all depend
            # on the number of processes: a different count cannot continue the same run
            raise ConfigError(
                f"{path}: this run was trained with {saved_world} process(es); resume it with "
                f"the same number (now {world_size})"
            )
        t = self.training
        try:
            self.model.load_state_dict(ckpt["model"])
            if ckpt.get("optimizer") is not None and t.optimizer is not None:
                t.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scheduler") is not None and t.scheduler is not None:
                t.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler") and t.scaler is not None:
                t.scaler.load_state_dict(ckpt["scaler"])
            state = RunState.from_dict(ckpt["extra"]["run_state"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({exc})") from None
        if ckpt.get("rng") is not None:
            restore_rng_state(ckpt["rng"])
        return state
