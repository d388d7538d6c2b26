"""A fused PyTorch path of the masked contrastive kernel (private).

Same mathematics as the array-API implementation in ``_kernel.py`` (which the tests compare it
with), in a few large operations with an analytic backward. This module imports ``torch``;
``_kernel`` imports it only when the caller already passed torch tensors.

The autograd Functions are defined at module level in the new style (``forward`` without
``ctx``, ``setup_context``, ``backward``) with ``generate_vmap_rule=True``, so that
``torch.compile(fullgraph=True)``, ``torch.func.grad`` and ``torch.func.vmap`` trace through
them. Nothing here reads a tensor's value on the host: no per-call synchronisation. The
normalisation (and its backward) written here is also the local loss's (``_torch_local``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional

from .._typing import Array

__all__ = [
    "assert_nonzero",
    "device_constant",
    "fused_global_loss",
    "fused_masked_contrastive_sum",
]

# (n, device, dtype, shape) -> the (n, n) identity of that dtype, viewed as that shape
_EYES: dict[tuple[Any, ...], torch.Tensor] = {}


def _eye(
    n: int, device: torch.device, dtype: torch.dtype = torch.bool, shape: tuple[int, ...] = ()
) -> torch.Tensor:
    """Return the (n, n) identity (viewed as `shape`), cached per device outside tracing."""
    shape = shape or (n, n)
    if torch.compiler.is_compiling():  # a graph constant; never cache a traced tensor
        return torch.eye(n, dtype=dtype, device=device).view(shape)
    key = (n, str(device), dtype, shape)
    found = _EYES.get(key)
    if found is None:
        found = _EYES[key] = torch.eye(n, dtype=dtype, device=device).view(shape)
    return found


# (key, device) -> a constant index table copied to that device once
_CONSTANTS: dict[tuple[Any, ...], torch.Tensor] = {}


def device_constant(key: tuple[Any, ...], table: Any, device: torch.device) -> torch.Tensor:
    """Return host `table` (a NumPy array that `key` names) on `device`, copied once per device.

    A host-to-device copy per call would synchronise with the host and could not be captured in
    a CUDA graph; the cached copy is made outside tracing only (under ``torch.compile`` the
    table becomes a graph constant instead).
    """
    if torch.compiler.is_compiling():
        return torch.as_tensor(table, device=device)
    full = (*key, str(device))
    found = _CONSTANTS.get(full)
    if found is None:
        found = _CONSTANTS[full] = torch.as_tensor(table, device=device)
    return found


def assert_nonzero(x: torch.Tensor, message: str) -> None:
    """Assert on the device that `x` has a nonzero entry (a ``RuntimeError`` with `message`).

    Asynchronous: no host synchronisation; traced by ``torch.compile``.
    """
    torch._assert_async(x != 0 if x.ndim == 0 else torch.any(x), message)


def normalize(
    y: torch.Tensor, eps: float, inv_tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of `y` scaled to norm ``1/√τ``: ``z = y / (max(‖y‖, √eps) √τ)``, so ``z·z' = cos/τ``.

    The norm is clamped below (as the array-API ``l2_normalize`` clamps the squared norm by
    `eps`), so an all-zero row gives a zero row. Returns ``(z, den, ‖y‖)`` for
    :func:`normalize_backward`.
    """
    norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    den = norm.clamp_min(math.sqrt(eps)).mul_(1.0 / math.sqrt(inv_tau))
    return y / den, den, norm


def normalize_backward(
    d_z: torch.Tensor, z: torch.Tensor, den: torch.Tensor, norm: torch.Tensor, eps: float,
    inv_tau: float,
) -> torch.Tensor:
    """Gradient through :func:`normalize`: ``(dz - τ z (z·dz)) / den``, ``dz / den`` if clamped."""
    dot = torch.where(norm > math.sqrt(eps), (z * d_z).sum(dim=-1, keepdim=True), 0.0)
    return torch.addcmul(d_z, z, dot, value=-1.0 / inv_tau).div_(den)


