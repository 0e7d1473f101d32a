"""Synthetic scenes: a procedural street renderer and writers of every dataset's layout.

Modules, from the top down: :mod:`~hazardseg.data.synth.dataset` (StreetHazards' official
folders, towns, .odgt files, PNG labels, workers), :mod:`~hazardseg.data.synth.layouts` (the
other datasets' layouts and label encodings), :mod:`~hazardseg.data.synth.scene` (one scene:
:func:`render_scene`), :mod:`~hazardseg.data.synth.street` (perspective geometry, ground,
facades), :mod:`~hazardseg.data.synth.objects` (known-class objects),
:mod:`~hazardseg.data.synth.anomalies` (test-split anomalies),
:mod:`~hazardseg.data.synth.towns` (per-town appearance) and
:mod:`~hazardseg.data.synth.canvas` (the label + colour drawing surface).
"""

from hazardseg.data.synth.dataset import Job, generate_dataset, image_seed, parse_size, plan_split
from hazardseg.data.synth.generate import generate_synthetic
from hazardseg.data.synth.scene import render_scene

__all__ = [
    "Job",
    "generate_dataset",
    "generate_synthetic",
    "image_seed",
    "parse_size",
    "plan_split",
    "render_scene",
]
