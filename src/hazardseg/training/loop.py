"""``fit``: train a segmentation model, validate, checkpoint, resume; single process or torchrun."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from hazardseg import distributed
from hazardseg.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.distributed import DistContext
from hazardseg.errors import CheckpointError, ConfigError, DataError
from hazardseg.io import atomic_write_json
from hazardseg.training import losses, rundir
from hazardseg.training.metrics_log import MetricsLog
from hazardseg.training.schedule import (
    OPTIMIZERS,
    SCHEDULERS,
    EarlyStopping,
    Scheduler,
    build_optimizer,
)
from hazardseg.training.steps import (
    AMP_MODES,
    Precision,
    epoch_seed,
    resolve_precision,
    seed_everything,
    train_step,
    validate,
)

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


def class_names_for(num_classes: int) -> list[str]:
    """StreetHazards names for 13 classes, else ``class_<i>``."""
    if num_classes == len(KNOWN_CLASS_NAMES):
        return list(KNOWN_CLASS_NAMES)
    return [f"class_{i}" for i in range(num_classes)]


def validate_config(cfg: ExperimentConfig) -> None:
    """Raise ConfigError/DataError/HazardsegError for settings that cannot train."""
    from hazardseg.models import get_model_spec

    spec = get_model_spec(cfg.model.name)
    t = cfg.train
    if spec.family in ("deeplabv3", "deeplabv3plus") and t.batch_size < 2 and not t.sync_bn:
        # ASPP's image-pooling branch applies BatchNorm to a 1x1 map: one image per step
        # leaves a single value per channel, which BatchNorm cannot normalise in training
        raise ConfigError(
            f"train.batch_size={t.batch_size}: {cfg.model.name} needs at least 2 images per "
            "process (BatchNorm in the ASPP pooling branch); raise it or set train.sync_bn=true"
        )
    if cfg.data.root is None or not str(cfg.data.root).strip():
        raise ConfigError("data.root is not set: pass --data ROOT or set data.root in the config")
    if not Path(cfg.data.root).is_dir():
        raise DataError(f"data root {cfg.data.root} not found; expected a StreetHazards folder")
    checks = [
        (t.epochs >= 1, "train.epochs", t.epochs, ">= 1"),
        (t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1"),
        (t.lr > 0, "train.lr", t.lr, "> 0"),
        (t.val_every_epochs >= 1, "train.val_every_epochs", t.val_every_epochs, ">= 1"),
        (t.log_every_iters >= 1, "train.log_every_iters", t.log_every_iters, ">= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, ">= 0"),
        (cfg.eval.batch_size >= 1, "eval.batch_size", cfg.eval.batch_size, ">= 1"),
        (
            t.val_every_iters is None or t.val_every_iters >= 1,
            "train.val_every_iters",
            t.val_every_iters,
            ">= 1 or null",
        ),
        (
            t.max_iters_per_epoch is None or t.max_iters_per_epoch >= 1,
            "train.max_iters_per_epoch",
            t.max_iters_per_epoch,
            ">= 1 or null",
        ),
        (t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", t.grad_clip, "> 0 or null"),
        (cfg.model.num_classes >= 1, "model.num_classes", cfg.model.num_classes, ">= 1"),
        (
            t.bn_momentum is None or 0 < t.bn_momentum <= 1,
            "train.bn_momentum",
            t.bn_momentum,
            "in (0, 1] or null",
        ),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    for key, value, options in (
        ("train.optimizer", t.optimizer, OPTIMIZERS),
        ("train.scheduler", t.scheduler, SCHEDULERS),
        ("train.amp", t.amp, AMP_MODES),
    ):
        if value.lower() not in options:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(options)}")
    EarlyStopping(t.early_stopping_patience, t.early_stopping_min_delta)
    if t.class_weights and t.class_weight_method not in losses.WEIGHT_METHODS:
        raise ConfigError(
            f"train.class_weight_method={t.class_weight_method!r}: expected one of "
            f"{', '.join(losses.WEIGHT_METHODS)}"
        )


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


def fit(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` and write the run directory ``out_dir``.

    Returns ``best_miou``, ``best_epoch``, ``epochs_run``, ``stopped_early``,
    ``best_checkpoint`` and ``last_checkpoint``. Under torchrun every rank calls this; only
    rank 0 writes files.
    """
    threads = torch.get_num_threads()
    if cfg.train.num_threads is not None:
        if cfg.train.num_threads < 1:
            raise ConfigError(f"train.num_threads={cfg.train.num_threads}: expected >= 1 or null")
        torch.set_num_threads(cfg.train.num_threads)
    ctx = distributed.setup(cfg.train.device)
    try:
        return _fit(cfg, Path(out_dir), ctx, resume, overwrite, progress)
    finally:
        distributed.cleanup(ctx)
        torch.set_num_threads(threads)


