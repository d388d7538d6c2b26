"""A fused PyTorch path of the local contrastive loss (private).

Same mathematics as the array-API implementation in ``_local.py`` (which the tests compare it
with) for the scalar reductions, in a few large operations with a hand-written backward:

- one gather of the U distinct K×K regions of every row (index tables built once per map size,
  region size and region tables, kept on the device), one projection and one normalisation;
- per region r, one batched product of the anchors' region r against the region r and the J
  negative regions of every row, ``S[r, a, 1 + j, p]``, with slot 0 the positive similarity;
- each term ``ℓ(a, p, r) = LSE(s_pos, own negatives, cross negatives) - s_pos`` (the softplus
  of the array-API path, written as a log-sum-exp over the J + 1 + J logits of the term, which
  are one strided view of ``S``: the anchor's own negatives are the diagonal p = a).

Why not the masked kernel of the global loss: there the negatives depend on the anchor only,
here on the (anchor, positive) pair (the positive's negative regions), so one (N, N) mask of
negatives cannot describe them.

The index tables depend on shapes only and are cached per device outside tracing; under
``torch.compile`` they are built in the graph as constants. Nothing reads a tensor's value on
the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .._typing import Array
from ._torch_kernel import _eye, cached_constant, normalize, normalize_backward

__all__ = ["fused_local_loss"]


# the gather plan of _local: flat pixels (U*K*K,), U, positions' (R,) and negatives' (R*J,)
# indices among the U regions (NumPy arrays or sequences of ints)
_Ints = Sequence[int] | np.ndarray
Plan = tuple[_Ints, int, _Ints, _Ints]


def _build_tables(plan: Plan, num_negatives: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    # plain Python on the plan's integers: under torch.compile, with a plan of Python ints,
    # this folds into graph constants (NumPy here would be traced)
    indices, num_unique, positive_index, negative_index = plan
    flat = [int(v) for v in indices]
    kk = len(flat) // num_unique
    negatives = [int(v) for v in negative_index]
    candidates = [[int(p), *negatives[r * num_negatives:(r + 1) * num_negatives]]
                  for r, p in enumerate(positive_index)]  # (R, 1 + J): r, its J negatives
    slot = [[[[int(i == num_negatives)] for i in range(2 * num_negatives + 1)]]]
    return tuple(
        torch.tensor(a, dtype=torch.int64, device=device)
        for a in ([flat[u * kk:(u + 1) * kk] for u in range(num_unique)], flat,
                  [c[0] for c in candidates], candidates, [i for c in candidates for i in c],
                  slot)
    )


def _tables(plan: Plan, num_negatives: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Region pixels (U, K*K) and (U*K*K,) in H*W, positions, candidates, flat candidates, slot.

    Positions (R,), candidates (R, 1 + J) and flattened (R*(1 + J),).

    `slot` (1, 1, 2J + 1, 1) is 1 at the positive's logit of a term, 0 elsewhere. Built from
    the region plan only (shapes and settings, never tensor values), cached per device; under
    torch.compile they are built in the graph as constants and not cached.
    """
    if torch.compiler.is_compiling():  # (the key reads the plan: not while tracing)
        return _build_tables(plan, num_negatives, device)
    layout = (a.tobytes() if isinstance(a, np.ndarray) else tuple(a)
              for a in (plan[0], plan[2], plan[3]))
    found: tuple[torch.Tensor, ...] = cached_constant(
        ("local_tables", *layout, num_negatives, str(device)),
        lambda: _build_tables(plan, num_negatives, device),
    )
    return found


def _own_negatives(s: torch.Tensor, offset: int, *, broadcast: bool = True) -> torch.Tensor:
    """``s[r, a, offset + j, a]`` broadcast over a last axis p: (R, N, J, N), a strided view.

    The own negatives of anchor a are its similarities to its own negative regions, i.e. the
    cross logits at p = a; stride 0 along p repeats them for every pair (a, p). `s` must start
    at its storage's beginning (a fresh result; its storage offset is not read: the compiler
    does not trace that).
    """
    r, n, _, _ = s.shape
    sr, sa, sj, sp = s.stride()
    j = s.shape[2] - offset
    if not broadcast:  # (R, N, J)
        return s.as_strided((r, n, j), (sr, sa + sp, sj), offset * sj)
    return s.as_strided((r, n, j, n), (sr, sa + sp, sj, 0), offset * sj)


