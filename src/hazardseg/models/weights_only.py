"""``torch.load`` with ``weights_only=True``: the one loader of checkpoints, weights files and
anomaly state files, turning every failure into a one-line CheckpointError."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from hazardseg.errors import CheckpointError


def load_weights_only(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with one-line CheckpointErrors
    naming the file and saying what happened: not found, not a regular file, a file that
    would run code when loaded (pickled Python objects), corrupt or truncated. ``what`` names
    the kind of file in the messages (e.g. "anomaly state file")."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise CheckpointError(f"{path}: a folder or special file, not a {what}")
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        lowered = text.lower()
        if "unsupported global" in lowered or "allowed global" in lowered:
            found = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", text, re.I)
            detail = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: refused: a file that would run code when loaded (it contains pickled "
                f"Python objects{detail}, which a plain torch.load executes); hazardseg loads "
                f"every {what} with weights_only=True and only accepts tensors and plain values"
            ) from exc
        detail = _torch_detail(text) or type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupt or truncated {what}, or not a PyTorch file ({detail})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = _torch_detail(str(exc)) or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({first})") from exc
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to load this {what}") from None


def _torch_detail(text: str) -> str:
    """The informative line of a torch.load error, without torch's advice about weights_only."""
    text = text.split("WeightsUnpickler error:")[-1]
    for line in text.strip().splitlines():
        line = line.split("  Check the documentation")[0].strip()
        low = line.lower()
        if not line or "weights_only" in low or "check the documentation" in low:
            continue
        return line
    return ""
