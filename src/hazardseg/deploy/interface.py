"""Names of the hazardseg ONNX interface, shared by the exporter and the runner (no torch)."""

from __future__ import annotations

EXPORT_FORMAT = 1
"""Version of the hazardseg ONNX interface (input/output names, metadata keys)."""
METADATA_PREFIX = "hazardseg."
INPUT_NAME = "image"
"""uint8 (N, H, W, 3) RGB."""
LOGITS = "logits"
"""float32 (N, C, H, W)."""
CLASS_MAP = "class_map"
"""uint8 (N, H, W) argmax of the logits (int64 when C > 256)."""
CONFIDENCE = "confidence"
"""float32 (N, H, W) maximum softmax probability."""
SCORE_PREFIX = "score_"
"""float32 (N, H, W) ``score_<method>``, higher = more anomalous."""
