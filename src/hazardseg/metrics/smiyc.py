"""SegmentMeIfYouCan's own metrics: :class:`SmiycPixels` (``PixBinaryClass``) and the component
settings of its tracks (``SegEval-AnomalyTrack`` / ``SegEval-ObstacleTrack``).

What road-anomaly-benchmark computes (``metrics/pixel_classification.py``,
``pixel_classification_curves.py``, ``instance_segmentation.py``; the code of 2023-08-24),
written here without its code:

* scores are rounded to float16, as its ``Evaluation.save_output`` stores them;
* per frame, on the pixels whose label is not void: bin edges = the unique values of
  ``[vmin - eps, vmax + eps]`` (``eps = max(0.01 * (vmax - vmin), 0.01)``, the range taken in
  float16), ``min(384, n)`` quantiles (numpy's ``linear`` method) of the anomaly pixels and
  as many of the other pixels; per bin ``[e_k, e_k+1)`` the anomaly and other pixels counted;
* over the frames (in frame order): every frame's lower edges and counts concatenated, sorted
  by edge descending (``np.argsort(edges)[::-1]``), counts accumulated; of each run of equal
  edges only the last point kept (and the first point of all); the origin prepended;
* AP = sum of recall steps times precision; AUROC = trapezoids over (FPR, TPR); FPR95 = the FPR
  of the first point whose TPR >= 0.95; best F1 and its threshold (the first maximum);
* components (:class:`hazardseg.metrics.components.ComponentMetrics` with
  :func:`component_settings`): pixels with ``score > float16(best F1 threshold)`` (numpy 1.x
  compares a float16 map with a float64 scalar in float16), predicted components under
  500 / 50 pixels dropped and ground-truth components under 100 / 10 pixels ignored (anomaly /
  obstacle track).

The curve is binned (each frame is exact only at its own edges), so these numbers differ from
the exact pooled protocol's: both are reported. Counting uses a histogram of the float16 values
(one bin per value) rather than sorting, which gives the same counts and quantiles. Where
the benchmark depends on its environment, this follows its pinned numpy 1.23: float64 ``eps``
and the float16 comparison above. When the top score is shared by several frames, the
benchmark's first point depends on how ``np.argsort`` orders ties and on frame order (its
parallel run collects frames in any order); here frames are in id order and the same
``np.argsort`` is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hazardseg.metrics.base import Accumulator

NUM_BINS = 768
"""``PixBinaryClass``'s bins per frame (half for each class)."""

TRACKS: dict[str, tuple[int, int]] = {"anomaly": (500, 100), "obstacle": (50, 10)}
"""Component size filters of each track: (smallest predicted component, smallest ground-truth
component), in pixels."""

PIXEL_DEFINITION = (
    "SegmentMeIfYouCan PixBinaryClass (road-anomaly-benchmark, 768 percentile bins): scores "
    "rounded to float16; per frame, bin edges = quantiles (numpy linear) of up to 384 anomaly "
    "and 384 normal scores plus vmin-eps, vmax+eps; frames merged by sorting every frame's "
    "edges; AP = sum of recall steps x precision, AUROC = trapezoids, FPR95 = FPR at the first "
    "point with TPR >= 0.95; binned, so it differs from the exact pooled numbers"
)

_F16_MAX = float(np.finfo(np.float16).max)


def component_settings(track: str) -> dict[str, Any]:
    """``ComponentMetrics`` options of a track's ``SegEval`` (besides the threshold)."""
    if track not in TRACKS:
        raise ValueError(f"track {track!r}: expected one of {', '.join(TRACKS)}")
    seg, inst = TRACKS[track]
    return {"min_pred_size": seg, "min_gt_size": inst, "threshold_rule": ">"}


def component_threshold(best_f1_threshold: float) -> float:
    """The threshold ``SegEval`` compares float16 scores with: the best-F1 threshold rounded
    to float16."""
    return float(np.float16(best_f1_threshold))


def linspace01(n: int) -> np.ndarray:
    """``np.linspace(0, 1, n)`` as numpy computes it (``k * (1 / (n - 1))``, last exactly 1)."""
    if n == 1:
        return np.zeros(1)
    q = np.arange(n, dtype=np.float64) * (1.0 / (n - 1))
    q[-1] = 1.0
    return q


