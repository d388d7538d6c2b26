"""A fused PyTorch path of the masked contrastive kernel (private).

Same mathematics as the array-API implementation in ``_kernel.py`` (which the tests compare it
with), in a few large operations with an analytic backward. This module imports ``torch``;
``_kernel`` imports it only when the caller already passed torch tensors.

The autograd Functions are defined at module level in the new style (``forward`` without
``ctx``, ``setup_context``, ``backward``) with ``generate_vmap_rule=True``, so that
``torch.compile(fullgraph=True)``, ``torch.func.grad`` and ``torch.func.vmap`` trace through
them. Nothing here reads a tensor's value on the host: no per-call synchronisation. The
normalisation (and its backward) written here is also the local loss's (``_torch_local``).

Two kernels: :class:`_ContrastiveSum` takes any masks (``masked_contrastive_loss``, and the
global loss at temperatures below its fixed shift's range); :class:`_GlobalContrastiveSum`
builds the global loss's masks from ids, needs no row maximum and, for large N, works in row
blocks (on the CPU, blocks that stay in cache).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional

from .._typing import Array

__all__ = [
    "assert_nonzero",
    "cached_constant",
    "device_constant",
    "fused_global_loss",
    "fused_masked_contrastive_sum",
]

# key -> a constant tensor built once (identities, index tables), per device in the key
_CONSTANTS: dict[tuple[Any, ...], Any] = {}


def cached_constant(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """Return ``build()``, built once per `key` (which names the device) and kept.

    Under ``torch.compile`` it is built in the graph instead (a constant there; a traced tensor
    is never cached). Kept constants spare a per-call rebuild or host-to-device copy, which would
    synchronise with the host and could not be captured in a CUDA graph.
    """
    if torch.compiler.is_compiling():
        return build()
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = build()
    return found


def _eye(
    n: int, device: torch.device, dtype: torch.dtype = torch.bool, shape: tuple[int, ...] = (),
    *, off_diagonal: bool = False,
) -> torch.Tensor:
    """Return the (n, n) identity (viewed as `shape`), cached per device outside tracing.

    With `off_diagonal`, its complement: 1 (True) off the diagonal, 0 on it.
    """
    shape = shape or (n, n)

    def build() -> torch.Tensor:
        eye = torch.eye(n, dtype=dtype, device=device)
        return ((~eye if dtype == torch.bool else 1 - eye) if off_diagonal else eye).view(shape)

    found: torch.Tensor = cached_constant(
        ("eye", n, str(device), dtype, shape, off_diagonal), build
    )
    return found


def device_constant(key: tuple[Any, ...], table: Any, device: torch.device) -> torch.Tensor:
    """Return host `table` (a NumPy array that `key` names) on `device`, copied once per device."""
    found: torch.Tensor = cached_constant(
        (*key, str(device)), lambda: torch.as_tensor(table, device=device)
    )
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


# The fixed-shift global kernel needs e^{±1/τ} and the ratios Σ_k e^{s_ak} / e^{s_ap} ≤ N e^{2/τ}
# finite in the dtype (|s| ≤ 1/τ: the rows have norm 1/√τ): 2/τ = 60 leaves float32 a factor
# 3e12 for N (e^60 ≈ 1e26 of 3.4e38), 2/τ = 600 leaves float64 e^109. Above, the row-max path.
_FIXED_SHIFT_LIMIT = {torch.float32: 30.0, torch.float64: 300.0}

# Row blocks of the global kernel: on the CPU, blocks of this many rows above four times as many
# rows, so that a block's few temporaries stay in cache; one block (with its buffers reused
# between calls, see _workspace) up to N = 1024. Measured on a 2-core EPYC: 256-row blocks fastest
# at N = 2048 and 8192 (128 and 512 slower); at N = 1024 one block with reused buffers 0.85-0.93x
# the floor against 0.97-1.32x in blocks. Tests lower it to reach the blocked path at small N.
_CPU_BLOCK_ROWS = 256
# Other devices: one block (the fewest kernel launches) up to twice this many rows; above, blocks
# bound the memory (a handful of (N, N) temporaries would be tens of GiB at N = 32768).
_DEVICE_BLOCK_ROWS = 8192


def _block_rows(n: int, device: torch.device) -> int:
    """Rows per block of the global kernel: N (one block) for small N."""
    if device.type == "cpu":
        return n if n <= 4 * _CPU_BLOCK_ROWS else _CPU_BLOCK_ROWS
    return n if n <= 2 * _DEVICE_BLOCK_ROWS else _DEVICE_BLOCK_ROWS


# The one-block CPU kernel's (N, N) temporaries, kept between calls per thread: a fresh (N, N)
# buffer per temporary pays its page faults again on every call (the C allocator hands freed
# memory of that size back to the system), which cost as much as the whole computation at
# N = 512. Only the newest (N, dtype) is kept (at most 5 buffers of N² values, N ≤ 1024 rows:
# 20 MiB in float32); none while torch.compile traces or a torch.func transform runs (their
# tensors are not written through ``out=``), and none off the CPU.
_WORKSPACE = threading.local()
_NO_BUFFER: Callable[[str], torch.Tensor | None] = lambda _name: None  # noqa: E731


def _transform_active() -> bool:
    """Whether a torch.func transform (vmap, grad, ...) is running."""
    try:
        from torch._C._functorch import peek_interpreter_stack
    except ImportError:  # pragma: no cover - a torch without it: never reuse buffers
        return True
    return peek_interpreter_stack() is not None


def _workspace(n: int, like: torch.Tensor) -> Callable[[str], torch.Tensor | None]:
    """``buffer(name)``: this thread's reusable (n, n) buffer `name`, or None (allocate)."""
    if like.device.type != "cpu" or torch.compiler.is_compiling() or _transform_active():
        return _NO_BUFFER
    key = (n, like.dtype)
    if getattr(_WORKSPACE, "key", None) != key:
        _WORKSPACE.key, _WORKSPACE.buffers = key, {}
    buffers: dict[str, torch.Tensor] = _WORKSPACE.buffers

    def buffer(name: str) -> torch.Tensor:
        found = buffers.get(name)
        if found is None:
            found = buffers[name] = torch.empty(n, n, dtype=like.dtype)
        return found

    return buffer


