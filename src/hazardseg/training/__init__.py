"""Training: ``fit`` (epochs, validation, checkpoints, resume, torchrun) and its parts.

``fit`` (loop) orchestrates plain pieces: ``build`` makes the loaders and the model,
``engine`` runs ``train_one_epoch`` and ``validate``, ``checkpointing`` owns the run directory,
best.pt / last.pt and resume, ``metrics_log`` the metric rows, ``class_weights`` the loss
weights; ``schedule``, ``losses`` and ``steps`` are the optimiser, loss and single step.
"""

from hazardseg.training.checkpointing import RunState
from hazardseg.training.class_weights import class_pixel_counts, class_weights_from_counts
from hazardseg.training.engine import train_one_epoch, validate
from hazardseg.training.loop import fit
from hazardseg.training.losses import SegmentationLoss
from hazardseg.training.metrics_log import MetricLogger
from hazardseg.training.schedule import EarlyStopping, Scheduler, build_optimizer, poly_factor

__all__ = [
    "EarlyStopping",
    "MetricLogger",
    "RunState",
    "Scheduler",
    "SegmentationLoss",
    "build_optimizer",
    "class_pixel_counts",
    "class_weights_from_counts",
    "fit",
    "poly_factor",
    "train_one_epoch",
    "validate",
]
