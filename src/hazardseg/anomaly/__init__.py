"""Per-pixel anomaly methods: pure logit scores and fitted detectors (SML, HEAT)."""

from hazardseg.anomaly.base import AnomalyMethod, model_outputs
from hazardseg.anomaly.heat import HEAT
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
    "METHODS",
    "SML",
    "AnomalyMethod",
    "create_method",
    "energy",
    "entropy",
    "list_methods",
    "max_logit",
    "method_options",
    "model_outputs",
    "msp",
    "parse_methods",
]
