"""Locate and load pretrained backbone weights from local caches only (never downloads)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hazardseg.errors import CheckpointError, HazardsegError


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's ImageNet weights live: a torch hub file or a Hugging Face hub file."""

    filename: str
    url: str
    repo_id: str | None = None
    """Hugging Face repository (None: a torch hub checkpoint file)."""
    revision: str | None = None

    @property
    def is_hf(self) -> bool:
        return self.repo_id is not None


def torch_hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's own cache of downloaded checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``), read at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def expected_location(source: WeightsSource) -> Path:
    """The exact path where ``source`` must be for ``pretrained="imagenet"`` to find it."""
    if not source.is_hf:
        return torch_hub_checkpoints_dir() / source.filename
    repo_dir = "models--" + str(source.repo_id).replace("/", "--")
    snapshot = source.revision or "main"
    return hf_hub_cache_dir() / repo_dir / "snapshots" / snapshot / source.filename


def find_cached(source: WeightsSource) -> Path | None:
    """The cached weights file for ``source``, or None when it is not on this machine."""
    path = expected_location(source)
    if path.is_file():
        return path
    if source.is_hf:
        # Any snapshot of the repository holding the file is acceptable (e.g. fetched via refs).
        snapshots = path.parent.parent
        if snapshots.is_dir():
            for candidate in sorted(snapshots.glob(f"*/{source.filename}")):
                if candidate.is_file():
                    return candidate
    return None


def missing_weights_message(model_name: str, source: WeightsSource) -> str:
    """One-line explanation of which file to download and where to put it."""
    target = expected_location(source)
    hub = ""
    if source.is_hf:
        rev = f" --revision {source.revision}" if source.revision else ""
        hub = f" (or run: huggingface-cli download {source.repo_id} {source.filename}{rev})"
    return (
        f"{model_name}: pretrained='imagenet' needs {source.filename!r} in {target.parent}, "
        f"but it is not there (hazardseg never downloads); download {source.url} and save it as "
        f"{target}{hub}, or pass the file path as pretrained=PATH, or use pretrained=None"
    )


def resolve_weights_path(pretrained: str, model_name: str, source: WeightsSource | None) -> Path:
    """Turn ``pretrained`` ("imagenet" or a file path) into an existing local file path."""
    if pretrained == "imagenet":
        if source is None:
            raise HazardsegError(f"{model_name}: no ImageNet backbone weights are known")
        found = find_cached(source)
        if found is None:
            raise HazardsegError(missing_weights_message(model_name, source))
        return found
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise HazardsegError(
            f"{model_name}: pretrained={pretrained!r} is neither 'imagenet' nor an existing "
            "weights file"
        )
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a weights file (.safetensors, or a torch file loaded with weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            from hazardseg.models.weights_only import load_weights_only

            state = load_weights_only(path, "weights file")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return dict(state)


def check_state_keys(
    own: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    mismatch: str,
    weight: str,
    tolerated_missing: tuple[str, ...] = (),
) -> list[str]:
    """Raise CheckpointError unless ``state`` has exactly ``own``'s keys and shapes.

    ``mismatch`` starts the key-mismatch message ("FILE: state dict does not match NAME"),
    ``weight`` the shape message ("FILE: backbone weight"). Missing keys starting with one of
    ``tolerated_missing`` are allowed and returned.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    tolerated = [k for k in missing if tolerated_missing and k.startswith(tolerated_missing)]
    missing = [k for k in missing if k not in tolerated]
    if missing or unexpected:
        raise CheckpointError(
            f"{mismatch}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise CheckpointError(
                f"{weight} {key!r} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    return tolerated


def load_backbone_weights(
    module: nn.Module,
    state: Mapping[str, Tensor],
    path: Path,
    *,
    rename: Callable[[str], str | None] = lambda k: k,
) -> None:
    """Load ``state`` into ``module`` with strict key and shape checking.

    ``rename`` maps a key of the file to the module's key, or None to drop it (e.g. the
    classification head of an ImageNet checkpoint).
    """
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        new = rename(key)
        if new is not None:
            mapped[new] = value
    check_state_keys(
        module.state_dict(),
        mapped,
        f"{path}: backbone weights do not match",
        f"{path}: backbone weight",
    )
    # nn.Module's own loader: some encoders override load_state_dict with another signature.
    nn.Module.load_state_dict(module, mapped, strict=True)
