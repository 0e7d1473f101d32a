"""Deployment: ONNX export with the anomaly scores inside the graph, an onnxruntime runner and
streaming video input/output.

The optional packages (``onnx``, ``onnxscript``, ``onnxruntime``, ``av``) are imported only
when a function needs them; a missing one raises :class:`MissingDependencyError` saying
``pip install "hazardseg[deploy]"``. Importing this package needs none of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hazardseg.errors import HazardsegError

INSTALL_HINT = 'pip install "hazardseg[deploy]"'


class DeployError(HazardsegError):
    """An export, an exported model or a video cannot be used as asked."""


class ExportError(DeployError):
    """A model or anomaly method cannot be exported to ONNX, or the export fails its check."""


class MissingDependencyError(DeployError):
    """An optional deployment package is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional package or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not "
            f"installed ({exc}); install it with: {INSTALL_HINT}"
        ) from None


__all__ = [
    "INSTALL_HINT",
    "DeployError",
    "ExportError",
    "MissingDependencyError",
    "require",
]
