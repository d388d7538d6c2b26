"""Shared type aliases (private)."""

from __future__ import annotations

from typing import Any, Literal

#: Any array-API-compatible array (NumPy, PyTorch, JAX, CuPy, array-api-strict).
Array = Any
#: An array namespace as returned by :func:`array_api_compat.array_namespace`.
Namespace = Any
#: Reduction over loss terms, as in torch and MONAI.
Reduction = Literal["mean", "sum", "none"]
#: Reduction of the global and local losses: also the dense pair terms (``"pairwise"``).
LossReduction = Literal["mean", "sum", "none", "pairwise"]

__all__ = ["Array", "LossReduction", "Namespace", "Reduction"]