def _loaders(
    cfg: ExperimentConfig, ctx: DistContext
) -> tuple[DataLoader, DataLoader, DistributedSampler, torch.Generator, list[Path]]:
    from hazardseg.data.streethazards import StreetHazards
    from hazardseg.data.transforms import build_eval_transform, build_train_transform

    d = cfg.data
    train_ds = StreetHazards(
        d.root, d.train_split, build_train_transform(cfg.augment), max_images=d.max_train_images
    )
    val_ds = StreetHazards(
        d.root,
        d.val_split,
        build_eval_transform(cfg.eval.resize, at_label_resolution=cfg.eval.at_label_resolution),
        max_images=d.max_val_images,
    )
    per_step = cfg.train.batch_size * ctx.world_size
    if len(train_ds) < per_step:
        raise DataError(
            f"{d.root}: split {d.train_split!r} has {len(train_ds)} images, fewer than one step "
            f"(train.batch_size {cfg.train.batch_size} x {ctx.world_size} processes)"
        )
    sampler = DistributedSampler(
        train_ds,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=True,
    )
    generator = torch.Generator()
    pin = ctx.device.type == "cuda"
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=d.num_workers,
        drop_last=True,
        pin_memory=pin,
        generator=generator,
    )
    val_loader = DataLoader(
        Subset(val_ds, distributed.shard_indices(len(val_ds), ctx)),
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=d.num_workers,
        pin_memory=pin,
    )
    labels = [s.label_path for s in train_ds.samples]
    return train_loader, val_loader, sampler, generator, labels


def _class_weights(
    cfg: ExperimentConfig, out_dir: Path, labels: list[Path], ctx: DistContext
) -> torch.Tensor | None:
    if not cfg.train.class_weights:
        return None
    method, n = cfg.train.class_weight_method, cfg.model.num_classes
    weights = None
    if ctx.is_main:
        cache = out_dir / "class_weights.json"
        cached = losses.read_class_weight_cache(cache, method, len(labels), n)
        if cached is None:
            record = losses.class_weight_record(labels, n, method)
            atomic_write_json(cache, record)
            weights = record["weights"]
        else:
            weights = cached.tolist()
    weights = distributed.broadcast_object(ctx, weights)
    return torch.tensor(weights, dtype=torch.float32)


