"""The anomaly-method interface and the shared loop that feeds fitting data through a model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from hazardseg.errors import HazardsegError
from hazardseg.models.inference import evaluation_forward


class AnomalyMethod:
    """A per-pixel anomaly detector: ``score(logits, features)`` -> (N, H, W), higher = anomalous.

    Methods with ``needs_fit`` learn statistics with ``fit`` and expose them through
    ``state_dict``/``load_state_dict`` (tensors and plain values only).
    """

    name: str = ""
    needs_fit: bool = False
    needs_features: bool = False

    def __init__(self) -> None:
        self.fitted = not self.needs_fit

    @property
    def options(self) -> dict[str, Any]:
        """The options the method was built with (JSON-serialisable)."""
        return {}

    def score(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly score (N, H, W) float32 at the logits' resolution."""
        raise NotImplementedError

    def fit(
        self,
        model: nn.Module,
        loader: Iterable[dict[str, Any]],
        device: str | torch.device = "cpu",
        max_images: int | None = None,
    ) -> None:
        """Learn the method's statistics from the images of ``loader``."""
        if not self.needs_fit:
            return
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


def model_outputs(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    features: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(logits float32, features or None)`` batch by batch, at most ``max_images`` images.

    The model runs in eval mode under ``torch.inference_mode``; its training flag is restored.
    """
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.inference_mode():
            for batch in loader:
                if max_images is not None and seen >= max_images:
                    break
                x = batch["image"]
                if max_images is not None:
                    x = x[: max_images - seen]
                seen += x.shape[0]
                yield evaluation_forward(model, x, device, features=features)
    finally:
        model.train(was_training)
    if seen == 0:
        raise HazardsegError("anomaly fit: the fitting data has no images")
