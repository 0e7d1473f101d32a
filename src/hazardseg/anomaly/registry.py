"""Name -> anomaly method registry: :func:`register_method` (a decorator on a method class or
builder), ``create_method(name, **options)``, ``list_methods()`` and ``DESCRIPTIONS`` (what each
method computes and where it comes from).

Method modules register themselves; the ``hazardseg.anomaly`` package imports every method
module, so the registry is complete whenever it is importable. This module imports no method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.errors import HazardsegError

METHODS: dict[str, Callable[..., AnomalyMethod]] = {}
"""Registered anomaly methods (name -> class or builder), in the order reports list them."""

DESCRIPTIONS: dict[str, str] = {}
"""One line per registered method: what its score computes and where it comes from."""

FAMILIES: dict[str, tuple[str, ...]] = {}
"""Methods that only apply to some model families (name -> the families), e.g. ``rba``."""

_RANKS: dict[str, int] = {}

B = TypeVar("B", bound=Callable[..., AnomalyMethod])


def register_method(
    name: str, *, rank: int, description: str, families: tuple[str, ...] | None = None
) -> Callable[[B], B]:
    """Decorator registering a method class (or a builder returning an AnomalyMethod) under
    ``name``; ``rank`` orders the listing (reports, ``all``), ``description`` is its one line,
    ``families`` the model families it applies to (None: every model). The builder's keyword
    parameters are the method's options."""

    def decorate(builder: B) -> B:
        if name in METHODS:
            raise ValueError(f"anomaly method {name!r} is registered twice")
        if families is not None:
            FAMILIES[name] = tuple(families)
        _RANKS[name] = rank
        order = sorted([*METHODS, name], key=_RANKS.__getitem__)
        entries = {**METHODS, name: builder}
        notes = {**DESCRIPTIONS, name: description}
        METHODS.clear()
        DESCRIPTIONS.clear()
        for key in order:
            METHODS[key] = entries[key]
            DESCRIPTIONS[key] = notes[key]
        return builder

    return decorate


def list_methods() -> list[str]:
    """Names of all registered anomaly methods."""
    return list(METHODS)


def method_options(name: str) -> list[str]:
    """Names of the options ``create_method(name, ...)`` accepts."""
    builder = _builder(name)
    return [p for p in inspect.signature(builder).parameters if p != "self"]


def _builder(name: str) -> Callable[..., AnomalyMethod]:
    if name not in METHODS:
        raise HazardsegError(
            f"unknown anomaly method '{name}'; expected one of: {', '.join(METHODS)}"
        )
    return METHODS[name]


def create_method(name: str, **options: Any) -> AnomalyMethod:
    """Build the method ``name`` with ``options``; unknown names or options raise HazardsegError."""
    builder = _builder(name)
    allowed = method_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "no options"
        raise HazardsegError(
            f"anomaly method '{name}': unknown option(s) {', '.join(unknown)}; expected {expected}"
        )
    params = inspect.signature(builder).parameters
    coerced = {k: _coerce_option(name, k, v, params[k].default) for k, v in options.items()}
    try:
        return builder(**coerced)
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HazardsegError(f"anomaly method '{name}': invalid options ({first})") from None


def _coerce_option(method: str, key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the option's default; HazardsegError otherwise."""

    def fail(expected: str) -> HazardsegError:
        return HazardsegError(
            f"anomaly method '{method}': option {key}={value!r}; expected {expected}"
        )

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("an integer")
        if isinstance(value, float) and not value.is_integer():
            raise fail("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise fail("a string")
    return value


def applies_to(name: str, family: str | None) -> bool:
    """Whether method ``name`` applies to a model of ``family`` (None: a family-restricted
    method does not)."""
    return name not in FAMILIES or (family is not None and family in FAMILIES[name])


def family_mismatch(name: str, family: str | None) -> str | None:
    """Why method ``name`` does not apply to a checkpoint of ``family`` (None when it does, or
    when the family is not known)."""
    if family is None or applies_to(name, family):
        return None
    return (
        f"anomaly method '{name}' needs a {' or '.join(FAMILIES[name])} model "
        f"(mask classification); this checkpoint is a {family} model"
    )


def parse_methods(spec: str | list[str], family: str | None = None) -> list[str]:
    """Parse "all" or a comma-separated list of method names (validated, de-duplicated) for a
    model of ``family``: "all" leaves out the methods of other families, naming one of them
    is a HazardsegError saying which families provide it."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "all":
            names.extend(n for n in METHODS if n not in names and applies_to(n, family))
            continue
        _builder(item)
        mismatch = family_mismatch(item, family)
        if mismatch:
            raise HazardsegError(mismatch)
        if item not in names:
            names.append(item)
    if not names:
        raise HazardsegError(f"no anomaly methods given in {spec!r}; expected 'all' or names")
    return names
