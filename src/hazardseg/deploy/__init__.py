"""Deployment: ONNX export with the anomaly scores inside the graph and the onnxruntime
prediction backend.

The optional packages (``onnx``, ``onnxscript``, ``onnxruntime``, ``av``) are imported only
when a function needs them; a missing one raises :class:`MissingDependencyError` saying
``pip install "hazardseg[deploy]"``. Importing this package needs none of them.
"""

from __future__ import annotations

from hazardseg.errors import HazardsegError, MissingDependencyError
from hazardseg.optional import INSTALL_HINT, require


class DeployError(HazardsegError):
    """An export or an exported model cannot be used as asked."""


class ExportError(DeployError):
    """A model or anomaly method cannot be exported to ONNX, or the export fails its check."""


__all__ = [
    "INSTALL_HINT",
    "DeployError",
    "ExportError",
    "MissingDependencyError",
    "require",
]
