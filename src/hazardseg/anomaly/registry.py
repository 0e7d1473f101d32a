"""Name -> anomaly method registry: ``create_method(name, **options)``, ``list_methods()``,
``DESCRIPTIONS`` (what each method computes and where it comes from)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from hazardseg.anomaly import scores
from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.heat import HEAT
from hazardseg.anomaly.knn import KNN
from hazardseg.anomaly.mahalanobis import Mahalanobis
from hazardseg.anomaly.sml import SML
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


def _msp() -> AnomalyMethod:
    return LogitScore("msp", scores.msp)


def _max_logit() -> AnomalyMethod:
    return LogitScore("max_logit", scores.max_logit)


def _energy(temperature: float = 1.0) -> AnomalyMethod:
    if float(temperature) <= 0:
        raise HazardsegError(f"energy: temperature must be > 0, got {temperature}")
    return LogitScore("energy", scores.energy, temperature=float(temperature))


def _entropy() -> AnomalyMethod:
    return LogitScore("entropy", scores.entropy)


METHODS: dict[str, Callable[..., AnomalyMethod]] = {
    "msp": _msp,
    "max_logit": _max_logit,
    "energy": _energy,
    "entropy": _entropy,
    "sml": SML,
    "heat": HEAT,
    "knn": KNN,
    "mahalanobis": Mahalanobis,
}
"""Registered anomaly methods, in the order reports list them."""

DESCRIPTIONS: dict[str, str] = {
    "msp": "-max softmax probability (Hendrycks & Gimpel, ICLR 2017)",
    "max_logit": "-max logit (Hendrycks et al., ICML 2022, MaxLogit)",
    "energy": "-T * logsumexp(logits / T) (Liu et al., NeurIPS 2020, energy score)",
    "entropy": "softmax entropy in nats",
    "sml": "Standardized Max Logits (Jung et al., ICCV 2021) as the authors' code computes them: "
    "per-class standardized max logit, iterative boundary suppression, dilated Gaussian "
    "smoothing (tested against a re-implementation of their definition)",
    "heat": "hazardseg's Hybrid Energy-Adaptive Thresholding hybrid of the reference run: "
    "z(energy) + z(Mahalanobis distance to the nearest predicted-class mean, tied covariance) "
    "+ max-softmax * z(spatial-consistency KL); not HEAT of Lafon et al. (ICML 2023)",
    "knn": "distance of the L2-normalised decoder feature to its k-th nearest neighbour in a "
    "class-balanced, seeded bank of training features (dense kNN, after Galesso et al., "
    "ICCV-W 2023)",
    "mahalanobis": "minimum Mahalanobis distance of the decoder feature to ground-truth class "
    "means with one shared, shrunk covariance (Lee et al., NeurIPS 2018, per pixel)",
}
"""One line per registered method: what its score computes and where it comes from."""


def list_methods() -> list[str]:
    """Names of all registered anomaly methods."""
    return list(METHODS)


def method_options(name: str) -> list[str]:
    """Names of the options ``create_method(name, ...)`` accepts."""
    builder = _builder(name)
    return [p for p in inspect.signature(builder).parameters if p != "self"]


def _builder(name: str) -> Callable[..., AnomalyMethod]:
    if name not in METHODS:
        raise HazardsegError(
            f"unknown anomaly method '{name}'; expected one of: {', '.join(METHODS)}"
        )
    return METHODS[name]


def create_method(name: str, **options: Any) -> AnomalyMethod:
    """Build the method ``name`` with ``options``; unknown names or options raise HazardsegError."""
    builder = _builder(name)
    allowed = method_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "no options"
        raise HazardsegError(
            f"anomaly method '{name}': unknown option(s) {', '.join(unknown)}; expected {expected}"
        )
    params = inspect.signature(builder).parameters
    coerced = {k: _coerce_option(name, k, v, params[k].default) for k, v in options.items()}
    try:
        return builder(**coerced)
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HazardsegError(f"anomaly method '{name}': invalid options ({first})") from None


def _coerce_option(method: str, key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the option's default; HazardsegError otherwise."""

    def fail(expected: str) -> HazardsegError:
        return HazardsegError(
            f"anomaly method '{method}': option {key}={value!r}; expected {expected}"
        )

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("an integer")
        if isinstance(value, float) and not value.is_integer():
            raise fail("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise fail("a string")
    return value


def parse_methods(spec: str | list[str]) -> list[str]:
    """Parse "all" or a comma-separated list of method names (validated, de-duplicated)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "all":
            names.extend(n for n in METHODS if n not in names)
            continue
        _builder(item)
        if item not in names:
            names.append(item)
    if not names:
        raise HazardsegError(f"no anomaly methods given in {spec!r}; expected 'all' or names")
    return names
