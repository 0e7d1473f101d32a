"""Deterministic, order-independent subsampling of feature vectors for streamed fitting.

Every vector gets a 62-bit key hashed from its float32 bit pattern and a seed; a sample of
size k is the k vectors with the smallest keys (a bottom-k sketch). The sample therefore
depends only on the multiset of vectors seen and the seed: not on batch size, batch order or
image order, and it can be kept while streaming in O(k) memory.
"""

from __future__ import annotations

import torch

_MASK62 = (1 << 62) - 1
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64


def _multipliers(dim: int, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    w = torch.randint(1, 2**62, (dim,), generator=gen, dtype=torch.int64) | 1
    return w.to(device)


def feature_keys(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """62-bit pseudo-random keys (M,) int64 of the float32 rows of ``x`` (M, D).

    Equal rows get equal keys; the key is a function of the row's bits and ``seed`` only.
    """
    bits = x.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    h = (bits * _multipliers(x.shape[1], seed, x.device)).sum(dim=1)
    h = h ^ (h >> 31)
    h = h * _GOLDEN
    h = h ^ (h >> 29)
    return h & _MASK62


class BottomK:
    """Streaming sample of the ``k`` rows with the smallest keys (ties: any, equal rows)."""

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.keys: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, rows: torch.Tensor) -> None:
        """Offer rows (M, D) with their keys (M,)."""
        if self.k <= 0 or keys.numel() == 0:
            return
        if self.keys is not None and self.rows is not None:
            keys = torch.cat([self.keys, keys.to(self.keys.device)])
            rows = torch.cat([self.rows, rows.to(self.rows.device, self.rows.dtype)])
        if keys.numel() > self.k:
            idx = torch.topk(keys, self.k, largest=False, sorted=False).indices
            keys, rows = keys[idx], rows[idx]
        self.keys, self.rows = keys, rows

    def result(self) -> torch.Tensor | None:
        """The sampled rows sorted by key (a canonical order), or None when none was seen."""
        if self.keys is None or self.rows is None:
            return None
        order = torch.argsort(self.keys, stable=True)
        return self.rows[order]
