"""hazardseg: semantic segmentation and zero-shot pixel anomaly detection for driving scenes."""

__version__ = "0.1.0"
