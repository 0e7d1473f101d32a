"""The evaluation spec: one :class:`~hazardseg.config.EvalConfig` for every command.

``evaluate``, ``calibrate``, ``visualize`` and ``predict`` resolve their settings the same way,
later sources overriding earlier ones:

1. the defaults of :class:`~hazardseg.config.EvalConfig`;
2. the ``eval:`` section stored in the checkpoint (the training config);
3. the ``eval:`` section of a YAML file given with ``--config``;
4. command-line flags / Python keyword arguments that are set (not None).

Settings of one invocation that are not part of the spec (output switches, progress bars,
the anomaly state file) are :class:`RunOptions`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from hazardseg.config import EvalConfig, _build, read_yaml_file
from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.evaluation.accumulate import NONFINITE_POLICIES

COMPONENT_MODES: tuple[str, ...] = ("calibrated", "oracle", "none")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvalConfig))


@dataclass(frozen=True)
class RunOptions:
    """Per-invocation settings that are not part of the evaluation spec."""

    max_images: int | None = None
    """Only the first N images of the split."""
    model_name: str | None = None
    """Model name for bare state dicts."""
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method options, e.g. ``{"energy": {"temperature": 2}}``."""
    state_path: str | os.PathLike[str] | None = None
    """Anomaly state file (default: ``anomaly_state.pt`` beside the checkpoint)."""
    save_state: bool = True
    """Save newly fitted method state to the state file."""
    save_maps: bool = False
    """Also write every score map as float32 ``.npy`` (opt-in: this is the only disk cost)."""
    max_curve_points: int = 1000
    overlap: bool = True
    """Update metrics on a background thread, overlapped with the next forward pass."""
    progress: bool = False


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunOptions))


def check_spec(spec: EvalConfig) -> None:
    """Reject invalid spec values with one-line errors naming the value."""
    from hazardseg.data.transforms import parse_resize_policy

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
    if spec.precision not in PRECISIONS:
        raise HazardsegError(
            f"--precision {spec.precision!r}: expected one of {', '.join(PRECISIONS)}"
        )
    if spec.fit_images is not None and spec.fit_images < 1:
        raise HazardsegError(f"fit images must be >= 1, got {spec.fit_images}")
    from hazardseg.models.inference import parse_tta

    parse_tta(spec.tta)


def check_run_options(run: RunOptions) -> None:
    """Reject invalid per-invocation values with one-line errors."""
    if run.max_images is not None and run.max_images < 1:
        raise HazardsegError(f"max images must be >= 1, got {run.max_images}")
    if run.max_curve_points < 2:
        raise HazardsegError(f"max curve points must be >= 2, got {run.max_curve_points}")


def _eval_section(config: dict[str, Any] | None, where: str) -> dict[str, Any]:
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


def resolve_spec(
    checkpoint_config: dict[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    base: EvalConfig | None = None,
    **flags: Any,
) -> EvalConfig:
    """Combine defaults (or ``base``), the checkpoint's ``eval:`` section, a YAML file's
    ``eval:`` section and the flags that are not None, in that order; validate the result."""
    merged: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    merged.update(_eval_section(checkpoint_config, "checkpoint config"))
    if config_file is not None:
        doc = read_yaml_file(config_file, "config file")
        if doc is not None and not isinstance(doc, dict):
            raise ConfigError(f"{config_file}: expected a mapping with an 'eval' section")
        merged.update(_eval_section(doc, str(config_file)))
    unknown = sorted(set(flags) - set(SPEC_FIELDS))
    if unknown:
        raise HazardsegError(f"unknown evaluation setting(s): {', '.join(unknown)}")
    merged.update({k: v for k, v in flags.items() if v is not None})
    spec = _build(EvalConfig, merged, "eval")
    check_spec(spec)
    return spec


def split_options(
    spec: EvalConfig | None, options: dict[str, Any], checkpoint_config: dict[str, Any] | None
) -> tuple[EvalConfig, RunOptions]:
    """Sort Python keyword options into the spec and the run options.

    With ``spec`` given it is the base (keyword spec settings override it); otherwise the
    checkpoint's ``eval:`` section is. ``config_file`` (a YAML file with an ``eval:``
    section) comes between the base and the keywords. ``components`` also
    accepts the booleans of earlier versions (True = "calibrated", False = "none").
    """
    options = dict(options)
    config_file = options.pop("config_file", None)
    if isinstance(options.get("components"), bool):
        options["components"] = "calibrated" if options["components"] else "none"
    unknown = sorted(set(options) - set(SPEC_FIELDS) - set(RUN_FIELDS))
    if unknown:
        raise HazardsegError(f"unknown evaluation option(s): {', '.join(unknown)}")
    flags = {k: v for k, v in options.items() if k in SPEC_FIELDS}
    if spec is not None:
        resolved = resolve_spec(None, config_file, base=spec, **flags)
    else:
        resolved = resolve_spec(checkpoint_config, config_file, **flags)
    run_kw = {k: v for k, v in options.items() if k in RUN_FIELDS}
    if run_kw.get("method_options") is None:
        run_kw.pop("method_options", None)
    run = RunOptions(**run_kw)
    check_run_options(run)
    return resolved, run


def spec_to_dict(spec: EvalConfig) -> dict[str, Any]:
    """The spec as plain values (for results.json)."""
    return dataclasses.asdict(spec)
