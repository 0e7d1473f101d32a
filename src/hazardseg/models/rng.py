"""The random generators' states (torch, numpy, Python, CUDA) as plain values a checkpoint
can hold, and their restoration on resume."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Torch, numpy, python ``random`` (and CUDA when available) RNG states as plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(ckpt: Mapping[str, Any]) -> bool:
    """Restore the RNG states saved in ``ckpt`` (a checkpoint dict or its ``"rng"`` entry).

    Returns False when the checkpoint holds no RNG state.
    """
    rng = ckpt.get("rng", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(rng, Mapping) or "torch" not in rng:
        return False
    torch.set_rng_state(rng["torch"])
    npy = rng["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in rng and torch.cuda.is_available():
        cuda_states = list(rng["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    return True
