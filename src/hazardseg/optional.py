"""Optional packages (``onnx``, ``onnxscript``, ``onnxruntime``, ``av`` of the ``deploy``
extra; ``cityscapesscripts``, ``h5py`` of the ``datasets`` extra) imported when a function
needs them, with one error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from hazardseg.errors import MissingDependencyError

INSTALL_HINT = 'pip install "hazardseg[deploy]"'


def require(module: str, purpose: str, extra: str = "deploy") -> ModuleType:
    """Import an optional package or raise MissingDependencyError naming the install command
    (``pip install "hazardseg[<extra>]"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not "
            f'installed ({exc}); install it with: pip install "hazardseg[{extra}]"'
        ) from None
