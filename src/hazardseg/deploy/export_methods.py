"""Which anomaly methods can be exported to ONNX, and building them with their fitted state.

Only the methods that are functions of the logits (plus fitted constants) export; their
fitted statistics (sml) come from the anomaly state file that ``hazardseg evaluate`` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.state import AnomalyState
from hazardseg.deploy import ExportError

EXPORTABLE_METHODS: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "sml", "rba")
"""Anomaly methods that are functions of the logits (plus fitted constants) and export."""
NOT_EXPORTABLE_METHODS: dict[str, str] = {
    "heat": "needs the network's feature map and a per-image spatial KL over it; only the "
    "logit-based methods (msp, max_logit, energy, entropy, sml) are exported",
}


def _registered_methods() -> list[str]:
    from hazardseg.anomaly import list_methods

    return list(list_methods())


def resolve_method_names(
    methods: Sequence[str] | str | None, family: str | None = None
) -> list[str]:
    """Validated, de-duplicated method names; "all" = every exportable method that applies to
    a model of ``family`` (``rba``: mask-classification models)."""
    from hazardseg.anomaly.registry import applies_to, family_mismatch

    if methods is None:
        return []
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names: list[str] = []
    for raw in items:
        for item in (s.strip() for s in str(raw).split(",")):
            if not item:
                continue
            if item == "all":
                todo = [m for m in EXPORTABLE_METHODS if applies_to(m, family)]
            else:
                todo = [item]
            for name in todo:
                mismatch = family_mismatch(name, family)
                if mismatch:
                    raise ExportError(mismatch)
                if name in NOT_EXPORTABLE_METHODS:
                    raise ExportError(
                        f"anomaly method '{name}' cannot be exported: "
                        f"{NOT_EXPORTABLE_METHODS[name]}"
                    )
                if name not in EXPORTABLE_METHODS and name in _registered_methods():
                    raise ExportError(
                        f"anomaly method '{name}' cannot be exported: it is not a function of "
                        f"the logits (only {', '.join(EXPORTABLE_METHODS)} are)"
                    )
                if name not in EXPORTABLE_METHODS:
                    raise ExportError(
                        f"unknown anomaly method '{name}' for export; expected 'all' or one of: "
                        f"{', '.join(EXPORTABLE_METHODS)}"
                    )
                if name not in names:
                    names.append(name)
    return names


def build_methods(
    names: Sequence[str],
    state: AnomalyState | None,
    checkpoint_sha256: str | None,
    wanted_fit: Mapping[str, Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    family: str | None = None,
) -> tuple[dict[str, AnomalyMethod], dict[str, dict[str, Any]]]:
    """Create the named methods with ``options`` (method -> keyword arguments); fitted ones
    (sml) take their statistics from ``state`` (the anomaly state file), which must belong to
    ``checkpoint_sha256``: the fit of ``wanted_fit`` (the export's resize, no TTA), else a fit
    under the same resize without TTA. Returns ``(methods, method -> fit used)``."""
    from hazardseg.anomaly import create_method

    where = str(state.path) if state is not None else "the anomaly state"
    resolved = resolve_method_names(list(names), family)
    options = dict(options or {})
    stray = sorted(set(options) - set(resolved))
    if stray:
        raise ExportError(
            f"options given for method(s) {', '.join(stray)} that are not exported "
            f"(exported: {', '.join(resolved) or 'none'})"
        )
    methods: dict[str, AnomalyMethod] = {}
    fits: dict[str, dict[str, Any]] = {}
    for name in resolved:
        method = create_method(name, **dict(options.get(name, {})))
        methods[name] = method
        if not method.needs_fit:
            continue
        if state is None:
            raise ExportError(
                f"anomaly method '{name}' needs fitted statistics, but there is no anomaly "
                f"state file ({where}); run `hazardseg calibrate` on the checkpoint first or "
                f"leave '{name}' out"
            )
        sha = state.checkpoint_sha256
        if checkpoint_sha256 is not None and sha != checkpoint_sha256:
            raise ExportError(
                f"{where}: fitted for checkpoint sha256 {str(sha)[:12]}..., not for this "
                f"checkpoint ({checkpoint_sha256[:12]}...); refit with `hazardseg calibrate`"
            )
        wanted = dict(wanted_fit or {"resize": "native", "tta": "none"})
        found = state.restore({name: method}, wanted)
        if not found.restored:
            stored = state.fits_of(method)
            if stored and all(e["fit"].get("tta", "none") != "none" for e in stored):
                tta = stored[-1]["fit"]["tta"]
                raise ExportError(
                    f"{where}: '{name}' was fitted with test-time augmentation {tta!r}; the ONNX "
                    "graph has none, so refit it with --tta none for export"
                )
            raise ExportError(f"{where}: {state.no_fit_text(method, wanted)}")
        fits[name] = found.fits[name]
    return methods, fits
