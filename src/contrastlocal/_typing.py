"""Shared type aliases (private)."""

from __future__ import annotations

from typing import Any, Literal, get_args

#: Any array-API-compatible array (NumPy, PyTorch, JAX, CuPy, array-api-strict).
Array = Any
#: An array namespace as returned by :func:`array_api_compat.array_namespace`.
Namespace = Any
#: Reduction over loss terms, as in torch and MONAI.
Reduction = Literal["mean", "sum", "none"]
#: Reduction of the global and local losses: also the dense pair terms (``"pairwise"``).
LossReduction = Literal["mean", "sum", "none", "pairwise"]
#: Pairing strategy of the global loss: the paper's G^R, G^{D−} and G^D.
GlobalStrategy = Literal["random", "domain_negatives", "domain"]
#: Pairing strategy of the local loss: the paper's L^R and L^D.
LocalStrategy = Literal["random", "domain"]

# the accepted values, for the argument checks (one definition: the aliases above)
LOSS_REDUCTIONS: tuple[str, ...] = get_args(LossReduction)
GLOBAL_STRATEGIES: tuple[str, ...] = get_args(GlobalStrategy)
LOCAL_STRATEGIES: tuple[str, ...] = get_args(LocalStrategy)

__all__ = [
    "GLOBAL_STRATEGIES",
    "LOCAL_STRATEGIES",
    "LOSS_REDUCTIONS",
    "Array",
    "GlobalStrategy",
    "LocalStrategy",
    "LossReduction",
    "Namespace",
    "Reduction",
]
