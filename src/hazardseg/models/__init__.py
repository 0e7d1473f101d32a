"""Segmentation networks: registry, checkpoints and inference helpers.

Importing the package imports every model family (deeplab, lraspp, smp_models, hiera,
mask2former), whose
``@register_model`` builders fill the registry.
"""

from hazardseg.models import (  # noqa: F401  (register)
    deeplab,
    hiera,
    lraspp,
    mask2former,
    smp_models,
)
from hazardseg.models.base import SegmentationModel
from hazardseg.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from hazardseg.models.forward import autocast_context, prepare_for_inference
from hazardseg.models.registry import (
    create_model,
    describe_model,
    get_model_spec,
    list_models,
    pretrained_available,
    register_model,
)
from hazardseg.models.rng import restore_rng_state

__all__ = [
    "SegmentationModel",
    "autocast_context",
    "create_model",
    "describe_model",
    "get_model_spec",
    "list_models",
    "load_checkpoint",
    "load_model",
    "prepare_for_inference",
    "pretrained_available",
    "register_model",
    "restore_rng_state",
    "save_checkpoint",
]
