"""The metadata of an exported graph: :class:`ExportSource` (what the export comes from) and
:func:`build_metadata` (the ``hazardseg.*`` metadata_props, read back by
:func:`hazardseg.deploy.onnx_runtime.parse_metadata`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hazardseg import __version__
from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hazardseg.deploy.interface import (
    CLASS_MAP,
    CONFIDENCE,
    EXPORT_FORMAT,
    LOGITS,
    METADATA_PREFIX,
    SCORE_PREFIX,
)

if TYPE_CHECKING:
    from hazardseg.deploy.onnx_export import ExportOptions


@dataclass(frozen=True)
class ExportSource:
    """What the metadata says of an export's origin: the model, its classes, the checkpoint,
    the evaluation spec the graph is made for, the fits of its fitted methods and the
    calibrated thresholds (entries as stored in the anomaly state file)."""

    model_name: str | None = None
    class_names: Sequence[str] | None = None
    dataset: str | None = None
    """The dataset the model was trained on."""
    checkpoint_sha256: str | None = None
    model_options: Mapping[str, Any] | None = None
    spec: Mapping[str, Any] | None = None
    """``resize``, ``at_label_resolution``, ``precision``, ``tta`` the graph is made for."""
    fits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Method -> the fit description of its exported state."""
    thresholds: Sequence[Mapping[str, Any]] = ()


def _plain(value: Any) -> Any:
    """Tensors as nested lists, for JSON metadata."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build_metadata(
    *,
    num_classes: int,
    methods: Mapping[str, AnomalyMethod],
    options: ExportOptions,
    source: ExportSource,
) -> dict[str, str]:
    """The ``hazardseg.*`` metadata_props of an exported model (all values are strings);
    ``options`` as resolved by :meth:`ExportOptions.resolved`."""
    p = METADATA_PREFIX
    dynamic = options.dynamic
    size = [int(options.height or 0), int(options.width or 0)]
    class_names = list(source.class_names or [])
    spec = dict(source.spec or {"resize": "native"})
    spec.update(at_label_resolution=True, precision="fp32", tta="none")
    method_states = {
        n: {"fit": dict(source.fits.get(n) or {}), "state": _plain(m.state_dict())}
        for n, m in methods.items()
        if m.needs_fit
    }
    return {
        f"{p}format": str(EXPORT_FORMAT),
        f"{p}version": __version__,
        f"{p}model_name": str(source.model_name),
        f"{p}model_options": json.dumps(dict(source.model_options or {}), sort_keys=True),
        f"{p}num_classes": str(int(num_classes)),
        f"{p}dataset": source.dataset or "",
        f"{p}class_names": json.dumps([str(c) for c in class_names]),
        f"{p}methods": json.dumps(list(methods)),
        f"{p}method_options": json.dumps({n: m.options for n, m in methods.items()}),
        f"{p}method_states": json.dumps(method_states),
        f"{p}spec": json.dumps(spec, sort_keys=True),
        f"{p}thresholds": json.dumps(
            [
                {k: v for k, v in t.items() if isinstance(v, str | int | float | bool | dict)}
                | {"fit": t.get("fit")}
                for t in source.thresholds
            ],
            sort_keys=True,
        ),
        f"{p}input_layout": "NHWC",
        f"{p}input_dtype": "uint8",
        f"{p}input_color": "RGB",
        f"{p}input_size": "dynamic" if dynamic else json.dumps(size),
        f"{p}dynamic": json.dumps(bool(dynamic)),
        f"{p}normalization": json.dumps(
            {"scale": 255.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        ),
        f"{p}outputs": json.dumps(
            [LOGITS, CLASS_MAP, CONFIDENCE, *(SCORE_PREFIX + m for m in methods)]
        ),
        f"{p}checkpoint_sha256": source.checkpoint_sha256 or "",
        f"{p}opset": str(int(options.opset)),
    }
