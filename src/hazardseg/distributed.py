"""The one torchrun module of hazardseg: process group, rank and world, sharding, collectives.

Training, evaluation, calibration and the metric accumulators all go through it.

A run is distributed when the torchrun environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are set with ``WORLD_SIZE`` > 1. CUDA runs
use the nccl backend (one GPU per process, ``cuda:LOCAL_RANK``), CPU runs use gloo. The
collectives here (:func:`all_reduce`, :func:`gather_objects`, :func:`broadcast_object`) move
tensors to the device the backend needs and back, so callers (accumulators on the logits'
device, small control tensors on the CPU) work inside an nccl-only group and a gloo group
alike. Every function is a no-op or identity outside a process group of more than one rank.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

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


def resolve_device(name: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """Turn a device setting ("auto"/None, "cpu", "cuda", "cuda:N") into a torch.device.

    "auto" is this rank's GPU when CUDA is available, else the CPU; a bare "cuda" means
    ``cuda:local_rank`` (one GPU per torchrun process).
    """
    if isinstance(name, torch.device):
        return name
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available; use cpu or auto")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        try:
            return torch.device(name)
        except RuntimeError:
            pass
    raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")


def setup(device: str | torch.device | None = "auto", timeout_s: float = 1800.0) -> DistContext:
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


def barrier(ctx: DistContext | None = None) -> None:
    """Wait until every rank reaches this point (``ctx`` None: the current process group)."""
    if not (ctx.enabled if ctx is not None else is_distributed()):
        return
    comm = _comm_device(ctx)
    if comm.type == "cuda":
        dist.barrier(device_ids=[comm.index])
    else:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks and return it (unchanged when single-process)."""
    return all_reduce(tensor, "sum") if ctx.enabled else tensor


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank, in place."""
    if ctx.enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


def broadcast_object(ctx: DistContext | None, obj: Any) -> Any:
    """Return rank 0's ``obj`` on every rank (``ctx`` None: the current process group)."""
    if not (ctx.enabled if ctx is not None else is_distributed()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device(ctx))
    return box[0]


def _comm_device(ctx: DistContext | None = None) -> torch.device:
    """The device collectives of the current group run on (this rank's GPU for nccl)."""
    if ctx is not None and ctx.backend is not None:
        backend = ctx.backend
    elif is_distributed():
        backend = str(dist.get_backend())
    else:
        return torch.device("cpu")
    if "nccl" in backend and "gloo" not in backend:
        if ctx is not None and ctx.device.type == "cuda":
            return ctx.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current(device: str | torch.device | None = None) -> DistContext:
    """The context of the process group this process is in (rank 0 of 1 when none)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if not is_distributed():
        return DistContext(device=dev)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        device=dev,
        backend=str(dist.get_backend()),
        owns_group=False,
    )


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def shard_indices(n: int, ctx: DistContext | None = None) -> list[int]:
    """Indices ``rank, rank + world, ...`` of ``n`` items: every item exactly once over ranks.

    Unlike DistributedSampler, no item is repeated to even out the shards, so metrics
    accumulated over the shards and summed across ranks cover the split exactly once.
    ``ctx`` defaults to the current process group.
    """
    r, w = (ctx.rank, ctx.world_size) if ctx is not None else (rank(), world_size())
    return list(range(r, n, w))


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all ranks (``op``: sum, min or max) and return it.

    The tensor may live on any device: it is moved to the backend's device for the
    collective and the result is copied back.
    """
    if not is_distributed():
        return tensor
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    comm = _comm_device()
    if tensor.device == comm:
        dist.all_reduce(tensor, op=ops[op])
        return tensor
    moved = tensor.to(comm)
    dist.all_reduce(moved, op=ops[op])
    tensor.copy_(moved)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (just ``[obj]`` when not distributed).

    Tensors inside ``obj`` should be on the CPU (accumulators move their state there first).
    """
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def init_from_env(device: str | torch.device | None = None) -> DistContext:
    """Join the torchrun process group (if launched by torchrun) and return the context.

    Inside an existing group (e.g. training validation) that group is used as it is.
    ``ctx.owns_group`` tells whether the group was created here (:func:`cleanup` destroys it).
    """
    if is_distributed():
        return current(resolve_device(device, int(os.environ.get("LOCAL_RANK", "0"))))
    return setup(device)
