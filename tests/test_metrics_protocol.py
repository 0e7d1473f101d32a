"""Every metric accumulator follows one protocol (hazardseg.metrics.base.Accumulator): two
halves merged equal the whole, state moves with .to(), reset forgets; the collector feeds them
all with each protocol's pixel set."""

from __future__ import annotations

import pytest
import torch

from hazardseg.metrics import ComponentMetrics, ConfusionMatrix, PerImageOOD, PooledOOD
from hazardseg.metrics.base import Accumulator
from hazardseg.metrics.collector import MethodAccumulator, MetricCollector
from hazardseg.metrics.ood_protocol import evaluation_masks, per_image_masks
from hazardseg.metrics.open_set import OpenSetCalibration, OpenSetConfusion


def _batch(seed: int, n: int = 2) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 13, (n, 24, 32), generator=g)
    mask[:, 4:12, 6:14] = 13
    mask[:, 0, :] = 255
    pred = torch.randint(0, 13, (n, 24, 32), generator=g)
    scores = torch.randn(n, 24, 32, generator=g) + (mask == 13).float()
    return [f"img{seed}_{i}" for i in range(n)], mask, pred, scores


def _feed(acc: Accumulator, seed: int) -> None:
    ids, mask, pred, scores = _batch(seed)
    is_anom, valid = evaluation_masks(mask)
    if isinstance(acc, ConfusionMatrix):
        acc.update(pred, mask)
    elif isinstance(acc, PooledOOD):
        acc.update(scores, is_anom, valid)
    elif isinstance(acc, PerImageOOD):
        acc.update(scores, is_anom, valid, image_ids=ids)
    elif isinstance(acc, ComponentMetrics):
        acc.update(scores, is_anom, valid)
    elif isinstance(acc, OpenSetCalibration):
        acc.update(scores, is_anom, valid, ["t5", "t6"])
    elif isinstance(acc, OpenSetConfusion):
        known = torch.where(valid & ~is_anom, mask, torch.full_like(mask, -1))
        acc.update(pred, scores, known, is_anom, ["t5", "t6"])
    elif isinstance(acc, MethodAccumulator):
        acc.update(scores, is_anom, valid, ids, per_image_valid=per_image_masks(mask)[1])
    else:
        acc.update(ids, mask, pred, {"m": scores})


FACTORIES = {
    "ConfusionMatrix": lambda: ConfusionMatrix(13),
    "PooledOOD": PooledOOD,
    "PerImageOOD": PerImageOOD,
    "ComponentMetrics": lambda: ComponentMetrics(0.5),
    "MethodAccumulator": lambda: MethodAccumulator("m"),
    "MetricCollector": lambda: MetricCollector(13, ["m"], component_thresholds={"m": 0.5}),
    "OpenSetCalibration": lambda: OpenSetCalibration(["t5", "t6"]),
    "OpenSetConfusion": lambda: OpenSetConfusion(13, {"t5": 0.5, "t6": 0.2}),
}


def _result(acc: Accumulator) -> object:
    if isinstance(acc, MethodAccumulator):
        return (acc.pooled.compute(), acc.per_image.compute(), acc.nonfinite)
    if isinstance(acc, OpenSetCalibration):
        return acc.thresholds()
    out = acc.compute()
    if isinstance(acc, ConfusionMatrix):
        return acc.matrix.tolist()
    return out


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_halves_merged_equal_the_whole(name: str) -> None:
    make = FACTORIES[name]
    whole, a, b = make(), make(), make()
    assert isinstance(whole, Accumulator)
    for seed in (1, 2):
        _feed(whole, seed)
    _feed(a, 1)
    _feed(b, 2)
    assert repr(_result(a.merge(b))) == repr(_result(whole))
    whole.to("cpu")
    whole.reset()
    fresh = make()
    _feed(whole, 3)
    _feed(fresh, 3)
    assert repr(_result(whole)) == repr(_result(fresh))


def test_mismatched_accumulators_are_refused() -> None:
    with pytest.raises(ValueError, match="confusion matrices of 5 and 13"):
        ConfusionMatrix(13).merge(ConfusionMatrix(5))
    with pytest.raises(ValueError, match="cannot merge component metrics"):
        ComponentMetrics(0.5).merge(ComponentMetrics(0.6))
    with pytest.raises(ValueError, match="cannot merge PooledOOD into ConfusionMatrix"):
        ConfusionMatrix(13).merge(PooledOOD())
    with pytest.raises(ValueError, match="different methods"):
        MetricCollector(13, ["a"]).merge(MetricCollector(13, ["b"]))
    a, b = PerImageOOD(), PerImageOOD()
    _feed(a, 1)
    _feed(b, 1)
    with pytest.raises(ValueError, match="keys present in both"):
        a.merge(b)


def test_collector_uses_each_protocols_pixel_set() -> None:
    """The collector's metrics equal the accumulators fed by hand with the pooled pixel set
    (255 excluded) and the official per-image pixel set (255 counted as normal)."""
    ids, mask, pred, scores = _batch(5)
    scores[0, 3, 3] = float("nan")  # on an evaluated pixel: counted, excluded
    collector = MetricCollector(13, ["m"], nonfinite="exclude", component_thresholds={"m": 0.5})
    collector.update(ids, mask, pred, {"m": scores})
    pooled, per_image, cm, comp = PooledOOD(), PerImageOOD(), ConfusionMatrix(13), None
    is_anom, valid = evaluation_masks(mask)
    _, pi_valid = per_image_masks(mask)
    finite = torch.isfinite(scores)
    pooled.update(scores, is_anom, valid & finite)
    per_image.update(scores, is_anom, pi_valid & finite, image_ids=ids)
    cm.update(pred, mask)
    comp = ComponentMetrics(0.5)
    comp.update(scores, is_anom, valid & finite)
    got = collector.compute()
    assert got["pooled"]["m"]["auroc"] == pooled.compute()["auroc"]
    assert got["per_image"]["m"] == per_image.compute()
    assert torch.equal(collector.segmentation.matrix, cm.matrix)
    assert got["components"]["m"] == comp.compute()
    assert collector.methods["m"].nonfinite == 1
    assert set(collector.times) == {"segmentation_s", "ood_s", "components_s"}
