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
from typing import TYPE_CHECKING, Any

from ._typing import Array, Namespace

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "as_positions",
    "check_choice",
    "check_flag",
    "check_floating",
    "check_int_in_range",
    "check_integer_ids",
    "check_ndim",
    "check_positive",
    "check_region_size",
    "check_temperature",
    "host_values",
    "points_key",
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


def check_flag(value: Any, name: str) -> bool:
    """Require a bool (not an int standing for one); return it."""
    if not isinstance(value, bool):
        msg = f"`{name}` must be a bool; got {value!r}."
        raise TypeError(msg)
    return value


def check_choice(value: Any, choices: Iterable[Any], name: str) -> Any:
    """Require `value` to be one of `choices`."""
    options = tuple(choices)
    if value not in options:
        msg = f"`{name}` must be one of {', '.join(repr(c) for c in options)}; got {value!r}."
        raise ValueError(msg)
    return value


# --------------------------------------------------------------------------------------------
# regions of the local loss: static settings (Python and NumPy, never arrays of a framework)
# --------------------------------------------------------------------------------------------


def check_region_size(region_size: Any) -> int:
    """Require the side K of the local loss's square regions: 1 or 3; return it as int."""
    import numpy as np

    if isinstance(region_size, bool) or not isinstance(region_size, (int, np.integer)):
        msg = f"`region_size` must be 1 or 3; got {region_size!r}."
        raise TypeError(msg)
    if int(region_size) not in (1, 3):
        msg = f"`region_size` must be 1 or 3; got {region_size!r}."
        raise ValueError(msg)
    return int(region_size)


def as_positions(positions: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    """Return static position metadata as an int64 NumPy array of `ndim` dims, last one 2.

    `layout` is the expected shape in words, e.g. ``"(R, 2)"``.
    """
    import numpy as np

    try:
        arr = np.asarray(positions)
    except Exception as err:  # e.g. an array on an accelerator
        msg = (
            f"`{name}` must be an int array-like of shape {layout} that NumPy can read "
            f"(positions are static settings); got {type(positions).__name__}."
        )
        raise TypeError(msg) from err
    if arr.ndim != ndim or arr.shape[-1] != 2:
        msg = f"`{name}` must have shape {layout}; got shape {arr.shape}."
        raise ValueError(msg)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        msg = f"`{name}` must hold integers; got dtype {arr.dtype}."
        raise TypeError(msg)
    return arr.astype(np.int64, copy=False)


def points_key(points: Any) -> tuple[tuple[int, int], ...]:
    """Return an (..., 2) integer array as a flat tuple of (x, y) pairs of Python ints.

    Hashable and built without arrays, so a compiler (``torch.compile``) treats it as a constant.
    """
    import numpy as np

    return tuple((int(x), int(y)) for x, y in np.asarray(points).reshape(-1, 2).tolist())


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
