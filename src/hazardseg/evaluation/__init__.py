"""Evaluation: one pass over a split feeds segmentation, anomaly methods and metrics."""

from hazardseg.evaluation.maps import evaluate_maps
from hazardseg.evaluation.results import summary_table
from hazardseg.evaluation.run import evaluate

__all__ = ["evaluate", "evaluate_maps", "summary_table"]
