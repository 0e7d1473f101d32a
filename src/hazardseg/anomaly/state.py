"""``anomaly_state.pt``: fitted anomaly-method state and calibrated thresholds, owned by
:class:`AnomalyState` (the only code that reads or writes the file).

File layout (format 2, loaded with ``weights_only=True``)::

    {"format": 2, "checkpoint_sha256": str,
     "fits": [{"method", "options", "fit": {split, max_images, resize, tta}, "state",
               "created"}, ...],
     "thresholds": [{"method", "options", "fit" (the fit it was calibrated with, or None),
                     "resize", "at_label_resolution", "precision", "precision_requested",
                     "tta", "threshold", "target", "split", "fpr", "num_pixels",
                     "num_images", "exclude_unlabeled", "created"}, ...]}

Entries are keyed, never overwritten by entries of other settings: a method may hold fits
for several fitting settings and thresholds for several evaluation settings. A fit is
replaced only when the caller asks (``refit``), and a threshold only by a new calibration
under the same settings. Format 1 files (one fit and one threshold per method) are read and
converted.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.thresholds import (
    ThresholdSettings,
    describe_fit,
    find_threshold,
    missing_threshold_text,
    same_threshold_key,
)
from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.io import atomic_path
from hazardseg.run_folder import ANOMALY_STATE

log = logging.getLogger(__name__)

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)
STATE_FILENAME = ANOMALY_STATE

FIT_KEYS: tuple[str, ...] = ("split", "max_images", "resize", "tta")
"""What a fit records of the data it was fitted on."""
FIT_INPUT_KEYS: tuple[str, ...] = ("resize", "tta")
"""Fit settings that change what the model outputs per image: a fit is reused only under the
same ones."""
FIT_SPEC_FIELDS: dict[str, str] = {"split": "fit_split", "max_images": "fit_images"}
"""Fit keys set by evaluation-spec fields (the others are the spec's own resize and tta)."""


def default_state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """``anomaly_state.pt`` in the checkpoint's folder."""
    return Path(checkpoint).parent / STATE_FILENAME


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class Restored:
    """What :meth:`AnomalyState.restore` did for each method that needs fitting."""

    restored: list[str] = field(default_factory=list)
    """Methods given a stored fit."""
    to_fit: list[str] = field(default_factory=list)
    """Methods without a usable stored fit (or asked to refit)."""
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Method -> the fit description of the state it holds (or will hold once fitted)."""
    notes: list[str] = field(default_factory=list)
    """What the user should know (a stored fit used under other settings, ...)."""


class AnomalyState:
    """The content of one anomaly state file, for one checkpoint (sha256)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        checkpoint_sha256: str,
        fits: list[dict[str, Any]] | None = None,
        thresholds: list[dict[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.checkpoint_sha256 = checkpoint_sha256
        self.fits: list[dict[str, Any]] = list(fits or [])
        self.thresholds: list[dict[str, Any]] = list(thresholds or [])
        self._foreign: str | None = None
        """sha256 of another checkpoint's state found at ``path`` (kept aside on save)."""

    # ------------------------------------------------------------------ files
    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> AnomalyState:
        """Load and validate a state file (any checkpoint's)."""
        p = Path(path)
        if not p.is_file():
            if p.exists():
                raise CheckpointError(f"{p}: a folder or special file, not an anomaly state file")
            raise CheckpointError(f"anomaly state file not found: {p}")
        from hazardseg.models.weights_only import load_weights_only

        return cls.from_dict(load_weights_only(p, "anomaly state file"), p)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], checkpoint_sha256: str, *, for_writing: bool = True
    ) -> AnomalyState:
        """The state of checkpoint ``checkpoint_sha256`` at ``path``: the file's content when
        it belongs to that checkpoint, else empty (another checkpoint's file is moved aside,
        not overwritten, when this state is saved; ``for_writing=False`` only reads)."""
        p = Path(path)
        if not p.exists():
            return cls(p, checkpoint_sha256)
        state = cls.read(p)
        if state.checkpoint_sha256 == checkpoint_sha256:
            return state
        fresh = cls(p, checkpoint_sha256)
        fresh._foreign = state.checkpoint_sha256
        if not for_writing:
            return fresh
        log.warning(
            "%s belongs to another checkpoint (sha256 %s...); a new state is started and the "
            "old file will be kept as %s",
            p, state.checkpoint_sha256[:12], fresh._aside_path().name,
        )  # fmt: skip
        return fresh

    def _aside_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.{(self._foreign or 'old')[:12]}.pt")

    def save(self) -> Path:
        """Write the state atomically (keeping another checkpoint's file aside); return the
        path."""
        obj = self.to_dict()
        _validate(obj, self.path)
        if self._foreign is not None and self.path.exists():
            aside = self._aside_path()
            if not aside.exists():
                os.replace(self.path, aside)
                log.warning("kept the other checkpoint's anomaly state as %s", aside)
            self._foreign = None
        with atomic_path(self.path) as tmp:
            torch.save(obj, tmp)
        return self.path

    def to_dict(self) -> dict[str, Any]:
        """The file content (format 2)."""
        return {
            "format": STATE_FORMAT,
            "checkpoint_sha256": self.checkpoint_sha256,
            "fits": [dict(e) for e in self.fits],
            "thresholds": [dict(e) for e in self.thresholds],
        }

    @classmethod
    def from_dict(cls, obj: Any, path: str | os.PathLike[str]) -> AnomalyState:
        """Validate a file content (format 1 or 2) and build the state."""
        p = Path(path)
        if isinstance(obj, dict) and obj.get("format") == 1:
            obj = _from_format_1(obj, p)
        _validate(obj, p)
        return cls(p, obj["checkpoint_sha256"], obj["fits"], obj["thresholds"])

    # ------------------------------------------------------------------ fits
    def no_fit_text(self, method: AnomalyMethod, wanted: Mapping[str, Any]) -> str:
        """Why ``method`` has no usable fit for ``wanted`` here: the fits stored instead."""
        stored = self.fits_of(method)
        if self._foreign is not None:
            have = f"{self.path} belongs to another checkpoint"
        elif stored:
            have = f"{self.path} has fits on " + "; ".join(describe_fit(e["fit"]) for e in stored)
        else:
            have = f"{self.path} has none for this checkpoint"
        return (
            f"method '{method.name}' needs fitted state under resize {wanted.get('resize')}, "
            f"tta {wanted.get('tta', 'none')}; {have}"
        )

    def fits_of(self, method: AnomalyMethod) -> list[dict[str, Any]]:
        """Stored fits of ``method`` with its current options, oldest first."""
        return [
            e for e in self.fits if e["method"] == method.name and e["options"] == method.options
        ]

    def restore(
        self,
        methods: Mapping[str, AnomalyMethod],
        wanted: Mapping[str, Any],
        *,
        explicit: frozenset[str] | set[str] = frozenset(),
        refit: bool = False,
    ) -> Restored:
        """Load a stored fit into every method that needs one.

        ``wanted`` is the fit the spec asks for (``split``, ``max_images``, ``resize``,
        ``tta``). A fit equal to it is used. Otherwise a stored fit under the same resize and
        TTA is used (the newest), unless it differs in a fit setting the user set
        (``explicit``: the spec fields ``fit_split`` / ``fit_images`` given by a flag or a
        config file); the reason is in ``notes``. ``refit`` fits every method anew.
        """
        out = Restored()
        for name, method in methods.items():
            if not method.needs_fit:
                continue
            chosen = None if refit else self._choose(method, wanted, explicit)
            if chosen is None:
                out.to_fit.append(name)
                out.fits[name] = dict(wanted)
                continue
            method.load_state_dict(dict(chosen["state"]))
            out.restored.append(name)
            out.fits[name] = dict(chosen["fit"])
            if chosen["fit"] != dict(wanted):
                out.notes.append(
                    f"{name}: using the state fitted on {describe_fit(chosen['fit'])} (the spec "
                    f"asks for {describe_fit(wanted)}); pass --refit or set --fit-split / "
                    "--fit-images to fit it again"
                )
        return out

    def _choose(
        self, method: AnomalyMethod, wanted: Mapping[str, Any], explicit: frozenset[str] | set[str]
    ) -> dict[str, Any] | None:
        stored = self.fits_of(method)
        for e in stored:
            if e["fit"] == dict(wanted):
                return e
        pinned = [k for k, f in FIT_SPEC_FIELDS.items() if f in explicit]
        usable = [
            e
            for e in stored
            if all(str(e["fit"].get(k)) == str(wanted.get(k)) for k in FIT_INPUT_KEYS)
            and all(e["fit"].get(k) == wanted.get(k) for k in pinned)
        ]
        # a fit that was calibrated keeps its thresholds in use: prefer those, newest first
        calibrated = [
            e
            for e in usable
            if any(t["method"] == method.name and t.get("fit") == e["fit"] for t in self.thresholds)
        ]
        return (calibrated or usable)[-1] if usable else None

    def record_fit(
        self, method: AnomalyMethod, fit: Mapping[str, Any], replace: bool = False
    ) -> list[str]:
        """Store ``method``'s fitted state under ``fit``. An entry with the same options and fit
        is replaced only with ``replace`` (a refit); its thresholds no longer apply and are
        removed. Returns notes on what was removed."""
        key = dict(fit)
        same = [e for e in self.fits_of(method) if e["fit"] == key]
        notes = []
        if same and not replace:
            raise HazardsegError(
                f"anomaly state {self.path}: '{method.name}' is already fitted on "
                f"{describe_fit(key)}; pass --refit to replace it"
            )
        if same:
            self.fits = [e for e in self.fits if not any(e is s for s in same)]
            stale = [
                t
                for t in self.thresholds
                if t["method"] == method.name
                and t.get("options") == method.options
                and t.get("fit") == key
            ]
            if stale:
                self.thresholds = [t for t in self.thresholds if not any(t is s for s in stale)]
                notes.append(
                    f"{method.name}: refitted on {describe_fit(key)}; its {len(stale)} "
                    "calibrated threshold(s) of the previous fit no longer apply and were "
                    "removed (run `hazardseg calibrate` again)"
                )
        self.fits.append(
            {
                "method": method.name,
                "options": dict(method.options),
                "fit": key,
                "state": method.state_dict(),
                "created": _now(),
            }
        )
        return notes

    # ------------------------------------------------------------------ thresholds
    def set_threshold(
        self,
        method: AnomalyMethod,
        fit: Mapping[str, Any] | None,
        settings: ThresholdSettings,
        values: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Store a calibrated threshold (``values``: threshold, target, split, fpr, ...),
        replacing only the entry of the same method, options, fit and settings."""
        entry = {
            "method": method.name,
            "options": dict(method.options),
            "fit": None if fit is None else dict(fit),
            **settings.as_dict(),
            **dict(values),
            "created": _now(),
        }
        keep = [t for t in self.thresholds if not same_threshold_key(t, entry)]
        self.thresholds = [*keep, entry]
        return entry

    def threshold_for(
        self,
        method: AnomalyMethod,
        fit: Mapping[str, Any] | None,
        settings: ThresholdSettings,
    ) -> dict[str, Any] | None:
        """The calibrated threshold of ``method`` under ``settings`` and ``fit``, or None."""
        return find_threshold(self.thresholds, method.name, method.options, fit, settings)

    def missing_threshold(
        self,
        method: AnomalyMethod,
        fit: Mapping[str, Any] | None,
        settings: ThresholdSettings,
    ) -> str:
        """Why there is no threshold for ``method`` under ``settings``: one sentence that names
        the settings of the stored ones that differ."""
        return missing_threshold_text(
            self.thresholds, method.name, method.options, fit, settings, str(self.path)
        )


def _from_format_1(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """A format 1 file (``methods`` and ``thresholds`` keyed by method) in format 2."""
    for key in ("methods", "thresholds"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: anomaly state '{key}' must be a mapping")
    fits = []
    for name, entry in obj["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
            raise CheckpointError(f"{path}: anomaly state of method '{name}' is malformed")
        fit = dict(entry.get("fit") or {})
        fit.setdefault("tta", "none")
        fits.append(
            {
                "method": name,
                "options": dict(entry.get("options") or {}),
                "fit": fit,
                "state": entry["state"],
                "created": "",
            }
        )
    fitted = {e["method"]: e["fit"] for e in fits}
    thresholds = []
    for name, entry in obj["thresholds"].items():
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path}: threshold of method '{name}' is malformed")
        # format 1 dropped a method's thresholds when it was refitted: they belong to its fit
        thresholds.append({**entry, "method": name, "fit": fitted.get(name)})
    return {
        "format": STATE_FORMAT,
        "checkpoint_sha256": obj.get("checkpoint_sha256"),
        "fits": fits,
        "thresholds": thresholds,
    }


def _validate(obj: Any, path: Path) -> None:
    if not isinstance(obj, dict) or obj.get("format") not in READABLE_FORMATS:
        formats = " or ".join(str(f) for f in READABLE_FORMATS)
        raise CheckpointError(f"{path}: not an anomaly state file (expected format {formats})")
    if not isinstance(obj.get("checkpoint_sha256"), str):
        raise CheckpointError(f"{path}: anomaly state without 'checkpoint_sha256'")
    for key in ("fits", "thresholds"):
        if not isinstance(obj.get(key), list):
            raise CheckpointError(f"{path}: anomaly state '{key}' must be a list")
    for e in obj["fits"]:
        ok = isinstance(e, dict) and isinstance(e.get("method"), str)
        if not ok or not isinstance(e.get("state"), dict) or not isinstance(e.get("fit"), dict):
            name = e.get("method") if isinstance(e, dict) else e
            raise CheckpointError(f"{path}: anomaly state of method '{name}' is malformed")
    for e in obj["thresholds"]:
        ok = isinstance(e, dict) and isinstance(e.get("method"), str)
        if not ok or not isinstance(e.get("threshold"), float | int):
            name = e.get("method") if isinstance(e, dict) else e
            raise CheckpointError(f"{path}: threshold of method '{name}' is malformed")
