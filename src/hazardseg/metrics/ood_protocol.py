"""Which pixels each anomaly-detection protocol evaluates, and the definitions each uses.

Anomaly pixels are the positive class. The pooled protocol
(:class:`hazardseg.metrics.ood.PooledOOD`) and the official per-image protocol
(:class:`hazardseg.metrics.ood.PerImageOOD`) use different FPR95 definitions, named by
:data:`POOLED_FPR95_DEFINITION` and :data:`PER_IMAGE_DEFINITION` (written into every
results.json by :func:`protocol_definitions`).
"""

from __future__ import annotations

import torch

from hazardseg.data.classes import ANOMALY_ID, UNLABELED_ID

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


def evaluation_masks(
    mask: torch.Tensor, exclude_unlabeled: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(is_anomaly, valid)`` bool tensors for a class-id mask (any shape).

    Positive: the anomaly id 13. Negative: known classes 0..12. Excluded (``valid`` False):
    every other value (the ignore value 255), and "unlabeled" (0) when ``exclude_unlabeled``.
    """
    is_anomaly = mask == ANOMALY_ID
    valid = (mask >= 0) & (mask <= ANOMALY_ID)
    if exclude_unlabeled:
        valid &= mask != UNLABELED_ID
    return is_anomaly, valid


def per_image_masks(
    mask: torch.Tensor, exclude_unlabeled: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(is_anomaly, valid)`` for the per-image protocol from a class-id mask (any shape).

    Default (the official protocol): every pixel is evaluated; positive = the anomaly id 13,
    every other pixel is normal, the ignore value 255 included, because at label resolution
    255 is PNG value 0, which the official loader shifts to -1 and counts as normal. With
    ``exclude_unlabeled`` the masks are :func:`evaluation_masks` ``(mask, True)`` (not the
    official protocol).
    """
    if exclude_unlabeled:
        return evaluation_masks(mask, exclude_unlabeled=True)
    is_anomaly = mask == ANOMALY_ID
    return is_anomaly, torch.ones_like(is_anomaly)


def protocol_definitions(exclude_unlabeled: bool = False) -> dict[str, str]:
    """The definition each protocol uses, for results.json (``protocol.definitions``).

    ``exclude_unlabeled`` is the evaluation's option: it changes which pixels the per-image
    protocol evaluates (see :func:`per_image_masks`).
    """
    if exclude_unlabeled:
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
