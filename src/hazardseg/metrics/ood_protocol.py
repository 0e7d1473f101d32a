"""Which pixels each anomaly-detection protocol evaluates, and the definitions each uses.

Anomaly pixels are the positive class. The pooled protocol
(:class:`hazardseg.metrics.ood.PooledOOD`) and the official per-image protocol
(:class:`hazardseg.metrics.ood.PerImageOOD`) use different FPR95 definitions, named by
:data:`POOLED_FPR95_DEFINITION` and :data:`PER_IMAGE_DEFINITION` (written into every
results.json by :func:`protocol_definitions`).
"""

from __future__ import annotations

import torch

from hazardseg.data.labels import LabelSpec

POOLED_FPR95_DEFINITION = (
    "FPR at the first ROC point (thresholds decreasing, one point per distinct score) whose "
    "TPR >= 0.95, i.e. the highest threshold flagging at least 95% of the anomaly pixels: "
    "fpr[np.searchsorted(tpr, 0.95)], the rule of SegmentMeIfYouCan's curve code"
)
"""The FPR95 of :class:`~hazardseg.metrics.ood.PooledOOD` (and of
:func:`~hazardseg.metrics.ood_functional.exact_curve_metrics`)."""

PER_IMAGE_DEFINITION = (
    "official StreetHazards eval_ood.py: per image, AUROC = sklearn roc_auc_score, AUPR = "
    "sklearn average_precision_score, FPR95 = anom_utils.fpr_and_fdr_at_recall (the ROC point "
    "whose recall is closest to 0.95, the lowest threshold among equally close points); "
    "images without both anomaly and normal pixels skipped; mean over the other images"
)
"""The metrics of :class:`~hazardseg.metrics.ood.PerImageOOD`."""


def default_labels() -> LabelSpec:
    """The label spec of the default dataset (StreetHazards), used when none is given."""
    from hazardseg.data.registry import get_dataset

    return get_dataset("streethazards").labels


def evaluation_masks(
    mask: torch.Tensor, exclude_unlabeled: bool = False, labels: LabelSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(is_anomaly, valid)`` bool tensors for a class-id mask (any shape) of the
    pooled and component protocols (:meth:`hazardseg.data.labels.LabelSpec.evaluation_masks`;
    ``labels`` default: StreetHazards': positive 13, negative 0..12, 255 excluded, "unlabeled"
    (0) too with ``exclude_unlabeled``)."""
    return (labels or default_labels()).evaluation_masks(mask, exclude_unlabeled)


def per_image_masks(
    mask: torch.Tensor, exclude_unlabeled: bool = False, labels: LabelSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(is_anomaly, valid)`` for the per-image protocol
    (:meth:`hazardseg.data.labels.LabelSpec.per_image_masks`). For StreetHazards (the default)
    every pixel is evaluated and 255 (PNG 0 at label resolution) is normal, as the official
    loader shifts it to -1 and counts it as normal; with ``exclude_unlabeled`` the masks are
    :func:`evaluation_masks` ``(mask, True)`` (not the official protocol)."""
    return (labels or default_labels()).per_image_masks(mask, exclude_unlabeled)


def protocol_definitions(
    exclude_unlabeled: bool = False, per_image_pixels: str | None = None
) -> dict[str, str]:
    """The definition each protocol uses, for results.json (``protocol.definitions``).

    ``exclude_unlabeled`` is the evaluation's option: it changes which pixels the per-image
    protocol evaluates (see :func:`per_image_masks`). ``per_image_pixels`` describes the
    per-image pixel set of a dataset other than StreetHazards (the default text).
    """
    if per_image_pixels is not None:
        pixels = per_image_pixels
    elif exclude_unlabeled:
        pixels = (
            "pixels: anomaly (13) positive, known classes 1..12 negative; unlabeled (0) and "
            "PNG 0 / ignore (255) excluded (NOT the official pixel set)"
        )
    else:
        pixels = (
            "pixels: every pixel; anomaly (13) positive, all others negative, PNG value 0 "
            "(255 at label resolution) included as normal, as the official code counts it"
        )
    return {
        "pooled_fpr95": POOLED_FPR95_DEFINITION,
        "per_image": f"{PER_IMAGE_DEFINITION}; {pixels}",
    }
