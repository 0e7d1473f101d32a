"""Model registry: one name -> builder function, ``create_model`` and ``list_models``.

Model families register their builders with :func:`register_model`; the ``hazardseg.models``
package imports every family module, so the registry is complete whenever it is importable.
This module imports no family module."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from hazardseg.errors import HazardsegError
from hazardseg.models.base import SegmentationModel
from hazardseg.models.pretrained import (
    WeightsSource,
    expected_location,
    find_cached,
    resolve_weights_path,
)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder (random init) and where its backbone weights live."""

    name: str
    family: str
    builder: Callable[..., SegmentationModel]
    source: WeightsSource | Callable[[], WeightsSource] | None
    """The backbone weights file, or a function naming it on first use (so a family can take
    the name from its third-party package without importing that package at registration)."""
    description: str

    @property
    def weights(self) -> WeightsSource | None:
        """Which cached file ``pretrained="imagenet"`` loads into the backbone, if any."""
        return self.source() if callable(self.source) else self.source


_REGISTRY: dict[str, ModelSpec] = {}

B = TypeVar("B", bound=Callable[..., SegmentationModel])


def register_model(
    *, family: str, weights: WeightsSource | Callable[[], WeightsSource] | None = None
) -> Callable[[B], B]:
    """Decorator registering ``builder(num_classes, **options) -> SegmentationModel`` under the
    builder's own name.

    The builder creates a randomly initialised model and never touches the network;
    ``weights`` says which cached file ``pretrained="imagenet"`` loads into the backbone (or
    is a function returning it, called only when the weights are asked about).
    """

    def decorate(builder: B) -> B:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(name, family, builder, weights, doc[0] if doc else "")
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; unknown names raise a HazardsegError listing the known."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise HazardsegError(
            f"unknown model {name!r}{hint}; known models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


MAX_NUM_CLASSES = 1024
"""Largest number of output classes a model may have (a guard against absurd allocations)."""


def check_num_classes(num_classes: object, what: str = "num_classes") -> None:
    """HazardsegError naming ``what`` unless ``num_classes`` is an int in 1..MAX_NUM_CLASSES."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise HazardsegError(f"{what} must be a positive integer, got {num_classes!r}")
    if num_classes > MAX_NUM_CLASSES:
        raise HazardsegError(f"{what} {num_classes} exceeds the limit of {MAX_NUM_CLASSES} classes")


def create_model(
    name: str, num_classes: int = 13, pretrained: str | None = None, **options: Any
) -> SegmentationModel:
    """Build a registered model.

    ``pretrained``: None (random init, never touches the network), ``"imagenet"`` (ImageNet
    backbone weights from the local cache; a HazardsegError names the file when it is missing)
    or a path to a backbone weights file in the same format as the cached one.
    ``options`` go to the builder (e.g. ``img_size`` for ``hiera_base``).
    """
    spec = get_model_spec(name)
    check_num_classes(num_classes)
    if pretrained is not None:
        # Resolve the file before building so a missing file fails fast.
        path = resolve_weights_path(str(pretrained), name, spec.weights)
    accepted = set(inspect.signature(spec.builder).parameters) - {"num_classes"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise HazardsegError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'none'}"
        )
    model = spec.builder(num_classes, **options)
    if pretrained is not None:
        model.load_backbone_weights(path)  # type: ignore[operator]
    return model


def pretrained_available(name: str) -> bool:
    """Whether the ImageNet backbone weights of ``name`` are in the local cache."""
    spec = get_model_spec(name)
    return spec.weights is not None and find_cached(spec.weights) is not None


def _weights_label(source: WeightsSource | None) -> str | None:
    if source is None:
        return None
    return f"{source.repo_id}/{source.filename}" if source.is_hf else source.filename


class _ShapeOnlyBuild(TorchFunctionMode):
    """Helpers for a meta-device build used only to read shapes.

    ``linspace``/``arange`` are created on the CPU (some builders read their values, e.g.
    drop-path schedules) and in-place initialisers on meta tensors are skipped (their values
    are meaningless and the meta kernels are slow).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if func in (torch.linspace, torch.arange) and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        name = getattr(func, "__name__", "")
        if (
            name.endswith("_")
            and not name.startswith("_")
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].is_meta
        ):
            return args[0]
        return func(*args, **kwargs)


def build_on_meta(name: str, num_classes: int = 13, **options: Any) -> SegmentationModel:
    """Build ``name`` on the meta device: right structure and shapes, no memory, no values."""
    spec = get_model_spec(name)
    check_num_classes(num_classes)
    with torch.device("meta"), _ShapeOnlyBuild():
        return spec.builder(num_classes, **options)


def describe_model(name: str, num_classes: int = 13) -> dict[str, object]:
    """Facts about a model without allocating its weights (built on the meta device)."""
    spec = get_model_spec(name)
    model = build_on_meta(name, num_classes)
    params = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "family": spec.family,
        "params_m": params / 1e6,
        "has_aux": model.has_aux,
        "feature_dim": model.feature_dim,
        "feature_stride": model.feature_stride,
        "pretrained_file": _weights_label(spec.weights),
        "pretrained_path": str(expected_location(spec.weights)) if spec.weights else None,
        "pretrained_available": pretrained_available(name),
        "description": spec.description,
    }
