"""Input validation helpers that raise clear `ValueError` / `TypeError` (private).

Messages name the argument in backticks, say what was expected and what was received. The
``check_*`` helpers inspect only metadata (ndim, shape, dtype kind, Python values), never array
values, so they are safe under ``jax.jit`` and lazy backends; :func:`host_values` is the one door
to values, and it opens only for host arrays outside a trace.
"""

from __future__ import annotations

import math
import sys
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
    "check_temperature",
    "host_values",
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


# --------------------------------------------------------------------------------------------
# values read on the host (never a device synchronisation, never inside a trace)
# --------------------------------------------------------------------------------------------


def _torch_traced(x: Any) -> bool:
    """Whether torch tensor `x` is being traced (torch.compile, torch.func) or is a fake one."""
    torch = sys.modules["torch"]  # loaded: `x` is a torch tensor (torch is imported by kernels)

    if torch.compiler.is_compiling():
        return True
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None:
        return False
    # inside torch.func.grad / vmap (even for a tensor the transform does not wrap)
    return bool(functorch.is_functorch_wrapped_tensor(x)
                or functorch.peek_interpreter_stack() is not None)


def host_values(x: Any) -> Any:
    """`x` as a NumPy array when its values are on the host and concrete, else ``None``.

    Host: NumPy arrays, CPU torch tensors outside torch.compile / torch.func, concrete CPU JAX
    arrays. Device arrays (CUDA tensors, CuPy, JAX on a GPU) and traced values give ``None``: a
    check reading them would synchronise the device or break the trace, so it is skipped.
    """
    import numpy as np

    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__
    if module.startswith("torch"):
        if x.device.type != "cpu" or _torch_traced(x):
            return None
        # `.data` and a DLPack view dispatch no operator (`.detach().numpy()` dispatches five),
        # so a host check adds nothing to a profiled step
        t = x.data if x.requires_grad else x
        if t.dtype.is_floating_point and t.itemsize < 4:
            t = t.float()
        return np.from_dlpack(t)
    if module.startswith("jax"):
        try:
            if "cpu" not in str(x.device).lower():
                return None
            return np.asarray(x)
        except Exception:  # a tracer under jax.jit / grad / vmap
            return None
    return None


def check_temperature(value: Any, *, xp: Namespace) -> Any:
    """Require a positive finite Python number, or a 0-D real floating array (learnable τ).

    A number is returned as float; an array is returned as it is (its value is checked only
    when it is on the host, see :func:`host_values`).
    """
    import numpy as np

    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()  # a NumPy scalar is a number, not an array
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if tuple(value.shape) != () or not xp.isdtype(value.dtype, "real floating"):
            msg = ("`temperature` must be a positive finite number or a 0-D real floating "
                   f"array (a learnable τ); got an array of shape {shape_of(value)} and dtype "
                   f"{value.dtype}.")
            raise TypeError(msg) if tuple(value.shape) == () else ValueError(msg)
        host = host_values(value)
        if host is not None:
            v = float(host)
            if not math.isfinite(v) or v <= 0.0:
                msg = f"`temperature` must be a positive finite number; got the array value {v}."
                raise ValueError(msg)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = ("`temperature` must be a positive finite number or a 0-D real floating array "
               f"(a learnable τ); got {value!r}.")
        raise TypeError(msg)
    return check_positive(value, "temperature")
