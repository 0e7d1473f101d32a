"""The anomaly-method interface and the one loop that feeds fitting data through a model.

Fitting is streamed: :func:`fit_methods` runs the fitting images once through the one forward
pass (:func:`hazardseg.models.forward.forward_logits`, logits at the network's input
resolution, features when a method needs them) and hands every batch to every method's
``fit_update(logits, features, labels)`` between ``fit_begin()`` and ``fit_end()``, so all
fitted methods (SML, HEAT, kNN, Mahalanobis) share a single pass over the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hazardseg.errors import HazardsegError
from hazardseg.models.forward import TTA, forward_logits


class AnomalyMethod:
    """A per-pixel anomaly detector: ``score(logits, features)`` -> (N, H, W), higher = anomalous.

    Methods with ``needs_fit`` learn statistics in one streamed pass (``fit_begin``, then
    ``fit_update`` per batch, then ``fit_end``; ``fit`` drives that pass for one method) and
    expose them through ``state_dict``/``load_state_dict`` (tensors and plain values only).
    Methods with ``needs_labels`` use the ground-truth labels of the fitting images.
    """

    name: str = ""
    needs_fit: bool = False
    needs_features: bool = False
    needs_labels: bool = False

    def __init__(self) -> None:
        self.fitted = not self.needs_fit

    @property
    def options(self) -> dict[str, Any]:
        """The options the method was built with (JSON-serialisable)."""
        return {}

    def score(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly score (N, H, W) float32 at the logits' resolution."""
        raise NotImplementedError

    @property
    def label_reach(self) -> int | None:
        """How far (pixels, Chebyshev distance) the predicted class of one pixel can change
        this method's score; None when every score is a continuous function of its own
        pixel's logits (then two near-equal logit maps give near-equal scores).

        Methods that use the argmax (class-wise statistics, label boundaries) are
        discontinuous where the two largest logits tie: two backends whose logits agree to
        float rounding may pick different classes there, and the scores may then differ
        within this distance of such a pixel.
        """
        return None

    def fit(
        self,
        model: nn.Module,
        loader: Iterable[dict[str, Any]],
        device: str | torch.device = "cpu",
        max_images: int | None = None,
        tta: TTA | str | None = None,
    ) -> None:
        """Learn the method's statistics from the images (and ``mask``s) of ``loader``: a
        convenience wrapper of :func:`fit_methods` for this method alone."""
        if not self.needs_fit:
            return
        fit_methods({self.name or "method": self}, model, loader, device, max_images, tta)

    def fit_begin(self) -> None:
        """Start a streamed fit: forget any previous partial statistics."""

    def fit_update(
        self,
        logits: torch.Tensor,
        features: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> None:
        """Add one batch: logits (N, C, H, W) float32, features (N, D, h, w) or None, labels
        (N, H', W') int64 class ids (255 = no class) or None."""
        if self.needs_fit:
            raise NotImplementedError

    def fit_end(self) -> None:
        """Turn the accumulated statistics into the fitted state."""
        if self.needs_fit:
            raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Fitted statistics as tensors and plain values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics produced by ``state_dict``."""
        self.fitted = True

    def check_fitted(self) -> None:
        """Raise a clear error when a method that needs fitting is used unfitted."""
        if not self.fitted:
            raise HazardsegError(
                f"anomaly method '{self.name}' needs fitting: call fit() or load its state first"
            )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def fit_methods(
    methods: dict[str, AnomalyMethod],
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    tta: TTA | str | None = None,
    precision: str = "auto",
) -> int:
    """Fit every method of ``methods`` that needs it in ONE pass over ``loader``; returns the
    number of images seen.

    Each batch runs once through :func:`~hazardseg.models.forward.forward_logits` (logits
    at the input resolution, features when a method needs them, ``tta`` as in evaluation);
    labels are the batch's ``mask`` when a method needs them. The model runs in eval mode
    under ``torch.inference_mode``; its training flag is restored.
    """
    todo = {n: m for n, m in methods.items() if m.needs_fit}
    if not todo:
        return 0
    need_features = any(m.needs_features for m in todo.values())
    need_labels = any(m.needs_labels for m in todo.values())
    was_training = model.training
    model.eval()
    for m in todo.values():
        m.fit_begin()
    seen = 0
    try:
        with torch.inference_mode():
            for batch in loader:
                if max_images is not None and seen >= max_images:
                    break
                x = batch["image"]
                take = x.shape[0] if max_images is None else min(x.shape[0], max_images - seen)
                x = x[:take]
                labels = None
                if need_labels:
                    if "mask" not in batch:
                        names = [n for n, m in todo.items() if m.needs_labels]
                        raise HazardsegError(
                            f"anomaly fit: method(s) {', '.join(names)} need labels; "
                            "the fitting batches have no 'mask'"
                        )
                    labels = batch["mask"][:take]
                logits, feats = forward_logits(
                    model, x, device, features=need_features, precision=precision, tta=tta
                )
                if labels is not None:
                    labels = labels.to(logits.device)
                for m in todo.values():
                    m.fit_update(logits, feats if m.needs_features else None, labels)
                seen += take
    finally:
        model.train(was_training)
    if seen == 0:
        raise HazardsegError("anomaly fit: the fitting data has no images")
    for m in todo.values():
        m.fit_end()
        m.fitted = True
    return seen
