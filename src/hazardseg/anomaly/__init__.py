"""Per-pixel anomaly methods: pure logit scores and fitted detectors (SML, HEAT, kNN,
Mahalanobis)."""

from hazardseg.anomaly import logit  # noqa: F401  (registers msp, max_logit, energy, entropy)
from hazardseg.anomaly.base import AnomalyMethod, fit_methods
from hazardseg.anomaly.heat import HEAT
from hazardseg.anomaly.knn import KNN
from hazardseg.anomaly.mahalanobis import Mahalanobis
from hazardseg.anomaly.registry import (
    METHODS,
    create_method,
    list_methods,
    method_options,
    parse_methods,
)
from hazardseg.anomaly.scores import energy, entropy, max_logit, msp
from hazardseg.anomaly.sml import SML

__all__ = [
    "HEAT",
    "KNN",
    "METHODS",
    "SML",
    "AnomalyMethod",
    "Mahalanobis",
    "create_method",
    "energy",
    "entropy",
    "fit_methods",
    "list_methods",
    "max_logit",
    "method_options",
    "msp",
    "parse_methods",
]
