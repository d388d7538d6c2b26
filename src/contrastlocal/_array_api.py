"""The one internal door to the array API standard (private).

Every numeric helper takes the namespace ``xp`` keyword-only and uses only functions of the
standard, so the same code runs on NumPy, PyTorch, JAX, CuPy and array-api-strict.
"""

from __future__ import annotations

import sys
from typing import Any

from array_api_compat import array_namespace as _compat_array_namespace
from array_api_compat import device as _compat_device
from array_api_compat import size

from ._typing import Array, Namespace

__all__ = [
    "array_namespace",
    "compute_dtype",
    "device",
    "eps_for",
    "is_floating",
    "is_torch_namespace",
    "l2_normalize",
    "logsumexp",
    "size",
]


def array_namespace(*arrays: Array) -> Namespace:
    """Return the arrays' namespace (array_api_compat's), resolving torch tensors directly.

    The direct path for torch gives the same namespace without array_api_compat's
    ``lru_cache`` lookup, which ``torch.compile`` would warn about on every trace.
    """
    torch = sys.modules.get("torch")
    if torch is not None and arrays and all(isinstance(a, torch.Tensor) for a in arrays):
        from array_api_compat import torch as torch_namespace

        return torch_namespace
    return _compat_array_namespace(*arrays)


def device(x: Array) -> Any:
    """Return the array's device (array_api_compat's), read directly from torch tensors."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.device
    return _compat_device(x)


def is_torch_namespace(xp: Namespace) -> bool:
    """Whether `xp` is PyTorch's namespace (``torch`` or array_api_compat's wrapper of it)."""
    return getattr(xp, "__name__", None) in ("torch", "array_api_compat.torch")


def is_floating(x: Array, *, xp: Namespace) -> bool:
    """Whether `x` has a real floating dtype."""
    return bool(xp.isdtype(x.dtype, "real floating"))


def compute_dtype(x: Array, *, xp: Namespace) -> Any:
    """Dtype in which a loss on `x` is computed: float32 at least (half precisions are upcast)."""
    if x.dtype == xp.float64:
        return xp.float64
    return xp.float32


def eps_for(dtype: Any, *, xp: Namespace) -> float:
    """Return a dtype-aware epsilon for the squared norm (too tiny to change a real norm)."""
    return float(xp.finfo(dtype).eps) ** 2


def l2_normalize(x: Array, *, axis: int = -1, xp: Namespace) -> Array:
    """Divide `x` by its L2 norm along `axis`; an all-zero vector stays zero (finite gradient).

    The squared norm is clamped below by a dtype-aware epsilon, as TensorFlow's ``l2_normalize``
    does with 1e-12, so zero rows give zero vectors instead of NaN.
    """
    sq = xp.sum(x * x, axis=axis, keepdims=True)
    return x / xp.sqrt(xp.maximum(sq, xp.asarray(eps_for(x.dtype, xp=xp), dtype=x.dtype)))


def logsumexp(x: Array, *, axis: int = -1, keepdims: bool = False, xp: Namespace) -> Array:
    """Max-subtracted log-sum-exp along `axis` (never ``exp`` then ``log`` on raw values)."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    # The max is a constant shift: stop its gradient where the framework allows it.
    if is_torch_namespace(xp):
        m = m.detach()
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
    return out
