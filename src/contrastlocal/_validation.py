"""Input validation helpers that raise clear `ValueError` / `TypeError` (private).

Messages name the argument in backticks, say what was expected and what was received. Only
metadata (ndim, shape, dtype kind, Python values) is inspected, never array values, so the checks
are safe under ``jax.jit`` and lazy backends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ._typing import Array, Namespace

__all__ = [
    "check_choice",
    "check_floating",
    "check_int_in_range",
    "check_integer_ids",
    "check_ndim",
    "check_positive",
    "shape_of",
]


def shape_of(x: Array) -> tuple[int | None, ...]:
    """Shape of `x` as a plain tuple."""
    return tuple(x.shape)


def check_ndim(x: Array, ndim: int, name: str, layout: str) -> None:
    """Require ``x.ndim == ndim``; `layout` is the expected shape in words, e.g. ``"(N, D)"``."""
    if not hasattr(x, "ndim") or not hasattr(x, "shape"):
        msg = f"`{name}` must be an array of shape {layout}; got {type(x).__name__}."
        raise TypeError(msg)
    if x.ndim != ndim:
        msg = f"`{name}` must be {ndim}-D with shape {layout}; got shape {shape_of(x)}."
        raise ValueError(msg)


def check_floating(x: Array, name: str, *, xp: Namespace) -> None:
    """Require a real floating dtype."""
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"`{name}` must have a real floating dtype; got dtype {x.dtype}."
        raise TypeError(msg)


def check_integer_ids(x: Array, n: int | None, name: str, *, xp: Namespace) -> None:
    """Require a 1-D integer array of length `n` (metadata such as image or partition ids)."""
    check_ndim(x, 1, name, "(N,)")
    if not xp.isdtype(x.dtype, "integral"):
        msg = f"`{name}` must be an integer array of shape (N,); got dtype {x.dtype}."
        raise TypeError(msg)
    if n is not None and x.shape[0] is not None and x.shape[0] != n:
        msg = f"`{name}` must have length N = {n} (one entry per row); got shape {shape_of(x)}."
        raise ValueError(msg)


def check_positive(value: Any, name: str) -> float:
    """Require a finite real number > 0; return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"`{name}` must be a positive finite number; got {value!r}."
        raise TypeError(msg)
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        msg = f"`{name}` must be a positive finite number; got {value!r}."
        raise ValueError(msg)
    return v


def check_int_in_range(
    value: Any, name: str, low: int | None = None, high: int | None = None
) -> int:
    """Require an int (not bool) with ``low <= value <= high`` where bounds are given."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"`{name}` must be an integer; got {value!r}."
        raise TypeError(msg)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        msg = f"`{name}` must be in [{lo}, {hi}]; got {value}."
        raise ValueError(msg)
    return value


def check_choice(value: Any, choices: Iterable[Any], name: str) -> Any:
    """Require `value` to be one of `choices`."""
    options = tuple(choices)
    if value not in options:
        msg = f"`{name}` must be one of {', '.join(repr(c) for c in options)}; got {value!r}."
        raise ValueError(msg)
    return value
