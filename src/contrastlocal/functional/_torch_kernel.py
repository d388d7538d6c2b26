"""A fused PyTorch path of the masked contrastive kernel (private).

Same mathematics as the array-API implementation in ``_kernel.py`` (which the tests compare it
with), but with an analytic backward that keeps one (N, N) array alive between forward and
backward and makes about half as many passes over (N, N) data. ``torch`` is imported only when
this path runs, i.e. when the caller already passed torch tensors.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .._typing import Array

__all__ = ["fused_global_contrastive_sum", "fused_masked_contrastive_sum"]


@cache
def _function() -> Any:
    import torch
    from torch.autograd.function import once_differentiable
    from torch.nn import functional

    def _weighted(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dtype == torch.bool:  # select: no float copy of the mask
            return torch.where(w, x, 0.0)
        return x.mul_(w)

    class _MaskedContrastiveSum(torch.autograd.Function):
        """``scale * Σ_ap W_ap softplus(LSE_{k: M_ak} s_ak - s_ap)`` with ``s = ẑẑᵀ/τ``."""

        @staticmethod
        def forward(
            ctx: Any, z: torch.Tensor, w: torch.Tensor, m: torch.Tensor, inv_tau: float,
            scale: torch.Tensor, eps: float,
        ) -> torch.Tensor:
            sq = (z * z).sum(dim=1, keepdim=True)
            inv_norm = torch.rsqrt(sq.clamp_min(eps))
            zn = z * inv_norm
            logits = (zn * inv_tau) @ zn.T  # (N, N)
            low = torch.finfo(z.dtype).min
            neg_lse = torch.logsumexp(logits.masked_fill(~m, low), dim=1, keepdim=True)
            # x = LSE - s at negative and positive entries; masked entries are never used
            x = logits.neg_().add_(neg_lse)  # in place: logits are not needed any more
            total = _weighted(functional.softplus(x), w).sum()
            ctx.save_for_backward(zn, inv_norm, sq, x, w, m, scale)
            ctx.inv_tau = inv_tau
            ctx.eps = eps
            return total * scale

        @staticmethod
        @once_differentiable
        def backward(
            ctx: Any, grad: torch.Tensor
        ) -> tuple[torch.Tensor | None, ...]:
            zn, inv_norm, sq, x, w, m, scale = ctx.saved_tensors
            # d/ds_ap of softplus(LSE - s_ap) = -σ(x_ap); d/ds_ak through LSE = c_a softmax_k
            pos = _weighted(torch.sigmoid(x), w)  # W_ap σ(x_ap)
            c = pos.sum(dim=1, keepdim=True)
            g = torch.exp(x.neg()).mul_(c).masked_fill_(~m, 0.0).sub_(pos)  # dL/ds (unscaled)
            # s = ẑẑᵀ/τ: dL/dẑ = (G + Gᵀ) ẑ / τ, as two products (a transposed add is slower)
            g_zn = torch.addmm(g @ zn, g.T, zn).mul_(ctx.inv_tau * grad * scale)
            inside = sq > ctx.eps  # rows whose norm is not clamped
            proj = torch.where(inside, (zn * g_zn).sum(dim=1, keepdim=True), 0.0)
            g_z = (g_zn - zn * proj) * inv_norm
            return g_z, None, None, None, None, None

    class _GlobalContrastiveSum(torch.autograd.Function):
        """Same sum for a group pairing: ``W = same ∧ ¬I``, ``M = ¬same`` or a given mask.

        ``same[a, k]`` (bool) says that rows a and k share the group (image or partition) id, so
        the positives are `same` off the diagonal and, unless `neg` is given, the negatives are
        its complement; the masks are never materialised. Nine passes over (N, N) data forward
        and four backward, besides the three products.
        """

        @staticmethod
        def forward(
            ctx: Any, z: torch.Tensor, same: torch.Tensor, neg: torch.Tensor | None,
            inv_tau: float, scale: torch.Tensor, eps: float,
        ) -> torch.Tensor:
            sq = (z * z).sum(dim=1, keepdim=True)
            inv_norm = torch.rsqrt(sq.clamp_min(eps))
            zn = z * inv_norm
            s = (zn * inv_tau) @ zn.T  # (N, N) logits
            low = torch.finfo(z.dtype).min
            # e = exp(s - m) at the negatives, 0 elsewhere; m = the row's largest negative logit
            # (a row without negatives: m = low and e = 1 everywhere, so LSE stays very negative)
            e = torch.where(same, low, s) if neg is None else torch.where(neg, s, low)
            m = e.amax(dim=1, keepdim=True)
            torch.exp(e.sub_(m), out=e)
            neg_sum = e.sum(dim=1, keepdim=True)
            lse = neg_sum.log().add_(m)
            # x = LSE - s at the positives, `low` elsewhere (softplus(low) = σ(low) = 0)
            x = torch.sub(lse, s, out=s)
            torch.where(same, x, x.new_full((), low), out=x)
            x.diagonal().fill_(low)
            total = functional.softplus(x).sum()
            ctx.save_for_backward(zn, inv_norm, sq, x, e, neg_sum, scale)
            ctx.inv_tau = inv_tau
            ctx.eps = eps
            return total * scale

        @staticmethod
        @once_differentiable
        def backward(
            ctx: Any, grad: torch.Tensor
        ) -> tuple[torch.Tensor | None, ...]:
            zn, inv_norm, sq, x, e, neg_sum, scale = ctx.saved_tensors
            pos = torch.sigmoid(x)  # W_ap σ(x_ap): 0 off the positives
            c = pos.sum(dim=1, keepdim=True)
            # dL/ds_ak = c_a e_ak / Σ_k e_ak at negatives (softmax), minus σ(x_ap) at positives
            g = torch.mul(e, c / neg_sum).sub_(pos)
            g_zn = torch.addmm(g @ zn, g.T, zn).mul_(ctx.inv_tau * grad * scale)
            inside = sq > ctx.eps
            proj = torch.where(inside, (zn * g_zn).sum(dim=1, keepdim=True), 0.0)
            g_z = (g_zn - zn * proj) * inv_norm
            return g_z, None, None, None, None, None

    return _MaskedContrastiveSum, _GlobalContrastiveSum


def fused_masked_contrastive_sum(
    z: Array, positive_weights: Array, negative_mask: Array, *, inv_temperature: float,
    scale: Array, eps: float,
) -> Array:
    """``scale · Σ W ⊙ ℓ`` for torch tensors `z` (N, D), W (N, N), M bool (N, N); 0-D tensor."""
    import torch

    with torch.autocast(device_type=z.device.type, enabled=False):
        return _function()[0].apply(z, positive_weights, negative_mask, inv_temperature, scale, eps)


def fused_global_contrastive_sum(
    z: Array, same: Array, negative_mask: Array | None, *, inv_temperature: float, scale: Array,
    eps: float,
) -> Array:
    """``scale · Σ ℓ`` over the pairs ``same ∧ ¬I``, negatives ``¬same`` or `negative_mask`."""
    import torch

    with torch.autocast(device_type=z.device.type, enabled=False):
        return _function()[1].apply(z, same, negative_mask, inv_temperature, scale, eps)
