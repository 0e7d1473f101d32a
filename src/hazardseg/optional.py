"""Optional packages (``onnx``, ``onnxscript``, ``onnxruntime``, ``av``) imported when a
function needs them, with one error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from hazardseg.errors import MissingDependencyError

INSTALL_HINT = 'pip install "hazardseg[deploy]"'


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional package or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not "
            f"installed ({exc}); install it with: {INSTALL_HINT}"
        ) from None
