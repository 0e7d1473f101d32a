"""What a prediction backend is: :class:`Maps` (the result for one image) and
:class:`Predictor` (the interface of :class:`hazardseg.inference.predictor.MapPredictor`,
PyTorch, and :class:`hazardseg.deploy.predictor.OnnxMapPredictor`, onnxruntime).

Both backends follow one contract: the image is resized by the evaluation spec's resize policy
(:func:`hazardseg.data.transforms.build_eval_transform`), the network's logits are resized
bilinearly to the output size, the anomaly score is computed from those logits, and a
calibrated threshold is used only when it was calibrated under the same settings (resize,
label resolution, precision, TTA and the method's fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image


@dataclass
class Maps:
    """Maps of one image at the requested output size (H, W)."""

    pred: np.ndarray
    """Known-class ids (uint8)."""
    confidence: np.ndarray
    """Maximum softmax probability (float32)."""
    score: np.ndarray
    """Anomaly score, higher = more anomalous (float32)."""
    input_size: tuple[int, int] | None = None
    """(H, W) the network saw (after the resize policy)."""


@runtime_checkable
class Predictor(Protocol):
    """One model and one anomaly method, images in, :class:`Maps` out."""

    method_name: str
    batch_size: int
    calibrated: dict[str, Any] | None
    dataset: Any
    """The dataset definition of the model's classes (draws its predictions)."""
    """The calibrated threshold entry that applies, or None."""

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold, or None when none applies."""
        ...

    def missing_threshold(self) -> str:
        """Why no calibrated threshold applies (names the settings that differ)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the predictor does (backend, resize, precision, TTA, device, source), as
        recorded in ``predictions.json``."""
        ...

    def predict_batch(
        self, images: list[Image.Image], out_size: tuple[int, int] | None = None
    ) -> list[Maps]:
        """Maps of RGB images of one size at ``out_size`` (H, W; default: their size)."""
        ...


def threshold_source(predictor: Predictor, where: str) -> str:
    """How the calibrated threshold of ``predictor`` was chosen, for ``predictions.json``."""
    entry = predictor.calibrated or {}
    return (
        f"calibrated ({where}; {entry.get('split', '?')} split, target FPR "
        f"{entry.get('target', '?')}, resize {entry.get('resize', '?')}, tta "
        f"{entry.get('tta', 'none')})"
    )
