"""Calibrated thresholds and what they are tied to: :class:`ThresholdSettings` (resize,
label resolution, effective precision, TTA), the fit of a fitted method, and the lookup of the
entry that applies (:func:`find_threshold`) or the sentence that says why none does
(:func:`missing_threshold_text`).

Pure functions over threshold entries as stored in ``anomaly_state.pt`` (and copied into an
ONNX export's metadata), so the PyTorch and onnxruntime predictors match them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

THRESHOLD_SPEC_KEYS: tuple[str, ...] = ("resize", "at_label_resolution", "precision", "tta")
"""Settings a calibrated threshold depends on (they change the scores)."""


def describe_fit(fit: Mapping[str, Any] | None) -> str:
    """``train, 50 images, resize 640x360, tta none`` (or ``no fit``)."""
    if not fit:
        return "no fit"
    n = fit.get("max_images")
    images = "all images" if n is None else f"{n} images"
    return (
        f"{fit.get('split', '?')}, {images}, resize {fit.get('resize', '?')}, "
        f"tta {fit.get('tta', 'none')}"
    )


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {settings[k]}" for k in THRESHOLD_SPEC_KEYS if k in settings)


@dataclass(frozen=True)
class ThresholdSettings:
    """What a threshold is tied to: the scores' settings (resize, label resolution, effective
    precision, TTA) and, for a fitted method, the fit it was calibrated with."""

    resize: str
    at_label_resolution: bool
    precision: str
    """Effective precision ("fp32", "bf16", "fp16"): "auto" resolved on the device used."""
    tta: str
    precision_requested: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The settings as stored in a threshold entry."""
        d = {k: getattr(self, k) for k in THRESHOLD_SPEC_KEYS}
        d["precision_requested"] = self.precision_requested or self.precision
        return d

    def differences(self, entry: Mapping[str, Any]) -> list[str]:
        """Which settings of a stored entry differ, as ``key X (not Y)`` texts."""
        out = []
        for key in THRESHOLD_SPEC_KEYS:
            if key not in entry:
                continue
            stored, wanted = entry[key], getattr(self, key)
            if key == "precision" and "precision_requested" not in entry:
                wanted = self.precision_requested or wanted  # format 1: the requested name
            if str(stored) != str(wanted):
                out.append(f"{key} {stored} (not {wanted})")
        return out


def same_threshold_key(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two threshold entries are for the same method, options, fit and settings."""
    keys = ("method", "options", "fit", *THRESHOLD_SPEC_KEYS)
    return all(a.get(k) == b.get(k) for k in keys)


def find_threshold(
    entries: list[Mapping[str, Any]],
    method: str,
    options: Mapping[str, Any],
    fit: Mapping[str, Any] | None,
    settings: ThresholdSettings,
) -> dict[str, Any] | None:
    """The newest entry of ``entries`` (threshold entries as stored) for ``method`` with
    ``options``, calibrated with ``fit`` (None: the method needs no fit) under ``settings``."""
    for entry in reversed(entries):
        if entry.get("method") == method and not _differences(entry, options, fit, settings):
            return dict(entry)
    return None


def _differences(
    entry: Mapping[str, Any],
    options: Mapping[str, Any],
    fit: Mapping[str, Any] | None,
    settings: ThresholdSettings,
) -> list[str]:
    """What makes a stored entry of the method inapplicable: its settings, options and fit,
    as ``X (not Y)`` texts (empty when it applies)."""
    diff = settings.differences(entry)
    if entry.get("options", options) != dict(options):
        diff.append(f"options {entry.get('options')} (not {dict(options)})")
    if entry.get("fit") != (None if fit is None else dict(fit)):
        diff.append(f"fit {describe_fit(entry.get('fit'))} (not {describe_fit(fit)})")
    return diff


def missing_threshold_text(
    entries: list[Mapping[str, Any]],
    method: str,
    options: Mapping[str, Any],
    fit: Mapping[str, Any] | None,
    settings: ThresholdSettings,
    where: str,
) -> str:
    """No threshold for ``method`` under ``settings`` in ``where``: which stored settings differ."""
    wanted = _settings_text(settings.as_dict())
    if fit is not None:
        wanted += f", fitted on {describe_fit(fit)}"
    mine = [e for e in entries if e.get("method") == method]
    if not mine:
        return f"no calibrated threshold for method '{method}' in {where} (none was calibrated)"
    reasons = ["; ".join(_differences(e, options, fit, settings)) or "unknown" for e in mine[-3:]]
    return (
        f"no calibrated threshold for method '{method}' under {wanted} in {where}: the stored "
        f"one(s) differ in {' | '.join(reasons)}"
    )
