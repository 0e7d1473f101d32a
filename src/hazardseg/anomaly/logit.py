"""The pure logit scores (:mod:`hazardseg.anomaly.scores`) as registered methods: msp, max_logit,
energy, entropy, and rba (mask-classification models only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from hazardseg.anomaly import scores
from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.registry import register_method
from hazardseg.errors import HazardsegError


class LogitScore(AnomalyMethod):
    """A method that is a pure function of the logits (no fitting, no features)."""

    needs_fit = False
    needs_features = False

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], **options: Any) -> None:
        super().__init__()
        self.name = name
        self._fn = fn
        self._options = dict(options)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def score(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        return self._fn(logits, **self._options)


@register_method(
    "msp",
    rank=0,
    description=("-max softmax probability (Hendrycks & Gimpel, ICLR 2017)"),
)
def msp_method() -> AnomalyMethod:
    """The ``msp`` method."""
    return LogitScore("msp", scores.msp)


@register_method(
    "max_logit",
    rank=10,
    description=("-max logit (Hendrycks et al., ICML 2022, MaxLogit)"),
)
def max_logit_method() -> AnomalyMethod:
    """The ``max_logit`` method."""
    return LogitScore("max_logit", scores.max_logit)


@register_method(
    "energy",
    rank=20,
    description=("-T * logsumexp(logits / T) (Liu et al., NeurIPS 2020, energy score)"),
)
def energy_method(temperature: float = 1.0) -> AnomalyMethod:
    """The ``energy`` method."""
    if float(temperature) <= 0:
        raise HazardsegError(f"energy: temperature must be > 0, got {temperature}")
    return LogitScore("energy", scores.energy, temperature=float(temperature))


@register_method(
    "entropy",
    rank=30,
    description=("softmax entropy in nats"),
)
def entropy_method() -> AnomalyMethod:
    """The ``entropy`` method."""
    return LogitScore("entropy", scores.entropy)


@register_method(
    "rba",
    rank=35,
    description=(
        "-sum_c tanh(s_c) of a mask-classification model's semantic map (Nayal et al., ICCV "
        "2023, RbA: Rejected by All)"
    ),
    families=("mask2former",),
)
def rba_method() -> AnomalyMethod:
    """The ``rba`` method."""
    return LogitScore("rba", scores.rba)
