"""torchrun integration: detect a multi-process launch, pick the backend and device, sync ranks.

A run is distributed when the torchrun environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are set with ``WORLD_SIZE`` > 1. CUDA runs
use the nccl backend (one GPU per process, ``cuda:LOCAL_RANK``), CPU runs use gloo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from hazardseg.errors import ConfigError

TORCHRUN_VARS: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False
    """True when :func:`setup` created the process group (and :func:`cleanup` destroys it)."""

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files, logs and progress bars (rank 0)."""
        return self.rank == 0


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Return True when the torchrun variables describe a run of more than one process."""
    env = os.environ if env is None else env
    if not all(k in env for k in TORCHRUN_VARS):
        return False
    try:
        return int(env["WORLD_SIZE"]) > 1
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={env['WORLD_SIZE']!r}: expected an integer") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Turn a config device string ("auto", "cpu", "cuda", "cuda:N") into a torch.device."""
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available; use cpu or auto")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(name)
    raise ConfigError(f"train.device={name!r}: expected auto, cpu, cuda or cuda:N")


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Initialise the process group when launched by torchrun; return this process's context.

    Outside torchrun (or with one process) nothing is initialised and rank 0 of 1 is returned.
    """
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=dev,
        backend=backend,
        owns_group=owns,
    )


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group created by :func:`setup` (no-op for single-process runs)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank reaches this point."""
    if ctx.enabled:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks and return it (unchanged when single-process)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank, in place."""
    if ctx.enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


def all_ranks_ok(ctx: DistContext, ok: bool) -> bool:
    """Return True only if ``ok`` holds on every rank (lets all ranks fail together)."""
    if not ctx.enabled:
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=_comm_device(ctx))
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return int(flag.item()) == 0


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Return rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device(ctx))
    return box[0]


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def shard_indices(n: int, ctx: DistContext) -> list[int]:
    """Indices ``rank, rank + world, ...`` of ``n`` items: every item exactly once over ranks.

    Unlike DistributedSampler, no item is repeated to even out the shards, so metrics
    accumulated over the shards and summed across ranks cover the split exactly once.
    """
    return list(range(ctx.rank, n, ctx.world_size))
