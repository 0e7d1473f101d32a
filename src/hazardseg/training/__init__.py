"""Training: ``fit`` (epochs, validation, checkpoints, resume, torchrun) and its parts."""

from hazardseg.training.loop import RunState, check_resume_config, fit, validate_config
from hazardseg.training.losses import (
    SegmentationLoss,
    class_pixel_counts,
    class_weights_from_counts,
)
from hazardseg.training.schedule import EarlyStopping, Scheduler, build_optimizer, poly_factor

__all__ = [
    "EarlyStopping",
    "RunState",
    "Scheduler",
    "SegmentationLoss",
    "build_optimizer",
    "check_resume_config",
    "class_pixel_counts",
    "class_weights_from_counts",
    "fit",
    "poly_factor",
    "validate_config",
]
