"""Streaming, mergeable histogram of float32 scores split by label (negative / positive).

Each score is mapped to an order-preserving integer key (the float32 bit pattern, with the
non-sign bits flipped for negative numbers, so integer order equals float order). The top
``bits`` bits of the unsigned key are the bin; the remaining low bits are tracked per bin as a
minimum and a maximum. A bin whose minimum equals its maximum holds exactly one distinct
float32 value ("pure"); then ties and thresholds are bit-exact. Bins of NaN and +-inf (exponent
all ones) are kept apart and reported, never mixed with finite scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_BITS = 21
MIN_BITS = 17
MAX_BITS = 21
CHUNK = 1 << 20


def float_keys(scores: torch.Tensor) -> torch.Tensor:
    """Return the int32 order-preserving keys of ``scores`` (flattened, compared as float32).

    ``-0.0`` is mapped to ``+0.0`` first, so the two zeros tie as they do in float comparison.
    """
    s = scores.reshape(-1)
    s = s.to(torch.float32) if s.dtype != torch.float32 else s
    s = s + 0.0
    b = s.view(torch.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


def keys_to_float(keys: np.ndarray) -> np.ndarray:
    """Invert :func:`float_keys`: int32 keys to float32 values."""
    k = np.asarray(keys, dtype=np.int64).astype(np.int32)
    b = k ^ ((k >> 31) & 0x7FFFFFFF)
    return b.view(np.float32)


@dataclass
class Bins:
    """Occupied finite bins in decreasing score order."""

    index: np.ndarray  # int64 bin numbers
    neg: np.ndarray  # int64 counts of negatives per bin
    pos: np.ndarray  # int64 counts of positives per bin
    low_value: np.ndarray  # float64 smallest score of the bin
    high_value: np.ndarray  # float64 largest score of the bin
    pure: np.ndarray  # bool: the bin holds a single distinct float32 value
    nonfinite_neg: int
    nonfinite_pos: int


class ScoreHistogram:
    """Dense two-class histogram over the top ``bits`` bits of the score keys.

    State: ``counts`` int64 of length ``2 * 2**bits + 1`` (negatives, positives, one slot for
    ignored pixels), ``lo``/``hi`` int16 of length ``2**bits`` (low-bit minimum / maximum per
    bin). With the default 21 bits that is 40 MiB, independent of the number of pixels.
    """

    @staticmethod
    def check_bits(bits: int) -> None:
        """Raise ValueError unless ``bits`` is a supported histogram resolution."""
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        self.check_bits(bits)
        self.bits = int(bits)
        self.nbins = 1 << self.bits
        self.shift = 32 - self.bits
        self.low_mask = (1 << self.shift) - 1
        self.counts = torch.zeros(2 * self.nbins + 1, dtype=torch.int64)
        self.lo = torch.full((self.nbins,), self.low_mask, dtype=torch.int16)
        self.hi = torch.zeros(self.nbins, dtype=torch.int16)
        self._ones = torch.ones(CHUNK, dtype=torch.int64)

    @property
    def nbytes(self) -> int:
        """Bytes of accumulator state."""
        return sum(t.numel() * t.element_size() for t in (self.counts, self.lo, self.hi))

    def reset(self) -> None:
        """Forget every count."""
        self.counts.zero_()
        self.lo.fill_(self.low_mask)
        self.hi.zero_()

    def _to(self, device: torch.device) -> None:
        if self.counts.device != device:
            self.counts = self.counts.to(device)
            self.lo = self.lo.to(device)
            self.hi = self.hi.to(device)
            self._ones = self._ones.to(device)

    @torch.no_grad()
    def update(
        self, scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None
    ) -> None:
        """Count flattened ``scores`` with labels ``positive`` where ``valid`` (None = all)."""
        self._to(scores.device)
        keys = float_keys(scores)
        pos = positive.reshape(-1)
        val = None if valid is None else valid.reshape(-1)
        if val is not None and bool(val.all()):
            val = None
        for start in range(0, keys.numel(), CHUNK):
            stop = min(start + CHUNK, keys.numel())
            self._update_chunk(
                keys[start:stop], pos[start:stop], None if val is None else val[start:stop]
            )

    def _update_chunk(self, k: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor | None) -> None:
        idx = (k >> self.shift) + (self.nbins >> 1)
        idx = idx + (pos.to(torch.int32) << self.bits)
        if valid is not None:
            # Ignored pixels go to the last slot; their low bits land on bin 0, a NaN/-inf bin
            # whose purity is never used.
            idx = torch.where(valid, idx, 2 * self.nbins)
        idx = idx.to(torch.int64)
        self.counts.scatter_add_(0, idx, self._ones[: idx.numel()])
        bin_idx = idx & (self.nbins - 1)
        low = (k & self.low_mask).to(torch.int16)
        self.lo.scatter_reduce_(0, bin_idx, low, "amin")
        self.hi.scatter_reduce_(0, bin_idx, low, "amax")

    def merge(self, other: ScoreHistogram) -> None:
        """Add ``other`` (same ``bits``) into this histogram."""
        if other.bits != self.bits:
            raise ValueError(f"cannot merge histograms of {other.bits} and {self.bits} bits")
        self.counts += other.counts.to(self.counts.device)
        torch.minimum(self.lo, other.lo.to(self.lo.device), out=self.lo)
        torch.maximum(self.hi, other.hi.to(self.hi.device), out=self.hi)

    def all_reduce(self) -> None:
        """Combine the histograms of all torch.distributed ranks (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)
        lo, hi = self.lo.to(torch.int32), self.hi.to(torch.int32)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        self.lo.copy_(lo)
        self.hi.copy_(hi)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """Tensors and plain values that :meth:`load_state_dict` restores."""
        return {
            "bits": self.bits,
            "counts": self.counts.cpu(),
            "lo": self.lo.cpu(),
            "hi": self.hi.cpu(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore a state written by :meth:`state_dict` (same ``bits``)."""
        if int(state["bits"]) != self.bits:
            raise ValueError(f"state has {state['bits']} bits, histogram has {self.bits}")
        self.counts = torch.as_tensor(state["counts"]).to(torch.int64).clone()
        self.lo = torch.as_tensor(state["lo"]).to(torch.int16).clone()
        self.hi = torch.as_tensor(state["hi"]).to(torch.int16).clone()
        self._ones = self._ones.cpu()

    def finite_bins(self) -> Bins:
        """Occupied bins of finite scores, highest score first, and the non-finite counts."""
        counts = self.counts.cpu().numpy()
        neg = counts[: self.nbins]
        pos = counts[self.nbins : 2 * self.nbins]
        # Bins whose top 9 key bits are all zeros or all ones hold exponent-255 floats.
        edge = 1 << (self.bits - 9)
        nonfinite_neg = int(neg[:edge].sum() + neg[-edge:].sum())
        nonfinite_pos = int(pos[:edge].sum() + pos[-edge:].sum())
        occupied = np.flatnonzero((neg[edge:-edge] + pos[edge:-edge]) > 0)[::-1] + edge
        lo = self.lo.cpu().numpy().astype(np.int64)[occupied]
        hi = self.hi.cpu().numpy().astype(np.int64)[occupied]
        top = (occupied.astype(np.int64) - (self.nbins >> 1)) << self.shift
        return Bins(
            index=occupied.astype(np.int64),
            neg=neg[occupied].astype(np.int64),
            pos=pos[occupied].astype(np.int64),
            low_value=keys_to_float(top | lo).astype(np.float64),
            high_value=keys_to_float(top | hi).astype(np.float64),
            pure=lo == hi,
            nonfinite_neg=nonfinite_neg,
            nonfinite_pos=nonfinite_pos,
        )

    def add_counts(self, keys: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> None:
        """Add exact counts of int32 ``keys`` (from :func:`float_keys`)."""
        if keys.size == 0:
            return
        k = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.int32)).to(self.counts.device)
        b = ((k >> self.shift) + (self.nbins >> 1)).to(torch.int64)
        dev = self.counts.device
        self.counts.scatter_add_(0, b, torch.from_numpy(np.asarray(neg, np.int64)).to(dev))
        self.counts.scatter_add_(
            0, b + self.nbins, torch.from_numpy(np.asarray(pos, np.int64)).to(dev)
        )
        low = (k & self.low_mask).to(torch.int16)
        self.lo.scatter_reduce_(0, b, low, "amin")
        self.hi.scatter_reduce_(0, b, low, "amax")
