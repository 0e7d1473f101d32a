"""Datasets (a registry of the benchmarks' layouts and label encodings), synthetic scenes and
joint image+mask transforms. Importing the package registers every dataset."""

from hazardseg.data import (  # noqa: F401  (each module registers its datasets)
    bdd_anomaly,
    cityscapes,
    lostandfound,
    road_anomaly,
    smiyc,
    streethazards,
)
