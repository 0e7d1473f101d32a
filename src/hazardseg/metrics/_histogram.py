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
from typing import Any

import numpy as np
import torch

DEFAULT_BITS = 22
MIN_BITS = 17
MAX_BITS = 22
CHUNK = 1 << 18


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


def float32_ceil(value: float) -> float:
    """Smallest float32 >= ``value``: ``float32(s) >= value`` iff ``float32(s) >= result``."""
    f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


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


INT32_MAX = 2**31 - 1
WIDE_BITS = 21
"""Finest resolution whose int64 counts still fit the memory cap (used after coarsening)."""


class ScoreHistogram:
    """Dense two-class histogram over the top ``bits`` bits of the score keys.

    State: ``counts`` of length ``2 * 2**bits + 1`` (negatives, positives, one slot for ignored
    pixels), ``lo``/``hi`` int16 of length ``2**bits`` (low-bit minimum / maximum per bin) and
    5.5 MiB of work buffers: 53.5 MiB with the default 22 bits. Counts are int32; before any
    count could pass 2**31 - 1 (more than 2.1 billion pixels), a histogram finer than 21 bits
    is coarsened once to 21 bits with int64 counts (46.5 MiB), otherwise its counts widen to
    int64. The state never exceeds 64 MiB, whatever the number of pixels.
    """

    @staticmethod
    def check_bits(bits: int) -> None:
        """Raise ValueError unless ``bits`` is a supported histogram resolution."""
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        self.check_bits(bits)
        self._set_bits(int(bits))
        self.total = 0  # pixels counted, ignored ones included
        self.counts = torch.zeros(2 * self.nbins + 1, dtype=torch.int32)
        self.lo = torch.full((self.nbins,), self.low_mask, dtype=torch.int16)
        self.hi = torch.zeros(self.nbins, dtype=torch.int16)
        self._ones = torch.ones(CHUNK, dtype=torch.int32)
        self._f = torch.empty(CHUNK, dtype=torch.float32)
        self._t = torch.empty(CHUNK, dtype=torch.int32)
        self._idx = torch.empty(CHUNK, dtype=torch.int64)
        self._low = torch.empty(CHUNK, dtype=torch.int16)

    def _set_bits(self, bits: int) -> None:
        self.bits = bits
        self.nbins = 1 << bits
        self.shift = 32 - bits
        self.low_mask = (1 << self.shift) - 1

    @property
    def nbytes(self) -> int:
        """Bytes of accumulator state."""
        tensors = (self.counts, self.lo, self.hi, self._ones, self._f, self._t, self._idx)
        return sum(t.numel() * t.element_size() for t in (*tensors, self._low))

    def reset(self) -> None:
        """Forget every count."""
        self.counts.zero_()
        self.lo.fill_(self.low_mask)
        self.hi.zero_()
        self.total = 0

    def to_device(self, device: torch.device) -> None:
        """Move the counts (and work buffers) to ``device``."""
        if self.counts.device != device:
            for name in ("counts", "lo", "hi", "_ones", "_f", "_t", "_idx", "_low"):
                setattr(self, name, getattr(self, name).to(device))

    def coarsen(self) -> None:
        """Merge pairs of neighbouring bins (one bit less) and widen the counts to int64."""
        if self.bits <= MIN_BITS:
            raise ValueError(f"cannot coarsen a {self.bits}-bit histogram")
        old_nbins, old_shift = self.nbins, self.shift
        counts = self.counts.to(torch.int64)
        neg = counts[:old_nbins].view(-1, 2).sum(dim=1)
        pos = counts[old_nbins : 2 * old_nbins].view(-1, 2).sum(dim=1)
        occupied = (counts[:old_nbins] + counts[old_nbins : 2 * old_nbins]).view(-1, 2) > 0
        odd = torch.tensor([0, 1 << old_shift], dtype=torch.int32, device=counts.device)
        lo = self.lo.to(torch.int32).view(-1, 2) | odd
        hi = self.hi.to(torch.int32).view(-1, 2) | odd
        self._set_bits(self.bits - 1)
        lo = torch.where(occupied, lo, self.low_mask).amin(dim=1)
        hi = torch.where(occupied, hi, 0).amax(dim=1)
        self.counts = torch.cat((neg, pos, counts[-1:]))
        self.lo, self.hi = lo.to(torch.int16), hi.to(torch.int16)
        self._ones = self._ones.to(torch.int64)

    def _widen(self) -> None:
        if self.counts.dtype == torch.int32:
            if self.bits > WIDE_BITS:
                self.coarsen()
            else:
                self.counts = self.counts.to(torch.int64)
                self._ones = self._ones.to(torch.int64)

    def _reserve(self, extra: int) -> None:
        if self.counts.dtype == torch.int32 and self.total + extra > INT32_MAX:
            self._widen()

    @torch.no_grad()
    def update(
        self, scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None
    ) -> None:
        """Count flattened ``scores`` with labels ``positive`` where ``valid`` (None = all)."""
        self.to_device(scores.device)
        s = scores.reshape(-1)
        self._reserve(s.numel())
        self.total += s.numel()
        pos = positive.reshape(-1)
        val = None if valid is None else valid.reshape(-1)
        if val is not None and bool(val.all()):
            val = None
        for start in range(0, s.numel(), CHUNK):
            part = slice(start, min(start + CHUNK, s.numel()))
            self._update_chunk(s[part], pos[part], None if val is None else val[part])

    def _update_chunk(
        self, scores: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor | None
    ) -> None:
        # Work buffers are reused so the hot loop allocates nothing.
        m = scores.numel()
        f, t, idx, low = self._f[:m], self._t[:m], self._idx[:m], self._low[:m]
        torch.add(scores, 0.0, out=f)  # float32, and -0.0 becomes +0.0
        k = f.view(torch.int32)
        torch.bitwise_right_shift(k, 31, out=t)
        t.bitwise_and_(0x7FFFFFFF)
        k.bitwise_xor_(t)  # order-preserving key
        torch.bitwise_right_shift(k, self.shift, out=t)
        t.add_(self.nbins >> 1)
        idx.copy_(t)
        idx.add_(pos, alpha=self.nbins)
        if valid is not None:
            # Ignored pixels go to the last slot; their low bits land on bin 0, a NaN/-inf bin
            # whose purity is never used.
            idx.masked_fill_(~valid, 2 * self.nbins)
        self.counts.scatter_add_(0, idx, self._ones[:m])
        idx.bitwise_and_(self.nbins - 1)
        torch.bitwise_and(k, self.low_mask, out=t)
        low.copy_(t)
        self.lo.scatter_reduce_(0, idx, low, "amin")
        self.hi.scatter_reduce_(0, idx, low, "amax")

    def merge(self, other: ScoreHistogram) -> None:
        """Add ``other`` into this histogram (the finer of the two is coarsened to match)."""
        o = other
        while True:
            if self.bits > o.bits:
                self.coarsen()
            elif o.bits > self.bits:
                o = o.copy() if o is other else o
                o.coarsen()
            elif self.counts.dtype == torch.int32 and (
                o.counts.dtype == torch.int64 or self.total + o.total > INT32_MAX
            ):
                self._widen()
            else:
                break
        self.counts += o.counts.to(self.counts.device, self.counts.dtype)
        torch.minimum(self.lo, o.lo.to(self.lo.device), out=self.lo)
        torch.maximum(self.hi, o.hi.to(self.hi.device), out=self.hi)
        self.total += o.total

    def copy(self) -> ScoreHistogram:
        """An independent copy."""
        twin = ScoreHistogram.__new__(ScoreHistogram)
        twin.__dict__.update(self.__dict__)
        for name in ("counts", "lo", "hi"):
            setattr(twin, name, getattr(self, name).clone())
        return twin

    def all_reduce(self) -> None:
        """Combine the histograms of all torch.distributed ranks (no-op when not distributed).

        Counts stay on their device; :mod:`hazardseg.distributed` moves them to the backend's.
        """
        from hazardseg import distributed

        if not distributed.is_distributed():
            return
        # counts filled under inference mode (evaluation) are inference tensors: update them
        # in place only under inference mode
        with torch.inference_mode():
            self._all_reduce(distributed)

    def _all_reduce(self, distributed: Any) -> None:
        info = torch.tensor([self.bits, -int(self.counts.dtype == torch.int64)])
        distributed.all_reduce(info, "min")
        total = torch.tensor([self.total], dtype=torch.int64)
        distributed.all_reduce(total, "sum")
        while self.bits > int(info[0]):
            self.coarsen()
        if int(info[1]) < 0 or int(total[0]) > INT32_MAX:
            self._widen()
            while self.bits > WIDE_BITS:
                self.coarsen()
        distributed.all_reduce(self.counts, "sum")
        lo, hi = self.lo.to(torch.int32), self.hi.to(torch.int32)
        distributed.all_reduce(lo, "min")
        distributed.all_reduce(hi, "max")
        self.lo.copy_(lo)
        self.hi.copy_(hi)
        self.total = int(total[0])

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """Tensors and plain values that :meth:`load_state_dict` restores."""
        return {
            "bits": self.bits,
            "total": self.total,
            "counts": self.counts.cpu(),
            "lo": self.lo.cpu(),
            "hi": self.hi.cpu(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore a state written by :meth:`state_dict`."""
        dev = self._f.device
        self._set_bits(int(state["bits"]))
        self.total = int(state["total"])
        self.counts = torch.as_tensor(state["counts"]).to(dev).clone()
        self.lo = torch.as_tensor(state["lo"]).to(dev, torch.int16).clone()
        self.hi = torch.as_tensor(state["hi"]).to(dev, torch.int16).clone()
        if self.counts.dtype not in (torch.int32, torch.int64) or self.counts.numel() != (
            2 * self.nbins + 1
        ):
            raise ValueError("histogram state has counts of the wrong type or length")
        self._ones = self._ones.to(self.counts.dtype)

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
        extra = int(np.sum(neg)) + int(np.sum(pos))
        self._reserve(extra)
        self.total += extra
        k = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.int32)).to(self.counts.device)
        b = ((k >> self.shift) + (self.nbins >> 1)).to(torch.int64)
        dev = self.counts.device
        dtype = self.counts.dtype
        self.counts.scatter_add_(0, b, torch.from_numpy(np.asarray(neg, np.int64)).to(dev, dtype))
        self.counts.scatter_add_(
            0, b + self.nbins, torch.from_numpy(np.asarray(pos, np.int64)).to(dev, dtype)
        )
        low = (k & self.low_mask).to(torch.int16)
        self.lo.scatter_reduce_(0, b, low, "amin")
        self.hi.scatter_reduce_(0, b, low, "amax")