def set_bn_momentum(model: torch.nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; return how many."""
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
            n += 1
    return n


def _build_model(cfg: ExperimentConfig, ctx: DistContext) -> torch.nn.Module:
    from hazardseg.models import create_model

    model = create_model(cfg.model.name, cfg.model.num_classes, cfg.model.pretrained)
    if cfg.train.bn_momentum is not None:
        set_bn_momentum(model, cfg.train.bn_momentum)
    if ctx.enabled and cfg.train.sync_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if ctx.device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _check_dir(cfg: ExperimentConfig, out_dir: Path, resume: bool, overwrite: bool) -> None:
    rundir.check_run_dir(out_dir, resume, overwrite)
    if resume and (out_dir / "config.yaml").is_file():
        check_resume_config(load_config(out_dir / "config.yaml"), cfg, out_dir)


def _prepare_dir(
    cfg: ExperimentConfig, out_dir: Path, ctx: DistContext, resume: bool, overwrite: bool
) -> Path | None:
    """Check (every rank, read-only), then clear/save config (rank 0); return the resume file."""
    _check_dir(cfg, out_dir, resume, overwrite)
    last = out_dir / "last.pt"
    resume_from = last if resume and last.is_file() else None
    distributed.barrier(ctx)
    if ctx.is_main:
        if overwrite:
            rundir.clear_run_dir(out_dir)
        rundir.remove_stale_temp_files(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    distributed.barrier(ctx)
    return resume_from


def _checkpoint_extra(state: RunState, precision: Precision, world_size: int) -> dict[str, Any]:
    return {"run_state": state.to_dict(), "precision": precision.label, "world_size": world_size}


def _save(
    path: Path,
    model: torch.nn.Module,
    cfg: ExperimentConfig,
    state: RunState,
    precision: Precision,
    class_names: list[str],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Scheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    world_size: int = 1,
) -> None:
    from hazardseg.models.checkpoint import TrainingState, save_checkpoint

    save_checkpoint(
        path,
        model,
        model_name=cfg.model.name,
        class_names=class_names,
        config=config_to_dict(cfg),
        epoch=state.epoch,
        best_metric=state.best_miou if math.isfinite(state.best_miou) else None,
        training=TrainingState(optimizer, scheduler, scaler),
        rng=True,
        extra=_checkpoint_extra(state, precision, world_size),
    )


def _restore(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    world_size: int = 1,
) -> RunState:
    from hazardseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    saved_world = int((ckpt.get("extra") or {}).get("world_size", world_size))
    if saved_world != world_size:
        # iterations per epoch, the poly schedule's length and the global batch all depend on
        # the number of processes: a different count cannot continue the same run
        raise ConfigError(
            f"{path}: this run was trained with {saved_world} process(es); resume it with "
            f"the same number (now {world_size})"
        )
    try:
        model.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = RunState.from_dict(ckpt["extra"]["run_state"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot resume from this checkpoint ({exc})") from None
    if ckpt.get("rng") is not None:
        from hazardseg.models.checkpoint import restore_rng_state

        restore_rng_state(ckpt["rng"])
    del ckpt
    return state


def _fit(
    cfg: ExperimentConfig,
    out_dir: Path,
    ctx: DistContext,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> dict[str, Any]:
    cfg = config_from_dict(config_to_dict(cfg))  # private, validated copy
    validate_config(cfg)
    precision = resolve_precision(cfg.train, ctx.device)

    _check_dir(cfg, out_dir, resume, overwrite)  # fail fast, before any heavy work
    t = cfg.train
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    elif ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(t.seed)
    # Data and model errors (missing split, missing pretrained weights) surface before
    # anything is written to the run directory.
    train_loader, val_loader, sampler, generator, labels = _loaders(cfg, ctx)
    model = _build_model(cfg, ctx)
    resume_from = _prepare_dir(cfg, out_dir, ctx, resume, overwrite)
    weights = _class_weights(cfg, out_dir, labels, ctx)
    raw_model = model
    criterion = losses.SegmentationLoss(cfg.model.num_classes, t.aux_weight, weights)
    criterion = criterion.to(ctx.device)
    iters_per_epoch = len(train_loader)
    if t.max_iters_per_epoch is not None:
        iters_per_epoch = min(iters_per_epoch, t.max_iters_per_epoch)
    optimizer = build_optimizer(raw_model.parameters(), t)
    scheduler = Scheduler(optimizer, t, total_iters=t.epochs * iters_per_epoch)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision.needs_scaler)
    stopper = EarlyStopping(t.early_stopping_patience, t.early_stopping_min_delta)
    state = RunState()
    if resume_from is not None:
        state = _restore(
            resume_from,
            raw_model,
            optimizer,
            scheduler,
            scaler,
            ctx.device,
            world_size=ctx.world_size,
        )
        if state.early_stopping:
            stopper.load_state_dict(state.early_stopping)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        # an aux head whose loss weight is 0 gets no gradient: DDP must be told
        unused = bool(getattr(raw_model, "has_aux", False)) and t.aux_weight == 0
        model = DistributedDataParallel(raw_model, device_ids=ids, find_unused_parameters=unused)

    class_names = class_names_for(cfg.model.num_classes)
    log = None
    if ctx.is_main:
        rows = MetricsLog.read_rows(out_dir / "metrics.jsonl", up_to_iteration=state.global_iter)
        log = MetricsLog(
            out_dir, class_names, rows=rows, tb_dir=out_dir / "tb", purge_step=state.global_iter
        )
    run = _Run(
        cfg,
        out_dir,
        ctx,
        precision,
        model,
        raw_model,
        criterion,
        optimizer,
        scheduler,
        scaler,
        stopper,
        state,
        log,
        class_names,
        iters_per_epoch,
        progress,
    )
    try:
        run.train(train_loader, val_loader, sampler, generator)
    finally:
        if log is not None:
            log.close()
    return run.summary()


class _Run:
    """The epoch loop of one :func:`fit` call (state shared by its steps)."""

    def __init__(self, cfg, out_dir, ctx, precision, model, raw_model, criterion, optimizer,
                 scheduler, scaler, stopper, state, log, class_names, iters_per_epoch,
                 progress) -> None:  # fmt: skip
        self.cfg, self.t = cfg, cfg.train
        self.out_dir, self.ctx, self.precision = out_dir, ctx, precision
        self.model, self.raw_model, self.criterion = model, raw_model, criterion
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.stopper: EarlyStopping = stopper
        self.state: RunState = state
        self.log: MetricsLog | None = log
        self.class_names = class_names
        self.iters_per_epoch = iters_per_epoch
        self.progress = progress and ctx.is_main
        self.channels_last = ctx.device.type == "cuda" and cfg.train.channels_last
        self.start = time.monotonic() - state.elapsed_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train(self, train_loader, val_loader, sampler, generator) -> None:
        t, state = self.t, self.state
        if state.finished and (state.stopped_early or state.epoch >= t.epochs):
            self._say(f"{self.out_dir}: run already finished ({state.epoch} epochs)")
            return
        state.finished = False
        while state.epoch < t.epochs and not state.stopped_early:
            epoch = state.epoch + 1
            seed = epoch_seed(t.seed, epoch, self.ctx.rank)
            seed_everything(seed)
            generator.manual_seed(seed)
            sampler.set_epoch(epoch)
            val_at_end = epoch % t.val_every_epochs == 0 or epoch == t.epochs
            self._train_epoch(epoch, train_loader, val_loader, val_at_end)
            if val_at_end and not state.stopped_early:
                self._validate(epoch, val_loader)
            state.epoch = epoch
            state.finished = state.epoch >= t.epochs or state.stopped_early
            self._save_last()
        if not state.finished:  # resumed with train.epochs at or below the epochs already run
            state.finished = True
            self._save_last()

    def _train_epoch(self, epoch: int, train_loader, val_loader, val_at_end: bool) -> None:
        t, state = self.t, self.state
        self.model.train()
        bar = tqdm(
            total=self.iters_per_epoch,
            desc=f"epoch {epoch}/{t.epochs}",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        n_loss, n_images, tick = 0, 0, time.monotonic()
        for i, batch in enumerate(train_loader):
            if i >= self.iters_per_epoch:
                break
            loss = train_step(
                self.model, batch, self.criterion, self.optimizer, self.scaler, self.precision,
                self.ctx.device, t.grad_clip, self.channels_last,
            )  # fmt: skip
            lr = self.lr()
            self.scheduler.step_iteration()
            state.global_iter += 1
            loss_sum += loss.double()
            n_loss += 1
            n_images += batch["image"].shape[0] * self.ctx.world_size
            bar.update(1)
            last = i + 1 == self.iters_per_epoch
            if state.global_iter % t.log_every_iters == 0 or last:
                mean_loss = float(distributed.all_reduce_sum(self.ctx, loss_sum.clone())) / (
                    n_loss * self.ctx.world_size
                )
                if not math.isfinite(mean_loss):
                    raise ConfigError(
                        f"training loss became {mean_loss} at iteration {state.global_iter}; "
                        f"lower train.lr (now {t.lr}) or enable train.grad_clip"
                    )
                ips = n_images / max(time.monotonic() - tick, 1e-9)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
                self._log(
                    {
                        "kind": "train",
                        "epoch": epoch,
                        "iteration": state.global_iter,
                        "loss": mean_loss,
                        "lr": lr,
                        "images_per_s": ips,
                        "time_s": self.elapsed(),
                    }
                )
                loss_sum.zero_()
                n_loss, n_images, tick = 0, 0, time.monotonic()
            if (
                t.val_every_iters
                and state.global_iter % t.val_every_iters == 0
                and not (last and val_at_end)
            ):
                self._validate(epoch, val_loader)
                self.model.train()
                if state.stopped_early:
                    break
        bar.close()

    def _validate(self, epoch: int, val_loader) -> None:
        state = self.state
        # every rank scores its shard with rank 0's BatchNorm statistics, i.e. with the model
        # that best.pt will hold
        distributed.broadcast_buffers(self.ctx, self.raw_model)
        batches = tqdm(
            val_loader, desc="validation", disable=not self.progress, dynamic_ncols=True,
            leave=False,
        )  # fmt: skip
        cm = validate(
            self.raw_model, batches, self.cfg.model.num_classes, self.ctx.device,
            self.precision, self.ctx, self.channels_last,
        )  # fmt: skip
        result = cm.to_dict(self.class_names)
        miou = result["miou"] if result["miou"] is not None else float("nan")
        self._log(
            {
                "kind": "val",
                "epoch": epoch,
                "iteration": state.global_iter,
                **result,
                "time_s": self.elapsed(),
            }
        )
        self.scheduler.step_validation(miou)
        self.stopper.step(miou)
        if math.isfinite(miou) and miou > state.best_miou:
            state.best_miou, state.best_epoch, state.best_iter = miou, epoch, state.global_iter
            self._save_best(epoch)
        if self.stopper.should_stop:
            state.stopped_early = True
        self._say(
            f"epoch {epoch} iter {state.global_iter}: val mIoU {100 * miou:.2f} "
            f"(best {100 * state.best_miou:.2f} at epoch {state.best_epoch})"
            + (" - early stop" if state.stopped_early else "")
        )

    def _say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

    def _log(self, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.log(row)

    def _snapshot(self, epoch: int) -> RunState:
        snap = RunState.from_dict(self.state.to_dict())
        snap.epoch = epoch
        snap.elapsed_s = self.elapsed()
        snap.early_stopping = self.stopper.state_dict()
        return snap

    def _save_best(self, epoch: int) -> None:
        if not self.ctx.is_main:
            return
        best = self.out_dir / "best.pt"
        _save(best, self.raw_model, self.cfg, self._snapshot(epoch), self.precision,
              self.class_names, world_size=self.ctx.world_size)  # fmt: skip
        rundir.publish_best_copy(self.out_dir, best, self.cfg.model.name, self.state.best_miou)

    def _save_last(self) -> None:
        self.state.elapsed_s = self.elapsed()
        self.state.early_stopping = self.stopper.state_dict()
        if self.ctx.is_main:
            assert self.log is not None
            self.log.flush()
            _save(
                self.out_dir / "last.pt", self.raw_model, self.cfg, self.state, self.precision,
                self.class_names, self.optimizer, self.scheduler, self.scaler,
                self.ctx.world_size,
            )  # fmt: skip
        distributed.barrier(self.ctx)

    def summary(self) -> dict[str, Any]:
        s = self.state
        best = self.out_dir / "best.pt"
        return {
            "best_miou": s.best_miou if math.isfinite(s.best_miou) else None,
            "best_epoch": s.best_epoch,
            "epochs_run": s.epoch,
            "stopped_early": s.stopped_early,
            "best_checkpoint": str(best) if best.is_file() else None,
            "last_checkpoint": str(self.out_dir / "last.pt"),
        }
