"""Exact score counts: sorted distinct float32 keys with per-label counts, bounded in size."""

from __future__ import annotations

import numpy as np
import torch

from hazardseg.metrics._histogram import Bins, float_keys, keys_to_float

DEFAULT_MAX_DISTINCT = 1 << 18
"""Distinct scores kept exactly (20 bytes each: 5 MiB, plus as much pending at most)."""


def _run_lengths(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    if sorted_keys.size == 0:
        return sorted_keys, np.zeros(0, np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_keys)) + 1))
    counts = np.diff(np.concatenate((starts, [sorted_keys.size])))
    return sorted_keys[starts], counts.astype(np.int64)


def combine(
    keys: np.ndarray, neg: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum the counts of equal keys; return sorted distinct keys and their counts."""
    if keys.size == 0:
        return keys.astype(np.int32), neg.astype(np.int64), pos.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(k)) + 1))
    return (
        k[starts].astype(np.int32),
        np.add.reduceat(neg[order], starts).astype(np.int64),
        np.add.reduceat(pos[order], starts).astype(np.int64),
    )


class SparseCounts:
    """Exact per-label counts of every distinct float32 score, up to ``max_distinct`` keys.

    ``update`` sorts each batch's keys and keeps their run lengths as pending parts; parts are
    folded into the table when they grow as large as the table. ``overflowed`` turns True when
    the table would exceed ``max_distinct`` keys; the owner then moves the counts to a dense
    histogram.
    """

    def __init__(self, max_distinct: int = DEFAULT_MAX_DISTINCT) -> None:
        self.max_distinct = int(max_distinct)
        self.keys = np.zeros(0, np.int32)
        self.neg = np.zeros(0, np.int64)
        self.pos = np.zeros(0, np.int64)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending = 0
        self.overflowed = False

    @property
    def nbytes(self) -> int:
        """Bytes of table and pending parts."""
        arrays = [self.keys, self.neg, self.pos, *(a for p in self._parts for a in p)]
        return sum(a.nbytes for a in arrays)

    def update(
        self, scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None
    ) -> None:
        """Count flattened ``scores`` with labels ``positive`` where ``valid`` (None = all).

        On an accelerator the keys are sorted and run-length counted on the scores' device;
        only the distinct keys and their counts move to the CPU table.
        """
        if scores.device.type != "cpu":
            self._update_on_device(scores, positive, valid)
            return
        keys = float_keys(scores).cpu().numpy()
        pos = positive.reshape(-1).cpu().numpy()
        if valid is not None:
            v = valid.reshape(-1).cpu().numpy()
            neg_keys, pos_keys = keys[v & ~pos], keys[v & pos]
        else:
            neg_keys, pos_keys = keys[~pos], keys[pos]
        nk, nc = _run_lengths(np.sort(neg_keys))
        pk, pc = _run_lengths(np.sort(pos_keys))
        self.add(
            np.concatenate((nk, pk)),
            np.concatenate((nc, np.zeros_like(pc))),
            np.concatenate((np.zeros_like(nc), pc)),
        )

    def _update_on_device(
        self, scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None
    ) -> None:
        keys = float_keys(scores)
        pos = positive.reshape(-1).to(keys.device)
        v = None if valid is None else valid.reshape(-1).to(keys.device)
        parts = []
        for label in (False, True):
            sel = pos if label else ~pos
            if v is not None:
                sel = sel & v
            distinct, counts = torch.unique_consecutive(
                torch.sort(keys[sel]).values, return_counts=True
            )
            parts.append((distinct.cpu().numpy(), counts.cpu().numpy().astype(np.int64)))
        (nk, nc), (pk, pc) = parts
        self.add(
            np.concatenate((nk, pk)),
            np.concatenate((nc, np.zeros_like(pc))),
            np.concatenate((np.zeros_like(nc), pc)),
        )

    def add(self, keys: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> None:
        """Add counts for (not necessarily distinct or sorted) keys."""
        if keys.size == 0:
            return
        self._parts.append((keys.astype(np.int32), neg.astype(np.int64), pos.astype(np.int64)))
        self._pending += keys.size
        if self._pending >= max(self.keys.size, 1 << 16) or keys.size > self.max_distinct:
            self.flush()

    def flush(self) -> None:
        """Fold the pending parts into the table."""
        if not self._parts:
            return
        parts = [(self.keys, self.neg, self.pos), *self._parts]
        self._parts, self._pending = [], 0
        self.keys, self.neg, self.pos = combine(
            *(np.concatenate([p[i] for p in parts]) for i in range(3))
        )
        if self.keys.size > self.max_distinct:
            self.overflowed = True

    def finite_bins(self) -> Bins:
        """Distinct finite scores, highest first (every bin is pure), and non-finite counts."""
        self.flush()
        values = keys_to_float(self.keys)
        finite = np.isfinite(values)
        sel = np.flatnonzero(finite)[::-1]
        v = values[sel].astype(np.float64)
        return Bins(
            index=sel.astype(np.int64),
            neg=self.neg[sel],
            pos=self.pos[sel],
            low_value=v,
            high_value=v,
            pure=np.ones(sel.size, dtype=bool),
            nonfinite_neg=int(self.neg[~finite].sum()),
            nonfinite_pos=int(self.pos[~finite].sum()),
        )