def _canonical_ids(ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each id's first position among the sorted ids, as `dtype`: equal ids, equal values.

    The values are integers below N, exact in float32 for any N whose (N, N) matrices fit, so
    ``|c_a - c_k|`` is 0 on the same id and at least 1 elsewhere whatever the ids' range.
    Static shapes, no host synchronisation.
    """
    return torch.searchsorted(torch.sort(ids).values, ids).to(dtype)


def _global_masks(
    group: torch.Tensor, negative_group: torch.Tensor | None, start: int, stop: int,
    buffer: Callable[[str], torch.Tensor | None] = _NO_BUFFER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``start:stop`` of the negatives' mask and of W, as floats, from canonical ids.

    Negatives: rows of another group (of another `negative_group` if given); W: rows of the
    same group but the anchor. Floats from differences of exact float ids (``min(|Δ|, 1)``):
    several times faster on the CPU than a comparison and a bool-to-float conversion.
    """
    n = group.shape[0]
    whole = start == 0 and stop == n
    rows = group[:, None] if whole else group[start:stop, None]
    # 1 on another group, 0 on the same (into `buffer`'s reused memory for one block)
    other = torch.sub(rows, group, out=buffer("e") if whole else None).abs_().clamp_max_(1.0)
    if whole:  # the anchor is not its own positive: the cached off-diagonal ones (one op)
        w = torch.sub(_eye(n, group.device, group.dtype, off_diagonal=True), other,
                      out=buffer("w"))
    else:  # entries (i, start + i): every (N + 1)-th of the flat block, from `start`
        w = 1.0 - other  # (not `diagonal`: its inductor lowering warns in torch 2.13)
        w.view(-1)[start::n + 1].zero_()
    if negative_group is None:
        return other, w
    rows = negative_group[:, None] if whole else negative_group[start:stop, None]
    return torch.sub(rows, negative_group).abs_().clamp_max_(1.0), w


class _GlobalContrastiveSum(torch.autograd.Function):
    """The global loss from ids: ``Σ_ap W_ap log(1 + T_a / u_ap) / divisor``, ``u = e^s``.

    ``s = ẑẑᵀ/τ`` (rows of norm ``1/√τ``), ``T_a = Σ_{k ∈ Neg(a)} u_ak``, and
    ``log1p(T_a / u_ap) = softplus(LSE_{k ∈ Neg(a)} s_ak - s_ap)``: the terms of
    :class:`_ContrastiveSum`, without a row maximum (``|s| ≤ 1/τ``; the caller keeps 1/τ within
    ``_FIXED_SHIFT_LIMIT``). A row without negatives has ``T_a = 0``: 0 loss, 0 gradient.

    Why not :class:`_ContrastiveSum`, which takes any masks: here both masks come from ids, so
    they are symmetric, cheap to rebuild, and never stored as inputs. With ``u`` symmetric the
    gradient ``dL/dz = H z`` needs one product with ``H = G + Gᵀ``, where
    ``G_ak = Neg_ak u_ak R_a - W_ak T_a / (u_ak + T_a)`` and ``R_a = Σ_p W_ap / (u_ap + T_a)``
    (no division by ``T_a``), written entry by entry from the symmetry:
    ``(Gᵀ)_ak = Neg_ak u_ak R_k - W_ak T_k / (u_ak + T_k)``; the general kernel needs two.

    The loss is a scalar of one differentiable input, so the forward also computes its gradient
    (up to the incoming scalar) when `needs_grad`: no (N, N) tensor outlives the forward, and
    the backward scales one (N, D) tensor. One block (small N), or row blocks (large N; see
    ``_block_rows``): a first pass computes each block's ``u``, ``T`` and ``R``, a second the
    rows of ``H`` with the masks rebuilt. The number of blocks depends on N and the device type.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        y: torch.Tensor, group: torch.Tensor, negative_group: torch.Tensor | None,
        inv_tau: float, mean: bool, eps: float, block_rows: int, needs_grad: bool,
    ) -> tuple[torch.Tensor, ...]:
        z, den, norm = normalize(y, eps, inv_tau)
        n = z.shape[0]
        if block_rows >= n:
            # five (N, N) buffers, reused between calls on the CPU (see _workspace): "u", "e"
            # (the masks, then the negatives' e^s), "w", "x" and "y" (temporaries in turn);
            # without them (`reuse` False) every temporary is a fresh tensor, as under vmap
            buffer = _workspace(n, z)
            reuse = buffer is not _NO_BUFFER
            u = torch.inner(z, z, out=buffer("u")).exp_()  # e^s (one op: no einsum, no view)
            other, w = _global_masks(group, negative_group, 0, n, buffer)
            e = torch.mul(u, other, out=other if reuse else None)  # the negatives' e^s
            del other
            t = e.sum(dim=1, keepdim=True)
            total = torch.tensordot(w, torch.div(t, u, out=buffer("x")).log1p_(), 2)
            count = w.sum()  # ordered positive pairs
            if not needs_grad:
                return total / count if mean else total, count, z
            u_t = torch.add(u, t, out=buffer("x"))
            # R_a = Σ_p W_ap / (u_ap + T_a)
            r = torch.div(w, u_t, out=buffer("y")).sum(dim=1, keepdim=True)
            sigma = torch.div(t, u_t, out=u_t if reuse else None)  # σ_ak = T_a / (u_ak + T_a)
            # + σ_ka, with u's memory (u is not needed after); addcdiv not in place: vmap has
            # no batching rule for addcdiv_ (nor addcmul_)
            t_row = t.mT
            sigma = torch.addcdiv(sigma, t_row, u.add_(t_row), out=u if reuse else None)
            h = torch.add(r, r.mT, out=u_t if reuse else None).mul_(e).sub_(sigma.mul_(w))
            d_z = torch.mm(h, z)
        else:
            blocks, t_parts, r_parts = [], [], []
            total = count = torch.zeros((), dtype=z.dtype, device=z.device)
            for start in range(0, n, block_rows):
                stop = min(start + block_rows, n)
                u = torch.mm(z[start:stop], z.mT).exp_()
                other, w = _global_masks(group, negative_group, start, stop)
                t = torch.mul(u, other).sum(dim=1, keepdim=True)
                total = total + torch.tensordot(w, torch.div(t, u).log1p_(), 2)
                r_parts.append(torch.div(w, torch.add(u, t)).sum(dim=1, keepdim=True))
                count = count + w.sum()
                blocks.append(u)
                t_parts.append(t)
            if not needs_grad:
                return total / count if mean else total, count, z
            t, r = torch.cat(t_parts), torch.cat(r_parts)
            t_row, r_row = t.mT, r.mT
            parts = []
            for start in range(0, n, block_rows):
                u = blocks.pop(0)  # each block's memory is released with its rows of H
                stop = start + u.shape[0]
                other, w = _global_masks(group, negative_group, start, stop)
                t_b = t[start:stop]
                h = torch.mul(u, other).mul_(r[start:stop] + r_row)
                sigma = torch.div(t_b, torch.add(u, t_b))
                sigma = torch.addcdiv(sigma, t_row, u.add_(t_row))
                parts.append(torch.mm(h.sub_(sigma.mul_(w)), z))
            d_z = torch.cat(parts)
        d_y = normalize_backward(d_z, z, den, norm, eps, inv_tau)  # of the unscaled sum
        return total / count if mean else total, count, d_y

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        ctx.mean, ctx.needs_grad = inputs[4], inputs[7]
        _, count, d_y = output
        ctx.save_for_backward(count, d_y)
        ctx.mark_non_differentiable(count, d_y)
        ctx.set_materialize_grads(False)  # no zero gradients built for those outputs

    @staticmethod
    @once_differentiable  # no double backward: an error, not a wrong second derivative
    def backward(ctx: Any, grad: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:
        if grad is None:  # no gradient reached the loss
            return (None,) * 8
        if not ctx.needs_grad:
            msg = "the global kernel ran without its gradient (needs_grad=False)"
            raise RuntimeError(msg)
        count, d_y = ctx.saved_tensors
        return d_y * (grad / count if ctx.mean else grad), None, None, None, None, None, None, None


def fused_global_loss(
    embeddings: Array, group_ids: Array, partition_ids: Array | None, *, temperature: float,
    reduction: str, no_pair_message: str | None,
) -> Array:
    """Compute the ``"mean"``/``"sum"`` global loss of torch `embeddings` (N, D), inputs validated.

    Positives: rows sharing `group_ids` (image or partition ids) but the anchor; negatives:
    rows of another group or, if `partition_ids` is given (G^{D−}), of another partition.
    With ``1/τ`` within ``_FIXED_SHIFT_LIMIT`` of the dtype, :class:`_GlobalContrastiveSum`
    builds the masks itself from the ids (in row blocks for large N); above, the row-max kernel
    :class:`_ContrastiveSum` gets float masks.
    `no_pair_message` None skips the positive-pair check (``check_pairs=False``): a batch
    without a positive pair then gives NaN for ``"mean"`` (0/0) and 0 for ``"sum"``.
    """
    from ._kernel import _check_nonzero

    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    if embeddings.dtype != dtype:
        embeddings = embeddings.to(dtype)
    inv_tau = 1.0 / temperature
    eps = float(torch.finfo(dtype).eps) ** 2
    if inv_tau > _FIXED_SHIFT_LIMIT[dtype]:
        return _row_max_global_loss(embeddings, group_ids, partition_ids, inv_tau=inv_tau,
                                    reduction=reduction, no_pair_message=no_pair_message, eps=eps)
    group = _canonical_ids(group_ids, dtype)
    negative_group = None if partition_ids is None else _canonical_ids(partition_ids, dtype)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        out = _GlobalContrastiveSum.apply(  # type: ignore[no-untyped-call]
            embeddings, group, negative_group, inv_tau, reduction == "mean", eps,
            _block_rows(embeddings.shape[0], embeddings.device),
            torch.is_grad_enabled() and embeddings.requires_grad,
        )
    if no_pair_message is not None:
        _check_nonzero(out[1], no_pair_message, xp=torch)
    return out[0]


def _row_max_global_loss(
    embeddings: torch.Tensor, group_ids: torch.Tensor, partition_ids: torch.Tensor | None, *,
    inv_tau: float, reduction: str, no_pair_message: str | None, eps: float,
) -> torch.Tensor:
    """:func:`fused_global_loss` through :class:`_ContrastiveSum` (1/τ above the fixed shift's)."""
    from ._kernel import _check_nonzero

    n, dtype = embeddings.shape[0], embeddings.dtype
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
            embeddings, positives, excluded, inv_tau, divisor, eps,
        )
    result: torch.Tensor = out[0]
    return result
