"""Datasets, synthetic scenes and joint image+mask transforms."""
