"""A fused PyTorch path of the masked contrastive kernel (private).

Same mathematics as the array-API implementation in ``_kernel.py`` (which the tests compare it
with), but with an analytic backward that keeps one (N, N) array alive between forward and
backward and makes about half as many passes over (N, N) data. This module imports ``torch``;
``_kernel`` imports it only when the caller already passed torch tensors.

The autograd Functions are defined at module level in the new style (``forward`` without
``ctx``, ``setup_context``, ``backward``) with ``generate_vmap_rule=True``, so that
``torch.compile(fullgraph=True)``, ``torch.func.grad`` and ``torch.func.vmap`` trace through
them. Nothing here reads a tensor's value on the host: no per-call synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

from .._typing import Array

__all__ = ["fused_global_contrastive_sum", "fused_masked_contrastive_sum"]


def _normalize(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of `z` divided by their norm, the squared norm clamped below by `eps`.

    Returns ``(ẑ, 1/‖z‖, ‖z‖²)``; the last two are what :func:`_normalize_backward` needs.
    """
    sq = (z * z).sum(dim=1, keepdim=True)
    inv_norm = torch.rsqrt(sq.clamp_min(eps))
    return z * inv_norm, inv_norm, sq


def _normalize_backward(
    g_zn: torch.Tensor, zn: torch.Tensor, inv_norm: torch.Tensor, sq: torch.Tensor, eps: float
) -> torch.Tensor:
    """Gradient through :func:`_normalize`: ``(g - ẑ (ẑ·g)) / ‖z‖`` (no projection if clamped)."""
    inside = sq > eps  # rows whose norm is not clamped
    proj = torch.where(inside, (zn * g_zn).sum(dim=1, keepdim=True), 0.0)
    return (g_zn - zn * proj) * inv_norm


def _similarity_backward(g: torch.Tensor, zn: torch.Tensor, factor: Any) -> torch.Tensor:
    """``dL/dẑ`` for ``s = ẑẑᵀ/τ`` given ``G = dL/ds``: ``(G + Gᵀ) ẑ · factor``.

    Two products rather than a transposed add (faster); `factor` carries 1/τ and the scales.
    """
    return torch.addmm(g @ zn, g.mT, zn).mul_(factor)


