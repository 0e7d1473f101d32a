"""How a dataset's masks encode known classes, anomalies and ignored pixels: :class:`LabelSpec`.

Every dataset loader returns masks of small integer ids (uint8-sized): known classes
``0..num_classes-1``, the dataset's anomaly id, optionally a "normal, no class" id (anomaly-only
sets, whose normal pixels carry no class), and :data:`IGNORE_INDEX` for pixels that are not
evaluated. Which pixels each anomaly protocol evaluates is a function of the spec
(:meth:`LabelSpec.evaluation_masks`, :meth:`LabelSpec.per_image_masks`), so metrics never
depend on one dataset's constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX: int = 255
"""Mask value of pixels that belong to no evaluated class (and of padding), in every dataset."""

OUTLIER_INDEX: int = 254
"""Mask value of negative objects pasted into training images (outlier exposure); never in a
dataset's own labels. The segmentation loss ignores it, the outlier objectives use it."""


@dataclass(frozen=True)
class LabelSpec:
    """The id layout of a dataset's masks (module docstring)."""

    num_classes: int
    """Known classes ``0..num_classes-1`` (0 for anomaly-only sets)."""
    anomaly_id: int | None
    """Id of anomaly pixels (None: the dataset has none, e.g. Cityscapes)."""
    normal_id: int | None = None
    """Id of normal pixels without a class (anomaly-only sets), else None."""
    unlabeled_id: int | None = None
    """A known class that ``exclude_unlabeled`` may leave out (StreetHazards' "unlabeled")."""
    per_image_ignore_is_normal: bool = False
    """The per-image protocol counts ignored pixels as normal (StreetHazards' official code,
    where PNG value 0 becomes -1 and is not an anomaly); otherwise it leaves them out."""

    @property
    def anomaly_ids(self) -> tuple[int, ...]:
        """The anomaly id as a tuple (empty when there is none)."""
        return () if self.anomaly_id is None else (self.anomaly_id,)

    def is_valid_id(self, value: int) -> bool:
        """Whether ``value`` may appear in a mask of this spec."""
        return (
            0 <= value < self.num_classes
            or value in self.anomaly_ids
            or value == self.normal_id
            or value == IGNORE_INDEX
        )

    def evaluation_masks(
        self, mask: torch.Tensor, exclude_unlabeled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(is_anomaly, valid)`` of the pooled and component protocols: positive = the anomaly
        id; negative = known classes and the normal id; every other value (ignore) excluded,
        and the unlabeled class too with ``exclude_unlabeled``."""
        anomaly = -1 if self.anomaly_id is None else self.anomaly_id
        is_anomaly = mask == anomaly
        valid = (mask >= 0) & (mask < self.num_classes)
        valid |= is_anomaly
        if self.normal_id is not None:
            valid |= mask == self.normal_id
        if exclude_unlabeled and self.unlabeled_id is not None:
            valid &= mask != self.unlabeled_id
        return is_anomaly, valid

    def per_image_masks(
        self, mask: torch.Tensor, exclude_unlabeled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(is_anomaly, valid)`` of the per-image protocol: with
        ``per_image_ignore_is_normal`` (and not ``exclude_unlabeled``) every pixel is evaluated
        and only the anomaly id is positive; otherwise the pooled protocol's pixels."""
        if self.per_image_ignore_is_normal and not exclude_unlabeled:
            anomaly = -1 if self.anomaly_id is None else self.anomaly_id
            is_anomaly = mask == anomaly
            return is_anomaly, torch.ones_like(is_anomaly)
        return self.evaluation_masks(mask, exclude_unlabeled)
