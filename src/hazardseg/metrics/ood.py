"""Pixel-level anomaly-detection accumulators: :class:`PooledOOD` (one curve over a split) and
:class:`PerImageOOD` (the official per-image protocol).

Anomaly pixels are the positive class; higher scores mean more anomalous; a pixel is predicted
anomalous when ``score >= threshold``. Scores are compared at float32 precision (float16,
bfloat16 and float32 inputs are exact; float64 inputs are rounded to float32 first). NaN and
+-inf scores are excluded from every curve and counted in ``num_nonfinite``.

Which pixels each protocol evaluates and the definitions each uses are in
:mod:`hazardseg.metrics.ood_protocol`; the metrics of one given set of pixels, without an
accumulator, in :mod:`hazardseg.metrics.ood_functional`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hazardseg.metrics._curve import curve_metrics, downsample_curves, error_bounds
from hazardseg.metrics._histogram import (
    CHUNK,
    DEFAULT_BITS,
    Bins,
    ScoreHistogram,
    float32_ceil,
)
from hazardseg.metrics._sparse import DEFAULT_MAX_DISTINCT, SparseCounts
from hazardseg.metrics.base import Accumulator
from hazardseg.metrics.ood_functional import image_metrics

__all__ = ["PerImageOOD", "PooledOOD"]


def _check_shapes(scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor | None):
    if not torch.is_floating_point(scores):
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if is_anomaly.shape != scores.shape or (valid is not None and valid.shape != scores.shape):
        shapes = [tuple(scores.shape), tuple(is_anomaly.shape)]
        if valid is not None:
            shapes.append(tuple(valid.shape))
        raise ValueError(f"scores, is_anomaly and valid must have one shape, got {shapes}")
    if is_anomaly.dtype != torch.bool or (valid is not None and valid.dtype != torch.bool):
        raise ValueError("is_anomaly and valid must be bool tensors")


class PooledOOD(Accumulator):
    """One ROC / PR curve over every evaluated pixel of a split, in bounded memory.

    Two stages, switched automatically:

    * exact: while the split holds at most ``max_distinct`` distinct float32 scores (default
      2**18), every distinct score is counted separately; results equal scikit-learn's on the
      same pixels (ties form one step).
    * histogram: beyond that, counts move to a fixed 53.5 MiB histogram over the top ``bits`` bits
      of each score. A bin that still holds one distinct value stays exact; ``exact`` is then
      False only if some bin merged several values, and ``error_bound`` bounds the difference
      to the exact metrics (AP and FPR95 interpolate linearly inside merged bins). float16 and
      bfloat16 scores go straight to the histogram, where each of their values has its own
      bin (exact, and faster than the exact stage).

    State never exceeds 64 MiB, whatever the number of pixels. Accumulators merge exactly.
    """

    def __init__(self, bits: int = DEFAULT_BITS, max_distinct: int = DEFAULT_MAX_DISTINCT) -> None:
        super().__init__()
        self.bits = int(bits)
        self.max_distinct = int(max_distinct)
        ScoreHistogram.check_bits(self.bits)
        self.sparse: SparseCounts | None = SparseCounts(self.max_distinct)
        self.hist: ScoreHistogram | None = None

    @property
    def mode(self) -> str:
        """``"exact"`` (distinct scores counted) or ``"histogram"``."""
        return "exact" if self.sparse is not None else "histogram"

    @property
    def nbytes(self) -> int:
        """Bytes of accumulator state."""
        return self.sparse.nbytes if self.sparse is not None else self.hist.nbytes

    def reset(self) -> None:
        """Forget every pixel."""
        self.sparse = SparseCounts(self.max_distinct)
        self.hist = None

    def to(self, device: str | torch.device) -> PooledOOD:
        """Move the histogram (when in that stage) to ``device``; the exact stage's tables
        live on the CPU and take each update's scores on their own device."""
        if self.hist is not None:
            self.hist.to_device(torch.device(device))
        return self

    def _to_histogram(self) -> ScoreHistogram:
        if self.hist is None:
            self.hist = ScoreHistogram(self.bits)
            assert self.sparse is not None
            self.sparse.flush()
            self.hist.add_counts(self.sparse.keys, self.sparse.neg, self.sparse.pos)
            self.sparse = None
        return self.hist

    def _histogram_is_exact_for(self, dtype: torch.dtype) -> bool:
        mantissa = {torch.float16: 10, torch.bfloat16: 7}.get(dtype)
        return mantissa is not None and self.bits - 9 >= mantissa

    def update(
        self, scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Add pixels: ``scores`` (float, any shape), ``is_anomaly`` and ``valid`` (bool, same
        shape; ``valid=None`` counts every pixel)."""
        _check_shapes(scores, is_anomaly, valid)
        scores = scores.detach()
        if self.sparse is not None and self._histogram_is_exact_for(scores.dtype):
            self._to_histogram()
        if self.sparse is None:
            assert self.hist is not None
            self.hist.update(scores, is_anomaly, valid)
            return
        scores, is_anomaly = scores.reshape(-1), is_anomaly.reshape(-1)
        valid = None if valid is None else valid.reshape(-1)
        for start in range(0, scores.numel(), CHUNK):
            part = slice(start, start + CHUNK)
            v = None if valid is None else valid[part]
            if self.sparse is not None:
                self.sparse.update(scores[part], is_anomaly[part], v)
                if self.sparse.overflowed:
                    self._to_histogram()
            else:
                assert self.hist is not None
                self.hist.update(scores[part], is_anomaly[part], v)

    def merge_state(self, other: Accumulator) -> None:
        """Add the pixels of ``other`` (exact tables or histograms; exact, any order)."""
        assert isinstance(other, PooledOOD)
        if self.sparse is not None and other.sparse is not None:
            other.sparse.flush()
            self.sparse.add(other.sparse.keys, other.sparse.neg, other.sparse.pos)
            self.sparse.flush()
            if self.sparse.overflowed:
                self._to_histogram()
            return
        hist = self._to_histogram()
        if other.sparse is not None:
            other.sparse.flush()
            hist.add_counts(other.sparse.keys, other.sparse.neg, other.sparse.pos)
        else:
            assert other.hist is not None
            hist.merge(other.hist)

    def all_reduce_state(self) -> None:
        """Exact tables are gathered and merged when every rank is still exact; otherwise
        every rank moves to the histogram and the histograms are summed on their device."""
        from hazardseg import distributed

        any_hist = torch.tensor([int(self.sparse is None)])
        distributed.all_reduce(any_hist, "max")
        if int(any_hist) == 0:
            assert self.sparse is not None
            self.sparse.flush()
            mine = (self.sparse.keys, self.sparse.neg, self.sparse.pos)
            merged = PooledOOD(self.bits, self.max_distinct)
            for keys, neg, pos in distributed.gather_objects(mine):
                part = PooledOOD(self.bits, self.max_distinct)
                assert part.sparse is not None
                part.sparse.add(keys, neg, pos)
                merged.merge(part)
            self.sparse, self.hist = merged.sparse, merged.hist
            return
        self._to_histogram().all_reduce()

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values (for ``torch.save``; reload with ``weights_only=True``)."""
        if self.sparse is not None:
            self.sparse.flush()
            return {
                "mode": "exact",
                "bits": self.bits,
                "max_distinct": self.max_distinct,
                "keys": torch.from_numpy(self.sparse.keys.copy()),
                "neg": torch.from_numpy(self.sparse.neg.copy()),
                "pos": torch.from_numpy(self.sparse.pos.copy()),
            }
        assert self.hist is not None
        return {"mode": "histogram", "max_distinct": self.max_distinct, **self.hist.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PooledOOD:
        """Rebuild an accumulator from :meth:`state_dict`."""
        acc = cls(int(state["bits"]), int(state["max_distinct"]))
        if state["mode"] == "exact":
            assert acc.sparse is not None
            acc.sparse.add(
                torch.as_tensor(state["keys"]).numpy(),
                torch.as_tensor(state["neg"]).numpy(),
                torch.as_tensor(state["pos"]).numpy(),
            )
            acc.sparse.flush()
        else:
            acc._to_histogram().load_state_dict(state)
        return acc

    def _bins(self) -> Bins:
        if self.sparse is not None:
            self.sparse.flush()
            if self.sparse.overflowed:
                self._to_histogram()
        return self.sparse.finite_bins() if self.sparse is not None else self.hist.finite_bins()

    def compute(self, max_curve_points: int = 1000) -> dict[str, Any]:
        """Return the pooled metrics.

        Keys: ``auroc``, ``aupr`` (average precision), ``fpr95``, ``best_f1``,
        ``best_f1_threshold``, ``best_f1_precision``, ``best_f1_recall``, ``num_pos``,
        ``num_neg``, ``num_nonfinite``, ``num_thresholds`` (curve points), ``mode``, ``exact``,
        ``error_bound`` (``{auroc, aupr, fpr95}``, zeros when exact), ``curves`` (at most
        ``max_curve_points`` points: ``{"roc": {fpr, tpr, thresholds}, "pr": {recall,
        precision, thresholds}}``) and ``undefined_reason`` (None, or why the metrics are NaN:
        no positive or no negative pixel).
        """
        bins = self._bins()
        tps, fps = np.cumsum(bins.pos), np.cumsum(bins.neg)
        res = curve_metrics(tps, fps, bins.low_value, bins.pure)
        res["num_nonfinite"] = bins.nonfinite_neg + bins.nonfinite_pos
        res["num_thresholds"] = int(tps.size)
        res["mode"] = self.mode
        res["exact"] = bool(bins.pure.all())
        i95 = res.pop("fpr95_index")
        res["error_bound"] = error_bounds(tps, fps, bins.pos, bins.neg, bins.pure, i95)
        keep = (res.pop("best_f1_index"), i95)
        res["curves"] = downsample_curves(tps, fps, bins.low_value, keep, max_curve_points)
        return res

    def metrics_at_threshold(self, threshold: float) -> dict[str, Any]:
        """F1, precision, recall and FPR when pixels with ``score >= threshold`` are flagged.

        Also ``tp``, ``fp``, ``fn``, ``tn`` and ``exact`` (False only when the threshold falls
        inside a histogram bin holding several distinct scores; that bin is then counted as
        flagged). Precision is 0 when nothing is flagged; recall / FPR are NaN without
        positives / negatives.
        """
        if math.isnan(threshold):
            raise ValueError("threshold must not be NaN")
        t = float32_ceil(threshold)
        bins = self._bins()
        flagged = bins.high_value >= t
        exact = not bool(np.any(flagged & (bins.low_value < t)))
        p, n = int(bins.pos.sum()), int(bins.neg.sum())
        tp, fp = int(bins.pos[flagged].sum()), int(bins.neg[flagged].sum())
        return _confusion_summary(float(threshold), tp, fp, p, n, exact)

    def threshold_for_tpr(self, min_tpr: float) -> float:
        """Highest threshold whose TPR is >= ``min_tpr`` (NaN without positives)."""
        bins = self._bins()
        tps = np.cumsum(bins.pos)
        if tps.size == 0 or tps[-1] == 0:
            return float("nan")
        i = int(np.searchsorted(tps / tps[-1], min_tpr, side="left"))
        return float(bins.low_value[min(i, tps.size - 1)])

    def threshold_for_fpr(self, max_fpr: float) -> float:
        """Lowest threshold whose FPR is <= ``max_fpr`` (NaN without negatives; +inf when even
        the highest score exceeds it)."""
        bins = self._bins()
        fps = np.cumsum(bins.neg)
        if fps.size == 0 or fps[-1] == 0:
            return float("nan")
        i = int(np.searchsorted(fps / fps[-1], max_fpr, side="right")) - 1
        return float(bins.low_value[i]) if i >= 0 else float("inf")


def _confusion_summary(
    threshold: float, tp: int, fp: int, p: int, n: int, exact: bool
) -> dict[str, Any]:
    fn, tn = p - tp, n - fp
    nan = float("nan")
    return {
        "threshold": threshold,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan,
        "precision": tp / (tp + fp) if (tp + fp) else 0.0,
        "recall": tp / p if p else nan,
        "fpr": fp / n if n else nan,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "exact": exact,
    }


class PerImageOOD(Accumulator):
    """The official StreetHazards protocol: AUROC, AP and FPR95 per image, averaged over images.

    Each image's metrics follow :data:`~hazardseg.metrics.ood_protocol.PER_IMAGE_DEFINITION`
    exactly (see :func:`~hazardseg.metrics.ood_functional.image_metrics`; tested against an
    independent implementation of ``eval_ood.py``'s definitions). Which pixels are evaluated
    is the caller's choice: pass :func:`~hazardseg.metrics.ood_protocol.per_image_masks` for
    the official pixel set (every pixel, PNG 0 normal). Images without both anomaly and
    normal evaluated pixels are skipped and counted in ``num_skipped``. Results are keyed by
    image id, so accumulators merge in any order; pass ids (e.g. the sample's ``rel`` path)
    whenever you merge.
    """

    METRICS = ("auroc", "aupr", "fpr95")

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, dict[str, float] | None]
        self.nonfinite: int
        self.add_state("results", {}, "union")
        self.add_state("nonfinite", 0, "sum")

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor | None = None,
        image_ids: str | Sequence[str] | None = None,
    ) -> None:
        """Add one image (H, W) or a batch (N, H, W) with one id per image.

        Tensors may live on any device (the work runs there). Without ids, images are named
        ``#0``, ``#1``, ... in update order.
        """
        _check_shapes(scores, is_anomaly, valid)
        if scores.dim() == 2:
            scores, is_anomaly = scores[None], is_anomaly[None]
            valid = None if valid is None else valid[None]
        if scores.dim() != 3:
            raise ValueError(f"scores must be (H, W) or (N, H, W), got {tuple(scores.shape)}")
        if image_ids is None:
            image_ids = [f"#{len(self.results) + i}" for i in range(scores.shape[0])]
        elif isinstance(image_ids, str):
            image_ids = [image_ids]
        if len(image_ids) != scores.shape[0]:
            raise ValueError(f"got {len(image_ids)} image ids for {scores.shape[0]} images")
        for i, image_id in enumerate(image_ids):
            if image_id in self.results:
                raise ValueError(f"image id {image_id!r} was already added")
            res = image_metrics(scores[i], is_anomaly[i], None if valid is None else valid[i])
            self.nonfinite += res["num_nonfinite"]
            if res["undefined_reason"] is None:
                self.results[image_id] = {m: res[m] for m in self.METRICS}
            else:
                self.results[image_id] = None

    def compute(self) -> dict[str, Any]:
        """Return ``auroc``, ``aupr``, ``fpr95`` (means over images with both classes; NaN
        when there is none), ``num_images`` (averaged), ``num_skipped`` and ``num_nonfinite``."""
        kept = [self.results[k] for k in sorted(self.results) if self.results[k] is not None]
        out: dict[str, Any] = {
            m: math.fsum(r[m] for r in kept) / len(kept) if kept else float("nan")
            for m in self.METRICS
        }
        out["num_images"] = len(kept)
        out["num_skipped"] = len(self.results) - len(kept)
        out["num_nonfinite"] = self.nonfinite
        return out
