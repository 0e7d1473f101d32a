"""The evaluation-spec options, declared once for every command that takes them.

``@spec_options("resize", "tta", ...)`` adds those options (and ``--config``) to a typer
command and hands the command one :class:`~hazardseg.evaluation.spec.SpecRequest` as its
``request`` parameter: the values given (None = not given) and the config file. The
command resolves it over the checkpoint's own ``eval:`` section.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from hazardseg.evaluation.spec import SpecRequest

SPEC_DEFAULT = "unset: the checkpoint's eval section, then --config"
TTA_HELP = (
    "Test-time augmentation: 'none' or scales and/or flip, e.g. 0.75,1,1.25,flip (logits "
    "averaged at label resolution before any score; default none)."
)


@dataclass(frozen=True)
class SpecOption:
    """One command-line option of an evaluation-spec field."""

    field: str
    """The EvalConfig field it sets."""
    annotation: Any
    option: Any
    convert: Callable[[Any], Any] = lambda v: v
    """Turns the parsed value into the field's value (None = not given)."""


def _flag_to(value: Any) -> Callable[[Any], Any]:
    return lambda given: value if given else None


SPEC_OPTIONS: dict[str, SpecOption] = {
    "methods": SpecOption(
        "methods",
        str | None,
        typer.Option(
            None, "--methods", metavar="NAMES",
            help="'all' or a comma list, e.g. msp,max_logit,sml (default: all).",
        ),
    ),
    "resize": SpecOption(
        "resize",
        str | None,
        typer.Option(
            None, "--resize", metavar="POLICY",
            help=f"Input resize policy: native, WxH or short:N ({SPEC_DEFAULT}; default "
            "native).",
        ),
    ),
    "at_input_resolution": SpecOption(
        "at_label_resolution",
        bool,
        typer.Option(
            False, "--at-input-resolution",
            help="Evaluate at the resized input resolution (labels resized with nearest).",
        ),
        _flag_to(False),
    ),
    "exclude_unlabeled": SpecOption(
        "exclude_unlabeled",
        bool,
        typer.Option(
            False, "--exclude-unlabeled", help="Leave 'unlabeled' pixels out of anomaly metrics."
        ),
        _flag_to(True),
    ),
    "protocols": SpecOption(
        "protocols",
        str | None,
        typer.Option(
            None, "--protocols", metavar="NAMES",
            help="Anomaly protocols: 'auto' (the dataset's own) or a comma list of pooled, "
            "per_image, smiyc (pooled is always measured).",
        ),
    ),
    "fit_split": SpecOption(
        "fit_split",
        str | None,
        typer.Option(
            None, "--fit-split", metavar="SPLIT",
            help="Split that fits sml, heat, knn and mahalanobis (default train).",
        ),
    ),
    "fit_images": SpecOption(
        "fit_images",
        int | None,
        typer.Option(
            None, "--fit-images", metavar="N", help="Images used for fitting (default 100)."
        ),
    ),
    "batch_size": SpecOption(
        "batch_size",
        int | None,
        typer.Option(None, "--batch-size", metavar="N", help="Images per forward pass."),
    ),
    "workers": SpecOption(
        "workers",
        int | None,
        typer.Option(None, "--workers", metavar="N", help="Data-loading worker processes."),
    ),
    "device": SpecOption(
        "device",
        str | None,
        typer.Option(
            None, "--device", metavar="DEVICE", help="auto (GPU if available), cpu, cuda, cuda:1."
        ),
    ),
    "precision": SpecOption(
        "precision",
        str | None,
        typer.Option(
            None, "--precision", metavar="NAME",
            help="auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16 or fp16.",
        ),
    ),
    "nonfinite": SpecOption(
        "nonfinite",
        str | None,
        typer.Option(
            None, "--nonfinite", metavar="POLICY",
            help="NaN/inf scores: 'error' or 'exclude' (the count is recorded).",
        ),
    ),
    "tta": SpecOption(
        "tta", str | None, typer.Option(None, "--tta", metavar="VIEWS", help=TTA_HELP)
    ),
    "components": SpecOption(
        "components",
        str | None,
        typer.Option(
            None, "--components", metavar="MODE",
            help="Component metrics: calibrated (default: thresholds from calibrate), oracle "
            "(the pooled best-F1 threshold of this split; a second forward pass) or none.",
        ),
    ),
    "no_components": SpecOption(
        "components",
        bool,
        typer.Option(
            False, "--no-components", help="Skip component metrics (same as --components none)."
        ),
        _flag_to("none"),
    ),
}  # fmt: skip

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", metavar="FILE", help="YAML file whose eval: section sets the spec."
)


def _request(values: dict[str, Any], config: Path | None) -> SpecRequest:
    overrides: dict[str, Any] = {}
    for name, given in values.items():
        spec_option = SPEC_OPTIONS[name]
        value = spec_option.convert(given)
        if value is not None:
            overrides[spec_option.field] = value
    return SpecRequest(overrides, config)


def spec_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a typer command with the spec options ``names`` and ``--config``; the command
    gets them as one ``request: SpecRequest`` keyword argument."""
    unknown = [n for n in names if n not in SPEC_OPTIONS]
    if unknown:
        raise ValueError(f"unknown spec option(s): {unknown}")

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "request"]
        added = [
            inspect.Parameter(
                n,
                inspect.Parameter.KEYWORD_ONLY,
                default=SPEC_OPTIONS[n].option,
                annotation=SPEC_OPTIONS[n].annotation,
            )
            for n in names
        ]
        config = inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=CONFIG_OPTION,
            annotation=Path | None,
        )  # fmt: skip
        params = [
            *[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own],
            config,
            *added,
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            request = _request(values, kwargs.pop("config"))
            return command(request=request, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not the command's
        return wrapper

    return decorate
