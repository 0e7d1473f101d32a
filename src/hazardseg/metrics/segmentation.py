"""Semantic-segmentation accumulator: a confusion matrix over a whole split, IoU and mIoU.

Absent classes: a class that appears neither in the ground truth nor in the predictions of the
accumulated pixels has no defined IoU; it gets NaN and is left out of every mean. A class that
is predicted but never present in the ground truth has IoU 0 and counts in the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hazardseg.metrics.base import Accumulator


class ConfusionMatrix(Accumulator):
    """Pixel confusion matrix of ``num_classes`` known classes (rows = ground truth).

    ``matrix[t, p]`` counts pixels with ground-truth class ``t`` predicted as ``p``. Targets
    outside ``0..num_classes-1`` (the anomaly id 13, the ignore value 255) are skipped. The
    matrix follows the device of the predictions it is given.
    """

    def __init__(self, num_classes: int = 13, unlabeled_id: int | None = 0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        valid_unlabeled = unlabeled_id is not None and 0 <= unlabeled_id < num_classes
        self.unlabeled_id = unlabeled_id if valid_unlabeled else None
        self.matrix: torch.Tensor
        zeros = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.add_state("matrix", zeros, "sum")

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of ``pred`` (predicted ids) against ``target`` (ground-truth ids).

        Both are integer tensors of the same shape (any number of dimensions). Predictions of
        counted pixels must lie in ``0..num_classes-1``.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        c = self.num_classes
        target = target.reshape(-1)
        pred = pred.reshape(-1)
        keep = (target >= 0) & (target < c)
        t = target[keep].to(torch.int64)
        p = pred[keep].to(torch.int64)
        if p.numel() == 0:
            return
        if int(p.min()) < 0 or int(p.max()) >= c:
            raise ValueError(
                f"predicted ids must lie in 0..{c - 1}, got range {int(p.min())}..{int(p.max())}"
            )
        counts = torch.bincount(t * c + p, minlength=c * c).reshape(c, c)
        if self.matrix.device != counts.device:
            self.matrix = self.matrix.to(counts.device)
        self.matrix += counts

    def check_mergeable(self, other: Accumulator) -> None:
        super().check_mergeable(other)
        assert isinstance(other, ConfusionMatrix)
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge confusion matrices of {other.num_classes} and "
                f"{self.num_classes} classes"
            )

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Return ``iou`` (float64 tensor, NaN for absent classes), ``miou``,
        ``miou_no_unlabeled``, ``pixel_accuracy``, ``class_accuracy`` and ``class_names``.

        ``miou`` averages the IoU of every class that is present (in the ground truth or the
        predictions); ``miou_no_unlabeled`` does the same without the "unlabeled" class (id 0).
        Means with no class present and the accuracy of an empty matrix are NaN.
        """
        names = self._names(class_names)
        m = self.matrix.detach().to("cpu", torch.float64)
        tp = m.diagonal()
        gt = m.sum(dim=1)
        predicted = m.sum(dim=0)
        union = gt + predicted - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        class_acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
        total = m.sum()
        keep = torch.ones(self.num_classes, dtype=torch.bool)
        if self.num_classes > 1 and self.unlabeled_id is not None:
            keep[self.unlabeled_id] = False
        return {
            "iou": iou,
            "miou": _nanmean(iou),
            "miou_no_unlabeled": _nanmean(iou[keep]),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "class_accuracy": class_acc,
            "class_names": names,
        }

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Return the results.json ``segmentation`` block: ``miou``, ``miou_no_unlabeled``,
        ``pixel_accuracy`` and ``iou`` as ``{class_name: float}``.

        Undefined values (absent classes, empty matrix) are ``None`` so the block is valid JSON.
        """
        r = self.compute(class_names)
        return {
            "miou": _or_none(r["miou"]),
            "miou_no_unlabeled": _or_none(r["miou_no_unlabeled"]),
            "pixel_accuracy": _or_none(r["pixel_accuracy"]),
            "iou": {
                n: _or_none(v) for n, v in zip(r["class_names"], r["iou"].tolist(), strict=True)
            },
        }

    def _names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(class_names)}")
        return [str(n) for n in class_names]


def _nanmean(values: torch.Tensor) -> float:
    present = values[~torch.isnan(values)]
    return float(present.mean()) if present.numel() else float("nan")


def _or_none(value: float) -> float | None:
    return None if value != value else float(value)
