"""The one protocol of every metric accumulator: ``update`` adds data, ``merge`` adds another
accumulator, ``all_reduce`` combines the accumulators of every torch.distributed rank,
``compute`` returns the metrics, ``to`` moves tensor state, ``reset`` forgets.

A subclass declares its state with :meth:`Accumulator.add_state` (a name, a default and how
two values combine) and its parts with :meth:`Accumulator.add_child` (another accumulator);
``merge``, ``all_reduce``, ``to`` and ``reset`` then come from this class, as in
torchmetrics' ``add_state``. An accumulator whose state needs its own combination (the
pooled score tables) overrides :meth:`merge_state` / :meth:`all_reduce_state`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

REDUCTIONS: tuple[str, ...] = ("sum", "max", "extend", "union")
"""How two values of a state combine: add (tensors, arrays, numbers), maximum, concatenate
lists, union of dicts with disjoint keys."""


def _combine(reduce: str, mine: Any, theirs: Any, name: str) -> Any:
    if reduce == "sum":
        if isinstance(mine, torch.Tensor):
            return mine + theirs.to(mine.device)
        return mine + theirs
    if reduce == "max":
        if isinstance(mine, torch.Tensor):
            return torch.maximum(mine, theirs.to(mine.device))
        return max(mine, theirs)
    if reduce == "extend":
        return [*mine, *theirs]
    overlap = mine.keys() & theirs.keys()
    if overlap:
        raise ValueError(f"{name}: keys present in both accumulators: {sorted(overlap)[:3]}")
    return {**mine, **theirs}


class Accumulator:
    """Base of every metric accumulator (module docstring)."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[Any, str]] = {}
        self._children: list[str] = []

    # ------------------------------------------------------------------ declaration
    def add_state(self, name: str, default: Any, reduce: str) -> None:
        """Declare state ``name`` (set to a copy of ``default``) combined by ``reduce``."""
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
        self._states[name] = (default, reduce)
        setattr(self, name, copy.deepcopy(default))

    def add_child(self, name: str, child: Accumulator) -> None:
        """Declare a part: merged, reduced, moved and reset with this accumulator."""
        self._children.append(name)
        setattr(self, name, child)

    def children(self) -> dict[str, Accumulator]:
        """The parts, by name."""
        return {n: getattr(self, n) for n in self._children}

    # ------------------------------------------------------------------ protocol
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add data."""
        raise NotImplementedError

    def compute(self, *args: Any, **kwargs: Any) -> Any:
        """The metrics of everything added."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything added."""
        for name, (default, _) in self._states.items():
            setattr(self, name, copy.deepcopy(default))
        for child in self.children().values():
            child.reset()

    def check_mergeable(self, other: Accumulator) -> None:
        """Raise ValueError when ``other`` cannot be merged into this one (other settings)."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__}")

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s data into this accumulator; return self."""
        self.check_mergeable(other)
        self.merge_state(other)
        for name, child in self.children().items():
            child.merge(getattr(other, name))
        return self

    def merge_state(self, other: Accumulator) -> None:
        """Combine the declared states (override for state that needs its own rule)."""
        for name, (_, reduce) in self._states.items():
            value = _combine(reduce, getattr(self, name), getattr(other, name), name)
            setattr(self, name, value)

    def all_reduce(self) -> None:
        """Combine the accumulators of every rank so each holds the total (a collective call
        under torch.distributed; nothing otherwise)."""
        from hazardseg import distributed

        if not distributed.is_distributed():
            return
        self.all_reduce_state()
        for child in self.children().values():
            child.all_reduce()

    def all_reduce_state(self) -> None:
        """Combine the declared states across ranks: tensors summed or maxed on their device,
        everything else gathered and combined in rank order."""
        from hazardseg import distributed

        ops = {"sum": "sum", "max": "max"}
        objects = {}
        for name, (_, reduce) in self._states.items():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor) and reduce in ops:
                distributed.all_reduce(value, ops[reduce])
            else:
                objects[name] = value
        if objects:
            parts = distributed.gather_objects(objects)
            for name, value in objects.items():
                reduce = self._states[name][1]
                total = parts[0][name]
                for part in parts[1:]:
                    total = _combine(reduce, total, part[name], name)
                setattr(self, name, total if not isinstance(value, int) else int(total))

    def to(self, device: str | torch.device) -> Accumulator:
        """Move tensor state (and the parts') to ``device``; return self."""
        for name in self._states:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        for child in self.children().values():
            child.to(device)
        return self

    def apply(self, fn: Callable[[Accumulator], None]) -> None:
        """Call ``fn`` on this accumulator and every part, depth first."""
        for child in self.children().values():
            child.apply(fn)
        fn(self)