class _ContrastiveSum(torch.autograd.Function):
    """``Σ_ap W_ap softplus(LSE_{k ∈ Neg(a)} s_ak - s_ap) / divisor`` with ``s = ẑẑᵀ/τ``.

    `w` (N, N) holds the real weights (0 = no pair) and `excluded` (N, N) is 1 where an entry
    is NOT a negative, 0 where it is, both in the compute dtype: products with float masks are
    several times faster on the CPU than selections with bool ones. Excluded logits are moved
    to the dtype's most negative finite value (``s + low`` rounds to ``low``), never ``-inf``:
    a row without negatives has a very negative log-sum-exp and contributes 0 with a zero
    gradient. Forward: one product and eight passes over (N, N) data; backward: two products
    and five passes.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        y: torch.Tensor, w: torch.Tensor, excluded: torch.Tensor, inv_tau: float,
        divisor: torch.Tensor, eps: float,
    ) -> tuple[torch.Tensor, ...]:
        z, den, norm = normalize(y, eps, inv_tau)
        s = torch.einsum("ad,kd->ak", z, z)  # (N, N) logits
        # the one masked log-sum-exp; e = exp(s - m) at the negatives (m = the row's largest
        # negative logit), 0 elsewhere, kept for the backward (its softmax is e / total)
        e = torch.add(s, excluded, alpha=torch.finfo(s.dtype).min)
        m = e.amax(dim=1, keepdim=True)
        e = e.sub_(m).exp_()
        total = e.sum(dim=1, keepdim=True)
        x = total.log().add_(m).sub(s)  # LSE - s
        return torch.einsum("ap,ap->", functional.softplus(x), w) / divisor, z, den, norm, e, \
            total, x

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _, w, _, inv_tau, divisor, eps = inputs
        _, z, den, norm, e, total, x = output
        ctx.save_for_backward(z, den, norm, e, total, x, w, divisor)
        ctx.inv_tau = inv_tau
        ctx.eps = eps
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # no zero gradients built for those outputs

    @staticmethod
    @once_differentiable  # no double backward: an error, not a wrong second derivative
    def backward(ctx: Any, grad: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:  # no gradient reached the loss
            return (None,) * 6
        z, den, norm, e, total, x, w, divisor = ctx.saved_tensors
        # d/ds_ap of softplus(LSE - s_ap) = -σ(x_ap); d/ds_ak through the LSE = c_a softmax_k
        pos = torch.sigmoid(x).mul_(w)
        c = pos.sum(dim=1, keepdim=True)
        g = torch.mul(e, c / total).sub_(pos)  # dL/ds, unscaled
        # s = z zᵀ: dL/dz = (G + Gᵀ) z, as two products (a transposed add is slower)
        d_z = torch.addmm(g @ z, g.mT, z).mul_(grad / divisor)
        d_y = normalize_backward(d_z, z, den, norm, ctx.eps, ctx.inv_tau)
        return d_y, None, None, None, None, None


def fused_masked_contrastive_sum(
    z: Array, positive_weights: Array, negative_mask: Array, *, inv_temperature: float,
    divisor: Array, eps: float,
) -> Array:
    """``Σ W ⊙ ℓ / divisor`` for torch tensors `z` (N, D), W (N, N), M bool (N, N); 0-D."""
    w = positive_weights if positive_weights.dtype == z.dtype else positive_weights.to(z.dtype)
    excluded = torch.where(negative_mask, 0.0, 1.0).to(z.dtype)
    with torch.autocast(device_type=z.device.type, enabled=False):
        out = _ContrastiveSum.apply(  # type: ignore[no-untyped-call]
            z, w, excluded, inv_temperature, divisor, eps
        )
    return out[0]


def fused_global_loss(
    embeddings: Array, group_ids: Array, partition_ids: Array | None, *, temperature: float,
    reduction: str, no_pair_message: str | None,
) -> Array:
    """Compute the ``"mean"``/``"sum"`` global loss of torch `embeddings` (N, D), inputs validated.

    Positives: rows sharing `group_ids` (image or partition ids) but the anchor; negatives:
    rows of another group or, if `partition_ids` is given (G^{D−}), of another partition. Only
    the comparison of the ids is built; the kernel derives both masks from it.
    `no_pair_message` None skips the positive-pair check (``check_pairs=False``): a batch
    without a positive pair then gives NaN for ``"mean"`` (0/0) and 0 for ``"sum"``.
    """
    from ._kernel import _check_nonzero

    n = embeddings.shape[0]
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    if embeddings.dtype != dtype:
        embeddings = embeddings.to(dtype)
    # as floats (products with float masks are much faster than bool selections on the CPU)
    same = (group_ids.unsqueeze(1) == group_ids).to(dtype)
    positives = same - _eye(n, embeddings.device, dtype)  # same group, not the anchor itself
    excluded = same  # not a negative: the same group, or (G^{D-}) the same partition
    if partition_ids is not None:
        excluded = (partition_ids.unsqueeze(1) == partition_ids).to(dtype)
    count = positives.sum()  # ordered positive pairs
    if no_pair_message is not None:
        _check_nonzero(count, no_pair_message, xp=torch)
    divisor = count if reduction == "mean" else torch.ones((), dtype=dtype,
                                                             device=embeddings.device)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        out = _ContrastiveSum.apply(  # type: ignore[no-untyped-call]
            embeddings, positives, excluded, 1.0 / temperature, divisor,
            float(torch.finfo(dtype).eps) ** 2,
        )
    return out[0]
