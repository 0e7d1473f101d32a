"""Segmentation networks: registry, checkpoints and inference helpers."""

from hazardseg.models.base import SegmentationModel
from hazardseg.models.registry import (
    create_model,
    describe_model,
    get_model_spec,
    list_models,
    pretrained_available,
    register_model,
)

__all__ = [
    "SegmentationModel",
    "create_model",
    "describe_model",
    "get_model_spec",
    "list_models",
    "pretrained_available",
    "register_model",
]