class _LocalContrastiveSum(torch.autograd.Function):
    """``Σ_{r,a,p} ws_ap ℓ(a, p, r)`` from feature maps, region tables and a projection.

    ``ws`` (N, 1, N) holds the weights already divided by the normaliser of the reduction.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        features: torch.Tensor, projection: torch.Tensor | None, ws: torch.Tensor,
        pixels: torch.Tensor, pixels_flat: torch.Tensor, positions: torch.Tensor,
        candidates: torch.Tensor, candidates_flat: torch.Tensor, slot: torch.Tensor,
        inv_tau: float, eps: float,
    ) -> tuple[torch.Tensor, ...]:
        n, c, _, _ = features.shape
        num_unique, kk = pixels.shape
        # (N, C, U, K*K); on the flattened maps (a gather with one index is faster)
        taken = torch.ops.aten.index(features.flatten(2), [None, None, pixels])
        if projection is None:
            # the order of a region's entries does not change a dot product: (C, K*K) order
            y = taken.permute(2, 0, 1, 3).reshape(num_unique, n, c * kk)
        else:
            # rows of the projection are in (K*K, C) order
            y = torch.einsum("ncuk,kcd->und", taken, projection.view(kk, c, -1))  # (U, N, D)
        z, den, norm = normalize(y, eps, inv_tau)  # |z| = 1/√τ: z·z' = cos / τ
        u = z[positions]  # (R, N, D): the anchors' (and positives') region r
        t = z[candidates]  # (R, 1 + J, N, D): region r and its J negatives, of every row
        s = torch.einsum("rad,rjpd->rajp", u, t)  # (R, N_a, 1 + J, N_p)
        # the J + 1 + J logits of term (a, p, r): own negatives, the positive, cross negatives
        logits = torch.cat((_own_negatives(s, 1), s), dim=2)  # (R, N, 2J + 1, N)
        x = torch.logsumexp(logits, dim=2) - s[:, :, 0]  # ℓ(a, p, r), (R, N, N)
        total = torch.einsum("rap,aqp->", x, ws)
        return total, taken, z, den, norm, u, t, logits

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        (features, projection, ws, _, pixels_flat, positions, _, candidates_flat, slot,
         inv_tau, eps) = inputs
        _, taken, z, den, norm, u, t, logits = output
        ctx.save_for_backward(projection, ws, pixels_flat, positions, candidates_flat, slot,
                              taken, z, den, norm, u, t, logits)
        ctx.features_shape = features.shape
        ctx.inv_tau = inv_tau
        ctx.eps = eps
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # no zero gradients built for those outputs

    @staticmethod
    @once_differentiable  # no double backward: an error, not a wrong second derivative
    def backward(ctx: Any, grad: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:  # no gradient reached the loss
            return (None,) * 11
        (projection, ws, pixels_flat, positions, candidates_flat, slot, taken, z, den, norm, u, t,
         logits) = ctx.saved_tensors
        j = t.shape[1] - 1
        wg = ws * grad  # dL/dℓ(a, p, r), the same for every r; (N, 1, N)
        # d LSE / d logits = softmax; the positive's logit (slot J) also gets -1 from "- s_pos"
        d_logits = torch.softmax(logits, dim=2).sub_(slot).mul_(wg)
        d_own, d_s = torch.split(d_logits, [j, j + 1], dim=2)  # (R, N, J, N), (R, N, 1 + J, N)
        # the own negatives are s at p = a: their gradient (summed over p) goes there
        _own_negatives(d_logits, j + 1, broadcast=False).add_(d_own.sum(dim=-1))
        # out-of-place index_add (torch.func.vmap batches it; an in-place one into an unbatched
        # zero buffer it cannot): the gathers' transposes, positions (R,) then candidates
        d_z = torch.zeros_like(z).index_add(
            0, positions, torch.einsum("rajp,rjpd->rad", d_s, t)
        ).index_add(
            0, candidates_flat, torch.einsum("rajp,rad->rjpd", d_s, u).flatten(0, 1)
        )
        d_y = normalize_backward(d_z, z, den, norm, ctx.eps, ctx.inv_tau)
        n, c, h, w = ctx.features_shape
        num_unique = z.shape[0]
        kk = pixels_flat.shape[0] // num_unique
        d_projection = None
        if projection is None:
            d_taken = d_y.view(num_unique, n, c, kk).permute(1, 2, 0, 3)
        else:
            p3 = projection.view(kk, c, -1)
            if ctx.needs_input_grad[1]:
                d_projection = torch.einsum("ncuk,und->kcd", taken, d_y).reshape(
                    projection.shape)
            d_taken = torch.einsum("und,kcd->ncuk", d_y, p3)
        d_features = None
        if ctx.needs_input_grad[0]:
            # index_add along the flattened pixels: much faster than an accumulating index_put_;
            # out of place, so that torch.func.vmap batches it
            d_features = torch.zeros((n, c, h * w), dtype=d_y.dtype, device=d_y.device).index_add(
                2, pixels_flat, d_taken.reshape(n, c, num_unique * kk)
            ).view(ctx.features_shape)
        return d_features, d_projection, None, None, None, None, None, None, None, None, None


def _positive_pairs(
    image_ids: torch.Tensor, partition_ids: torch.Tensor | None,
    volume_ids: torch.Tensor | None, strategy: str,
) -> torch.Tensor:
    """Bool (N, 1, N) positives of L^R / L^D, zero diagonal, in few operations."""
    n = image_ids.shape[0]
    if strategy == "domain":
        assert partition_ids is not None  # validated by the caller
        assert volume_ids is not None
        ids = torch.stack((image_ids, partition_ids, volume_ids))
        same = ids.view(3, n, 1, 1) == ids.view(3, 1, 1, n)
        same_image, same_partition, same_volume = same.unbind()
        # same image, or same partition in another volume
        positive = same_image | torch.where(same_volume, False, same_partition)
    else:
        positive = image_ids.view(n, 1, 1) == image_ids
    return torch.where(_eye(n, image_ids.device, shape=(n, 1, n)), False, positive)  # not a == p


def fused_local_loss(
    features: Array,
    projection: Array | None,
    *,
    weights: Array | None,
    image_ids: Array | None,
    partition_ids: Array | None,
    volume_ids: Array | None,
    strategy: str,
    plan: Plan,
    num_regions: int,
    num_negatives: int,
    temperature: float,
    normalizer: float | None,
    reduction: str,
    eps: float,
    no_pair_message: str | None,
) -> Array:
    """Compute the ``"mean"`` or ``"sum"`` local loss of torch `features` (inputs validated).

    `weights` (N, N) in the compute dtype, or None for the pairing of `strategy` from the ids
    (on the device of `features`). Returns a 0-D tensor in the compute dtype.
    `no_pair_message` None skips the positive-pair check (``check_pairs=False``): a batch
    without a positive pair then gives NaN for ``"mean"`` (0/0) and 0 for ``"sum"``.
    """
    from ._kernel import _check_nonzero

    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    if features.dtype != dtype:
        features = features.to(dtype)
    if projection is not None and projection.dtype != dtype:
        projection = projection.to(dtype)
    if weights is None:
        assert image_ids is not None  # validated by the caller
        pairs = _positive_pairs(image_ids, partition_ids, volume_ids, strategy)
        count = pairs.sum(dtype=dtype)
        if no_pair_message is not None:
            _check_nonzero(count, no_pair_message, xp=torch)
    else:
        pairs = weights.unsqueeze(1)
        count = weights.sum()
        if no_pair_message is not None:
            _check_nonzero(weights, no_pair_message, xp=torch)
    if reduction == "sum":
        ws = pairs if pairs.dtype == dtype else pairs.to(dtype)
    elif normalizer is not None:
        ws = pairs / normalizer if pairs.dtype != torch.bool else pairs.to(dtype) / normalizer
    else:
        ws = pairs / (count * num_regions)
    pixels, pixels_flat, positions, candidates, candidates_flat, slot = _tables(
        plan, num_negatives, features.device)
    with torch.autocast(device_type=features.device.type, enabled=False):
        out = _LocalContrastiveSum.apply(  # type: ignore[no-untyped-call]
            features, projection, ws, pixels, pixels_flat, positions, candidates,
            candidates_flat, slot, 1.0 / temperature, eps,
        )
    return out[0]
