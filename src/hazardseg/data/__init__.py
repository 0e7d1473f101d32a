"""Datasets (a registry of the benchmarks' layouts and label encodings), synthetic scenes and
joint image+mask transforms. Importing the package registers every dataset."""

from hazardseg.data import streethazards  # noqa: F401  (registers the datasets)
