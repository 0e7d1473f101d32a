"""What a run builds from its config: the data loaders and the model (DDP-wrapped under
torchrun)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from hazardseg import distributed
from hazardseg.config import ExperimentConfig, TrainConfig
from hazardseg.data.outliers import OutlierPaster, PasteThen
from hazardseg.data.registry import DatasetDef, get_dataset
from hazardseg.data.split import DataSource
from hazardseg.data.transforms import build_eval_transform, build_train_transform
from hazardseg.distributed import DistContext
from hazardseg.errors import CheckpointError, DataError
from hazardseg.models.checkpoint import open_checkpoint
from hazardseg.models.registry import create_model


@dataclass
class Loaders:
    """The training loader (with its sampler and generator, reseeded every epoch), this
    process's shard of the validation split, the training label files and the dataset."""

    train: DataLoader
    val: DataLoader
    sampler: DistributedSampler
    generator: torch.Generator
    label_paths: list[Path]
    dataset: DatasetDef

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Seed the shuffling and the data-loading workers' randomness of ``epoch``."""
        self.generator.manual_seed(seed)
        self.sampler.set_epoch(epoch)


def build_loaders(cfg: ExperimentConfig, ctx: DistContext) -> Loaders:
    """The loaders of ``cfg.data`` (completed by ``training.rules.complete_config``): training
    shuffled and split over the processes (``drop_last``), validation sharded without
    padding."""
    d = cfg.data
    assert d.root is not None and d.train_split is not None and d.val_split is not None
    source = DataSource.of(d.root, d.dataset)
    train_ds = source.open(
        d.train_split, build_train_transform(cfg.augment), max_images=d.max_train_images
    )
    if cfg.train.outliers.source != "none":
        paster = OutlierPaster(cfg.train.outliers, train_ds.samples)
        train_ds.transform = PasteThen(paster, train_ds.transform)
    val_ds = source.open(
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
    labels = [s.label_path for s in train_ds.samples if s.label_path is not None]
    return Loaders(train_loader, val_loader, sampler, generator, labels, source.dataset)


def model_options(cfg: ExperimentConfig) -> dict[str, int]:
    """The builder options the config sets (mask2former: ``num_queries``, ``decoder_layers``)."""
    keys = ("num_queries", "decoder_layers")
    return {k: getattr(cfg.model, k) for k in keys if getattr(cfg.model, k) is not None}


def _set_options(options: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(options or {}).items() if v is not None}


def init_weights(model: torch.nn.Module, cfg: ExperimentConfig) -> None:
    """Load ``cfg.train.init``'s weights into ``model`` (fine-tuning); CheckpointError in one
    line when the checkpoint holds another model or other classes."""
    assert cfg.train.init is not None
    ckpt = open_checkpoint(cfg.train.init, bare_as=cfg.model.name)
    names = list(get_dataset(cfg.data.dataset).class_names)
    if ckpt.model_name != cfg.model.name:
        raise CheckpointError(
            f"--init {cfg.train.init}: holds a {ckpt.model_name} model, but model.name is "
            f"{cfg.model.name}; fine-tune the same model"
        )
    if ckpt.num_classes != cfg.model.num_classes or (
        ckpt.class_names and list(ckpt.class_names) != names
    ):
        raise CheckpointError(
            f"--init {cfg.train.init}: its model predicts {ckpt.num_classes} classes "
            f"({', '.join((ckpt.class_names or [])[:3])}...), the run's dataset "
            f"{cfg.data.dataset} has {cfg.model.num_classes} ({', '.join(names[:3])}...); "
            "fine-tune on the classes the model was trained on"
        )
    own, theirs = model.state_dict(), ckpt.model.state_dict()
    differ = sorted(
        k for k in own.keys() | theirs.keys()
        if k not in own or k not in theirs or own[k].shape != theirs[k].shape
    )  # fmt: skip
    if differ:
        raise CheckpointError(
            f"--init {cfg.train.init}: its {ckpt.model_name} was built with options "
            f"{_set_options(ckpt.info.get('model_options'))}, the run's with "
            f"{model_options(cfg)} "
            f"({len(differ)} weights differ in shape, e.g. {differ[0]}); fine-tune with the "
            "checkpoint's model settings"
        )
    model.load_state_dict(theirs)


def set_bn_momentum(model: torch.nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; return how many."""
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
            n += 1
    return n


def build_model(cfg: ExperimentConfig, ctx: DistContext, *, init: bool = True) -> torch.nn.Module:
    """``cfg.model`` on this process's device (SyncBatchNorm and channels_last as configured),
    with ``train.init``'s weights when set and ``init`` (False when resuming: last.pt holds
    the weights)."""
    assert cfg.model.num_classes is not None
    model = create_model(
        cfg.model.name, cfg.model.num_classes, cfg.model.pretrained, **model_options(cfg)
    )
    if cfg.train.init and init:
        init_weights(model, cfg)
    if cfg.train.bn_momentum is not None:
        set_bn_momentum(model, cfg.train.bn_momentum)
    if ctx.enabled and cfg.train.sync_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if uses_channels_last(cfg.train, ctx):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_channels_last(cfg: TrainConfig, ctx: DistContext) -> bool:
    """Whether the run keeps images and weights in channels_last memory format (CUDA only)."""
    return ctx.device.type == "cuda" and cfg.channels_last


def wrap_for_processes(
    model: torch.nn.Module, cfg: TrainConfig, ctx: DistContext
) -> torch.nn.Module:
    """``model`` in DistributedDataParallel under torchrun, else itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    # an aux head whose loss weight is 0 gets no gradient: DDP must be told
    unused = bool(getattr(model, "has_aux", False)) and cfg.aux_weight == 0
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
