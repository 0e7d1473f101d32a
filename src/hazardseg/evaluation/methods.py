"""Build the requested anomaly methods and give them fitted state: restored from the anomaly
state file (:class:`hazardseg.anomaly.state.AnomalyState`), or fitted once and recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hazardseg import distributed
from hazardseg.anomaly import AnomalyMethod, create_method, fit_methods, parse_methods
from hazardseg.anomaly.state import AnomalyState, Restored
from hazardseg.anomaly.thresholds import ThresholdSettings
from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import DataError, HazardsegError
from hazardseg.evaluation.spec import RunOptions
from hazardseg.models.forward import parse_tta
from hazardseg.precision import for_evaluation

log = logging.getLogger(__name__)


def build_methods(
    names: str | list[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    family: str | None = None,
) -> dict[str, AnomalyMethod]:
    """Create the methods named in ``names`` ("all" or a comma list) with per-method options,
    for a model of ``family`` (see :func:`hazardseg.anomaly.registry.parse_methods`)."""
    options = options or {}
    selected = parse_methods(names, family)
    unknown = sorted(set(options) - set(selected))
    if unknown:
        raise HazardsegError(f"options given for method(s) not selected: {', '.join(unknown)}")
    return {n: create_method(n, **dict(options.get(n, {}))) for n in selected}


def tta_text(tta: str | None) -> str:
    """The canonical text of a TTA setting ("none" when off)."""
    return str(parse_tta(tta) or "none")


def fit_description(spec: EvalConfig) -> dict[str, Any]:
    """The fit the spec asks for: fitting split, number of images, resize policy and TTA."""
    return {
        "split": spec.fit_split,
        "max_images": spec.fit_images,
        "resize": spec.resize,
        "tta": tta_text(spec.tta),
    }


def threshold_settings(
    spec: EvalConfig, device: str | torch.device, at_label_resolution: bool | None = None
) -> ThresholdSettings:
    """The settings a threshold calibrated (or looked up) with ``spec`` on ``device`` is tied to;
    ``at_label_resolution`` overrides the spec's (predictors work at the image's own size)."""
    label_res = spec.at_label_resolution if at_label_resolution is None else at_label_resolution
    return ThresholdSettings(
        resize=spec.resize,
        at_label_resolution=bool(label_res),
        precision=for_evaluation(spec.precision, device),
        tta=tta_text(spec.tta),
        precision_requested=spec.precision,
    )


def fitting_source(
    data: DataSource, spec: EvalConfig, training: DataSource | None = None
) -> DataSource:
    """Where the methods are fitted: the evaluated data when it has the spec's fitting split
    with public labels, else ``training`` (the model's own training data) when it has;
    DataError otherwise."""
    for source in (data, training):
        if source is None:
            continue
        info = source.dataset.splits.get(spec.fit_split)
        if info is not None and info.public_labels:
            return source
    raise DataError(
        f"{data}: dataset {data.dataset.name} has no split {spec.fit_split!r} to fit on "
        f"(splits: {', '.join(data.dataset.splits)}) and the model's training data is not at "
        "the root its checkpoint records; fit the methods on the training data first "
        "(`hazardseg calibrate --data TRAINING_ROOT`), the stored fit is then used"
    )


def fit_loader(data: DataSource, spec: EvalConfig) -> DataLoader:
    """Images of the spec's fitting split of ``data`` with the evaluation transform; masks at
    label resolution (used by the methods that fit on ground truth)."""
    ds = data.open(spec.fit_split, build_eval_transform(spec.resize), max_images=spec.fit_images)
    return DataLoader(ds, batch_size=spec.batch_size, shuffle=False, num_workers=spec.workers)


def prepare_methods(
    methods: dict[str, AnomalyMethod],
    model: nn.Module,
    state: AnomalyState,
    *,
    data: DataSource,
    spec: EvalConfig,
    device: torch.device,
    run: RunOptions,
    training: DataSource | None = None,
) -> Restored:
    """Restore or fit every method that needs it; record and save new fits in ``state``.

    A stored fit is reused as :meth:`AnomalyState.restore` says (the spec's fit, else one under
    the same resize and TTA unless the user set other fitting data; ``run.refit`` fits anew).
    New fits use ``data``'s fitting split, else ``training``'s (see :func:`fitting_source`).
    All methods to fit share ONE pass over the fitting images
    (:func:`hazardseg.anomaly.base.fit_methods`), on rank 0; the state is broadcast.
    """
    wanted = fit_description(spec)
    restored = state.restore(methods, wanted, explicit=run.explicit, refit=run.refit)
    for note in restored.notes:
        log.info("%s", note)
    todo = restored.to_fit
    if not todo:
        return restored
    fitted_states: dict[str, Any] = {}
    if distributed.rank() == 0:
        try:
            source = fitting_source(data, spec, training)
            if source is not data:
                log.info("fitting on the model's training data: %s", source)
            loader = fit_loader(source, spec)
        except DataError as exc:
            raise DataError(
                f"{exc} (method(s) {', '.join(todo)} need fitting data: choose another "
                "--fit-split, or leave them out of --methods)"
            ) from None
        log.info(
            "fitting %s on %d %s images (one pass)",
            ", ".join(todo), len(loader.dataset), spec.fit_split,
        )  # fmt: skip
        fit_methods({n: methods[n] for n in todo}, model, loader, device, spec.fit_images, spec.tta)
        fitted_states = {name: methods[name].state_dict() for name in todo}
    fitted_states = distributed.broadcast_object(None, fitted_states)
    for name in todo:
        methods[name].load_state_dict(fitted_states[name])
        for note in state.record_fit(methods[name], wanted, replace=run.refit):
            log.warning("%s", note)
            restored.notes.append(note)
    if run.save_state and distributed.rank() == 0:
        try:
            state.save()
        except OSError as exc:
            log.warning("could not save fitted anomaly state to %s (%s)", state.path, exc)
    return restored
