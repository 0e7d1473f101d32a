"""Metric accumulators (update / merge / all_reduce / compute).

- :class:`ConfusionMatrix`: semantic segmentation (IoU, mIoU, pixel accuracy).
- :class:`PooledOOD`: pixel-level anomaly metrics over a whole split (AUROC, AP, FPR95, F1).
- :class:`PerImageOOD`: the official per-image StreetHazards protocol.
- :class:`ComponentMetrics`: SegmentMeIfYouCan component metrics (sIoU, PPV, F1).
- :func:`evaluation_masks` / :func:`per_image_masks`: which pixels are positive / evaluated
  under the pooled and the official per-image protocol.
"""

from hazardseg.metrics.components import TAUS, ComponentMetrics, component_scores
from hazardseg.metrics.ood import PerImageOOD, PooledOOD
from hazardseg.metrics.ood_functional import exact_curve_metrics
from hazardseg.metrics.ood_protocol import evaluation_masks, per_image_masks
from hazardseg.metrics.segmentation import ConfusionMatrix

__all__ = [
    "TAUS",
    "ComponentMetrics",
    "ConfusionMatrix",
    "PerImageOOD",
    "PooledOOD",
    "component_scores",
    "evaluation_masks",
    "exact_curve_metrics",
    "per_image_masks",
]