def _masked_lse(
    s: torch.Tensor, keep: torch.Tensor, *, invert: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-wise log-sum-exp of `s` over the entries where `keep` (or ``~keep`` if `invert`) holds.

    Returns ``(e, total, lse)``: ``e = exp(s - m)`` on the kept entries and 0 elsewhere (m = the
    row's largest kept value), its row sums, and ``log(total) + m``. Masked entries are filled
    with the dtype's most negative finite value, never ``-inf``: a row with nothing kept gets
    ``m = low``, ``e = 1`` everywhere and a very negative, finite log-sum-exp.
    """
    low = torch.finfo(s.dtype).min
    e = torch.where(keep, low, s) if invert else torch.where(keep, s, low)
    m = e.amax(dim=1, keepdim=True)
    e = torch.exp(e - m)
    total = e.sum(dim=1, keepdim=True)
    return e, total, total.log() + m


class _MaskedContrastiveSum(torch.autograd.Function):
    """``scale * Σ_ap W_ap softplus(LSE_{k: M_ak} s_ak - s_ap)`` with ``s = ẑẑᵀ/τ``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: torch.Tensor, w: torch.Tensor, m: torch.Tensor, inv_tau: float, scale: torch.Tensor,
        eps: float,
    ) -> tuple[torch.Tensor, ...]:
        zn, inv_norm, sq = _normalize(z, eps)
        s = (zn * inv_tau) @ zn.mT  # (N, N) logits
        e, total, lse = _masked_lse(s, m, invert=False)
        # x = LSE - s at every entry; W selects the terms
        x = lse - s
        sp = functional.softplus(x)
        sp = torch.where(w, sp, 0.0) if w.dtype == torch.bool else sp * w
        return sp.sum() * scale, zn, inv_norm, sq, x, e, total

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _, w, _, inv_tau, scale, eps = inputs
        _, zn, inv_norm, sq, x, e, total = output
        ctx.save_for_backward(zn, inv_norm, sq, x, e, total, w, scale)
        ctx.inv_tau = inv_tau
        ctx.eps = eps
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # no zero gradients built for those outputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:  # no gradient reached the loss
            return (None,) * 6
        zn, inv_norm, sq, x, e, total, w, scale = ctx.saved_tensors
        # d/ds_ap of softplus(LSE - s_ap) = -σ(x_ap); d/ds_ak through LSE = c_a softmax_k
        sig = torch.sigmoid(x)
        pos = torch.where(w, sig, 0.0) if w.dtype == torch.bool else sig * w
        c = pos.sum(dim=1, keepdim=True)
        g = e * (c / total) - pos  # dL/ds (unscaled)
        g_zn = _similarity_backward(g, zn, ctx.inv_tau * grad * scale)
        return _normalize_backward(g_zn, zn, inv_norm, sq, ctx.eps), None, None, None, None, None


class _GlobalContrastiveSum(torch.autograd.Function):
    """Same sum for a group pairing: ``W = same ∧ ¬I``, ``M = ¬same`` or a given mask.

    ``same[a, k]`` (bool) says that rows a and k share the group (image or partition) id, so
    the positives are `same` off the diagonal and, unless `neg` is given, the negatives are
    its complement; the masks are never materialised.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: torch.Tensor, same: torch.Tensor, neg: torch.Tensor | None, inv_tau: float,
        scale: torch.Tensor, eps: float,
    ) -> tuple[torch.Tensor, ...]:
        zn, inv_norm, sq = _normalize(z, eps)
        s = (zn * inv_tau) @ zn.mT  # (N, N) logits
        if neg is None:
            e, total, lse = _masked_lse(s, same, invert=True)
        else:
            e, total, lse = _masked_lse(s, neg, invert=False)
        # x = LSE - s at the positives, `low` elsewhere (softplus(low) = σ(low) = 0)
        low = torch.finfo(s.dtype).min
        x = torch.where(same, lse - s, low)
        # not x.diagonal().fill_: the compiler's lowering of `diagonal` warns (torch 2.13)
        x = x.masked_fill_(torch.eye(x.shape[-1], dtype=torch.bool, device=x.device), low)
        return functional.softplus(x).sum() * scale, zn, inv_norm, sq, x, e, total

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _, _, _, inv_tau, scale, eps = inputs
        _, zn, inv_norm, sq, x, e, total = output
        ctx.save_for_backward(zn, inv_norm, sq, x, e, total, scale)
        ctx.inv_tau = inv_tau
        ctx.eps = eps
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # no zero gradients built for those outputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:  # no gradient reached the loss
            return (None,) * 6
        zn, inv_norm, sq, x, e, total, scale = ctx.saved_tensors
        pos = torch.sigmoid(x)  # σ(x_ap): 0 off the positives
        c = pos.sum(dim=1, keepdim=True)
        # dL/ds_ak = c_a e_ak / Σ_k e_ak at negatives (softmax), minus σ(x_ap) at positives
        g = e * (c / total) - pos
        g_zn = _similarity_backward(g, zn, ctx.inv_tau * grad * scale)
        return _normalize_backward(g_zn, zn, inv_norm, sq, ctx.eps), None, None, None, None, None


def fused_masked_contrastive_sum(
    z: Array, positive_weights: Array, negative_mask: Array, *, inv_temperature: float,
    scale: Array, eps: float,
) -> Array:
    """``scale · Σ W ⊙ ℓ`` for torch tensors `z` (N, D), W (N, N), M bool (N, N); 0-D tensor."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        out = _MaskedContrastiveSum.apply(  # type: ignore[no-untyped-call]
            z, positive_weights, negative_mask, inv_temperature, scale, eps
        )
    return out[0]


def fused_global_contrastive_sum(
    z: Array, same: Array, negative_mask: Array | None, *, inv_temperature: float, scale: Array,
    eps: float,
) -> Array:
    """``scale · Σ ℓ`` over the pairs ``same ∧ ¬I``, negatives ``¬same`` or `negative_mask`."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        out = _GlobalContrastiveSum.apply(  # type: ignore[no-untyped-call]
            z, same, negative_mask, inv_temperature, scale, eps
        )
    return out[0]