def _order_keys(x16: np.ndarray) -> np.ndarray:
    """uint16 keys that sort like the float16 values (negative values reversed)."""
    bits = x16.view(np.uint16)
    return np.where(bits & 0x8000, ~bits, bits | 0x8000).astype(np.uint16)


_KEY_VALUES = np.empty(65536, dtype=np.float16)
_KEY_VALUES.view(np.uint16)[:] = np.where(
    np.arange(65536) & 0x8000, np.arange(65536) & 0x7FFF, ~np.arange(65536) & 0xFFFF
).astype(np.uint16)
"""The float16 value of each order key."""


@dataclass
class _Sorted:
    """A float16 sample as its distinct values (ascending) and cumulative counts."""

    values: np.ndarray
    """float16 distinct values."""
    cum: np.ndarray
    """int64: number of elements <= each value."""

    @classmethod
    def of(cls, counts: np.ndarray) -> _Sorted:
        keys = np.flatnonzero(counts)
        return cls(_KEY_VALUES[keys], np.cumsum(counts[keys]))

    @property
    def n(self) -> int:
        return int(self.cum[-1]) if self.cum.size else 0

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The float16 elements at sorted ``positions``."""
        return self.values[np.searchsorted(self.cum, positions, side="right")]

    def quantiles(self, count: int) -> np.ndarray:
        """``np.quantile(sample, np.linspace(0, 1, count))`` (float64)."""
        n = self.n
        v = (n - 1) * linspace01(count)
        top = v >= n - 1
        lower = np.floor(v).astype(np.int64)
        lower[top] = n - 1
        upper = np.minimum(lower + 1, n - 1)
        gamma = v - lower
        a, b = self.at(lower), self.at(upper)
        diff = np.subtract(b, a)  # in float16, as numpy's quantile interpolates
        out = a + diff * gamma
        high = gamma >= 0.5
        out[high] = (b - diff * (1 - gamma))[high]
        return out

    def count_at_least(self, edges: np.ndarray) -> np.ndarray:
        """Number of elements >= each float64 edge (compared exactly)."""
        below = np.searchsorted(self.values.astype(np.float64), edges, side="left")
        cum = np.concatenate([[0], self.cum])
        return self.n - cum[below]


def frame_bins(
    scores16: np.ndarray, is_anomaly: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """One frame's ``(edges, anomaly counts, normal counts, num anomaly, num normal)``: the
    lower bin edges in descending order (float64) and the pixels of each bin, from the float16
    scores and labels of the frame's evaluated pixels (at least one; finite)."""
    keys = _order_keys(np.ascontiguousarray(scores16, dtype=np.float16).ravel())
    y = np.asarray(is_anomaly, dtype=bool).ravel()
    pos = _Sorted.of(np.bincount(keys[y], minlength=65536))
    neg = _Sorted.of(np.bincount(keys[~y], minlength=65536))
    present = [s for s in (pos, neg) if s.n]
    vmin = min(s.values[0] for s in present)
    vmax = max(s.values[-1] for s in present)
    eps = max(float(np.subtract(vmax, vmin)) * 1e-2, 1e-2)
    parts = [np.array([float(vmin) - eps, float(vmax) + eps])]
    parts += [s.quantiles(min(NUM_BINS // 2, s.n)) for s in present]
    edges = np.unique(np.concatenate(parts))
    counts = []
    for s in (pos, neg):
        ge = s.count_at_least(edges)
        per_bin = ge[:-1] - ge[1:]
        per_bin[-1] = ge[-2]  # the last bin is closed
        counts.append(per_bin[::-1].astype(np.int64))
    return edges[:-1][::-1].copy(), counts[0], counts[1], pos.n, neg.n


def binned_curve_metrics(
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_pos: int, num_neg: int
) -> dict[str, Any]:
    """``PixBinaryClass``'s metrics from the frames' ``(edges, anomaly counts, normal counts)``
    in frame order."""
    nan = float("nan")
    if not frames or num_pos == 0 or num_neg == 0:
        reason = "no anomaly pixel" if num_pos == 0 else "no normal pixel"
        return {
            "aupr": nan,
            "auroc": nan,
            "fpr95": nan,
            "best_f1": nan,
            "best_f1_threshold": nan,
            "num_points": 0,
            "undefined_reason": reason if frames else "no frame",
        }
    thresholds = np.concatenate([f[0] for f in frames])
    order = np.argsort(thresholds)[::-1]
    thresholds = thresholds[order]
    tp = np.cumsum(np.concatenate([f[1] for f in frames])[order].astype(np.float64))
    fp = np.cumsum(np.concatenate([f[2] for f in frames])[order].astype(np.float64))
    keep = np.concatenate(
        [[0], np.flatnonzero(thresholds[:-1] != thresholds[1:]), [thresholds.size - 1]]
    )
    thresholds, tp, fp = thresholds[keep], tp[keep], fp[keep]
    if tp[0] != 0 or fp[0] != 0:
        thresholds = np.concatenate([[float(thresholds.max()) + 1], thresholds])
        tp, fp = np.concatenate([[0.0], tp]), np.concatenate([[0.0], fp])
    if tp[-1] != num_pos or fp[-1] != num_neg:
        thresholds = np.concatenate([thresholds, [float(thresholds.max()) - 1]])
        tp, fp = np.concatenate([tp, [num_pos]]), np.concatenate([fp, [num_neg]])
    tpr, fpr = tp / num_pos, fp / num_neg
    predicted = tp + fp
    precision = np.ones_like(tp)
    np.divide(tp, predicted, out=precision, where=predicted > 0)
    f1 = 2 * tp / (2 * tp + fp + (num_pos - tp))
    i95 = int(np.searchsorted(tpr, 0.95, side="left"))
    best = int(np.nanargmax(f1))
    return {
        "aupr": float(np.sum(np.diff(tpr) * precision[1:])),
        "auroc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
        "fpr95": float(fpr[i95]) if i95 < tpr.size else 1.0,
        "best_f1": float(f1[best]),
        "best_f1_threshold": float(thresholds[best]),
        "num_points": int(tp.size),
        "undefined_reason": None,
    }


class SmiycPixels(Accumulator):
    """``PixBinaryClass`` over a split: per-frame binned counts (a few KiB per frame), merged
    in frame-id order (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]
        self.add_state("frames", {}, "union")
        self.overflow: list[str]
        self.add_state("overflow", [], "extend")
        self.empty: int
        self.add_state("empty", 0, "sum")

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor,
        image_ids: list[str],
    ) -> None:
        """Add a batch (N, H, W): scores (finite where ``valid``), bool masks, one id per
        image. Scores beyond float16's range (|s| > 65504) make the metric undefined (the
        benchmark's float16 maps would hold infinities)."""
        for i, image_id in enumerate(image_ids):
            if image_id in self.frames:
                raise ValueError(f"image id {image_id!r} was already added")
            v = valid[i].detach().cpu().numpy()
            s = scores[i].detach()
            s = (s.float() if s.dtype == torch.bfloat16 else s).cpu().numpy()[v]
            if s.size == 0:
                self.empty += 1
                continue
            if s.dtype != np.float16:
                if s.size and float(np.abs(s).max()) > _F16_MAX:
                    self.overflow.append(image_id)
                    continue
                s = s.astype(np.float16)
            y = is_anomaly[i].detach().cpu().numpy()[v]
            self.frames[image_id] = frame_bins(s, y)

    def compute(self) -> dict[str, Any]:
        """``aupr``, ``auroc``, ``fpr95``, ``best_f1``, ``best_f1_threshold``,
        ``component_threshold`` (float16), ``num_pos``, ``num_neg``, ``num_frames``,
        ``num_empty`` (frames without an evaluated pixel, left out), ``num_points``,
        ``definition`` and ``undefined_reason``."""
        frames = [self.frames[k] for k in sorted(self.frames)]
        num_pos = sum(f[3] for f in frames)
        num_neg = sum(f[4] for f in frames)
        if self.overflow:
            res = binned_curve_metrics([], 0, 0)
            first = ", ".join(sorted(self.overflow)[:3])
            res["undefined_reason"] = (
                f"scores beyond float16's range (|s| > 65504) in {len(self.overflow)} image(s) "
                f"(first: {first}); the benchmark stores float16 maps"
            )
        else:
            res = binned_curve_metrics([f[:3] for f in frames], num_pos, num_neg)
        t = res["best_f1_threshold"]
        res.update(
            component_threshold=component_threshold(t) if math.isfinite(t) else None,
            num_pos=num_pos,
            num_neg=num_neg,
            num_frames=len(frames),
            num_empty=int(self.empty),
            definition=PIXEL_DEFINITION,
        )
        return res
