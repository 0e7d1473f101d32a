"""One precision vocabulary for training and evaluation: ``auto``, ``fp32``, ``bf16``, ``fp16``.

``train.amp`` and ``eval.precision`` take the same names (``none``, ``float32``,
``bfloat16`` and ``float16`` are read as their short names). What ``auto`` means depends on
the job: evaluation autocasts to bf16 on CUDA and runs plain fp32 elsewhere (so CPU scores
equal a plain forward); training autocasts to bf16 on CUDA when the GPU supports it, else
fp16 with loss scaling, and runs fp32 on the CPU unless ``train.cpu_bf16``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hazardseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
ALIASES: dict[str, str] = {
    "none": "fp32",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
}


def dtypes() -> dict[str, torch.dtype | None]:
    """Autocast dtype of each precision (None: no autocast, plain float32)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def canonical(name: Any, where: str = "precision") -> str:
    """The precision's short name (an alias or a torch dtype accepted); ConfigError naming
    ``where`` otherwise."""
    if name is None:
        return "fp32"
    if not isinstance(name, str):  # a torch dtype
        for key, dtype in dtypes().items():
            if dtype == name or (dtype is None and str(name) == "torch.float32"):
                return key
        raise ConfigError(f"{where} {name}: expected one of {', '.join(PRECISIONS)}")
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ConfigError(f"unknown {where} {name!r}: expected one of {', '.join(PRECISIONS)}")
    return key


def autocast_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype of an explicit precision (None = plain fp32); ``auto`` must be
    resolved first (:func:`for_evaluation` / :func:`for_training`)."""
    key = canonical(name)
    if key == "auto":
        raise ConfigError("precision 'auto' must be resolved for a device first")
    return dtypes()[key]


def for_evaluation(name: str, device: str | torch.device) -> str:
    """The precision an evaluation forward runs at on ``device``: ``auto`` is bf16 on CUDA and
    fp32 elsewhere."""
    import torch

    key = canonical(name)
    if key == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return key


@dataclass(frozen=True)
class Precision:
    """Autocast settings of a run: ``dtype`` None means float32 (no autocast)."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        """True when autocast is on."""
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        """fp16 on CUDA needs loss scaling (GradScaler); bf16 does not."""
        return self.label == "fp16" and self.device_type == "cuda"

    @property
    def label(self) -> str:
        """ "fp32", "bf16" or "fp16"."""
        return canonical(self.dtype)

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes."""
        import torch

        return torch.autocast(
            device_type=self.device_type,
            dtype=self.dtype or torch.float32,
            enabled=self.enabled,
        )


def for_training(name: str, device: torch.device, cpu_bf16: bool = False) -> Precision:
    """Training autocast: ``name`` on CUDA (``auto`` = bf16 when supported, else fp16);
    on the CPU fp32, or bf16 with ``cpu_bf16`` (``name`` applies to CUDA only)."""
    import torch

    key = canonical(name, "train.amp")
    if device.type == "cuda":
        if key == "auto":
            key = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Precision("cuda", dtypes()[key])
    if cpu_bf16:
        return Precision(device.type, torch.bfloat16)
    return Precision(device.type)
