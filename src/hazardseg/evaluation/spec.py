"""The evaluation spec: one :class:`~hazardseg.config.EvalConfig` for every command, and the
per-invocation :class:`RunOptions`.

``evaluate``, ``calibrate``, ``eval-maps``, ``visualize``, ``predict`` and the predictors take
one resolved spec and one :class:`RunOptions`. :func:`resolve_spec` resolves the spec the same
way for all of them, later sources overriding earlier ones:

1. the defaults of :class:`~hazardseg.config.EvalConfig` (or a given ``base``);
2. the ``eval:`` section stored in the checkpoint (the training config);
3. the ``eval:`` section of a YAML file given with ``--config``;
4. the overrides (command-line flags) that are set (not None).

:func:`explicit_fields` says which spec fields the user set (3 and 4): a stored fit that
differs in one of them is not reused (:meth:`hazardseg.anomaly.state.AnomalyState.restore`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hazardseg import precision
from hazardseg.config import EvalConfig, read_yaml_file
from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.metrics.collector import NONFINITE_POLICIES
from hazardseg.typed_config import _build

COMPONENT_MODES: tuple[str, ...] = ("calibrated", "oracle", "none")
SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvalConfig))


@dataclass(frozen=True)
class RunOptions:
    """How one invocation runs: what is not part of the evaluation spec.

    Shared by ``evaluate``, ``calibrate``, ``evaluate_maps``, ``visualize``, ``predict`` and
    the predictors; each uses the fields that apply to it.
    """

    state_path: str | os.PathLike[str] | None = None
    """Anomaly state file (default: ``anomaly_state.pt`` beside the checkpoint)."""
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-method options, e.g. ``{"energy": {"temperature": 2}}``."""
    refit: bool = False
    """Fit the methods that need fitting again, even when a stored fit matches."""
    explicit: frozenset[str] = frozenset()
    """Spec fields the user set (flags or a config file): a stored fit that differs in one of
    them is not reused (see :func:`explicit_fields`)."""
    save_state: bool = True
    """Save newly fitted method state to the state file."""
    max_images: int | None = None
    """Only the first N images of the split."""
    save_maps: bool = False
    """``evaluate``: also write every score map (opt-in: the only disk cost)."""
    maps_format: str = "npy"
    """Format of the saved maps: ``npy`` or ``smiyc`` (SegmentMeIfYouCan's ``.hdf5``)."""
    max_curve_points: int = 1000
    """Points kept of each stored ROC / PR curve."""
    overlap: bool = True
    """``evaluate``: update metrics on a background thread, overlapped with the next forward."""
    progress: bool = False
    """Show progress (a bar on a terminal, periodic lines otherwise)."""

    def check(self) -> None:
        """Reject invalid values with one-line errors."""
        if self.max_images is not None and self.max_images < 1:
            raise HazardsegError(f"max images must be >= 1, got {self.max_images}")
        if self.maps_format not in ("npy", "smiyc"):
            raise HazardsegError(f"--maps-format {self.maps_format!r}: expected npy or smiyc")
        if self.max_curve_points < 2:
            raise HazardsegError(f"max curve points must be >= 2, got {self.max_curve_points}")


def check_spec(spec: EvalConfig) -> None:
    """Reject invalid spec values with one-line errors naming the value."""
    from hazardseg.data.transforms import parse_resize_policy
    from hazardseg.models.forward import parse_tta

    parse_resize_policy(spec.resize)
    if spec.batch_size < 1:
        raise HazardsegError(f"batch size must be >= 1, got {spec.batch_size}")
    if spec.workers < 0:
        raise HazardsegError(f"workers must be >= 0, got {spec.workers}")
    if spec.nonfinite not in NONFINITE_POLICIES:
        raise HazardsegError(
            f"--nonfinite {spec.nonfinite!r}: expected one of {', '.join(NONFINITE_POLICIES)}"
        )
    if spec.components not in COMPONENT_MODES:
        raise HazardsegError(
            f"--components {spec.components!r}: expected one of {', '.join(COMPONENT_MODES)}"
        )
    precision.canonical(spec.precision, "--precision")
    if spec.fit_images is not None and spec.fit_images < 1:
        raise HazardsegError(f"fit images must be >= 1, got {spec.fit_images}")
    parse_tta(spec.tta)


def _eval_section(config: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    section = (config or {}).get("eval") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'eval' must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(SPEC_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown eval setting(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(SPEC_FIELDS)}"
        )
    return section


def _config_file_section(config_file: str | os.PathLike[str] | None) -> dict[str, Any]:
    if config_file is None:
        return {}
    doc = read_yaml_file(config_file, "config file")
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{config_file}: expected a mapping with an 'eval' section")
    return _eval_section(doc, str(config_file))


def _set_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(SPEC_FIELDS))
    if unknown:
        raise HazardsegError(f"unknown evaluation setting(s): {', '.join(unknown)}")
    return given


def resolve_spec(
    checkpoint_config: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    base: EvalConfig | None = None,
) -> EvalConfig:
    """The evaluation spec: ``base`` (default: the defaults), the checkpoint's ``eval:``
    section, a YAML file's ``eval:`` section and the ``overrides`` that are not None, in that
    order; validated."""
    merged: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    merged.update(_eval_section(checkpoint_config, "checkpoint config"))
    merged.update(_config_file_section(config_file))
    merged.update(_set_overrides(overrides))
    spec = _build(EvalConfig, merged, "eval")
    check_spec(spec)
    return spec


def explicit_fields(
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> frozenset[str]:
    """The spec fields the user set: overrides that are not None and the keys of a config
    file's ``eval:`` section."""
    return frozenset(_set_overrides(overrides)) | frozenset(_config_file_section(config_file))


@dataclass(frozen=True)
class SpecRequest:
    """What the user asked of the spec: setting values (None = not given) and a YAML file
    whose ``eval:`` section sets some; the command resolves it over the checkpoint's (or an
    export's) own ``eval:`` section."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    config_file: str | os.PathLike[str] | None = None

    def resolve(
        self, checkpoint_config: Mapping[str, Any] | None = None, base: EvalConfig | None = None
    ) -> EvalConfig:
        """The resolved spec (see :func:`resolve_spec`)."""
        return resolve_spec(checkpoint_config, self.overrides, self.config_file, base)

    @property
    def explicit(self) -> frozenset[str]:
        """The spec fields set by this request (see :func:`explicit_fields`)."""
        return explicit_fields(self.overrides, self.config_file)


def spec_to_dict(spec: EvalConfig) -> dict[str, Any]:
    """The spec as plain values (for results.json)."""
    return dataclasses.asdict(spec)


def state_file(run: RunOptions, checkpoint: str | os.PathLike[str]) -> Path:
    """The anomaly state file of a run: ``run.state_path``, else beside the checkpoint."""
    from hazardseg.anomaly.state import default_state_path

    if run.state_path is not None:
        return Path(run.state_path)
    return default_state_path(checkpoint)
