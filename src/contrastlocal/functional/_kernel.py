"""The masked contrastive kernel shared by every contrastive loss (framework-agnostic).

Everything here is written against the array API standard: it runs on NumPy, PyTorch (autograd),
JAX (``jax.grad``), CuPy and array-api-strict, on the input's device.
"""

from __future__ import annotations

import sys
from typing import Protocol, get_args

from array_api_compat import is_torch_namespace

from .._array_api import (
    array_namespace,
    compute_dtype,
    device,
    eps_for,
    l2_normalize,
    logsumexp,
)
from .._typing import Array, Namespace, Reduction
from .._validation import check_choice, check_floating, check_ndim, check_positive, shape_of

__all__ = ["masked_contrastive_loss"]

_REDUCTIONS: tuple[str, ...] = get_args(Reduction)


# --------------------------------------------------------------------------------------------
# private helpers (also used by the global and local losses)
# --------------------------------------------------------------------------------------------


def _namespace(**arrays: Array | None) -> Namespace:
    """Array namespace shared by the named arrays (``None`` entries are skipped).

    Raises a `TypeError` that names every argument and its type when they come from different
    libraries (e.g. a NumPy `image_ids` with torch `embeddings`).
    """
    given = {name: a for name, a in arrays.items() if a is not None}
    try:
        return array_namespace(*given.values())
    except TypeError as exc:
        kinds = ", ".join(f"`{name}`: {type(a).__module__}.{type(a).__name__}" for name, a in
                          given.items())
        msg = (f"{', '.join(f'`{n}`' for n in given)} must be arrays of one array library "
               f"(all NumPy, all torch, ...); got {kinds}.")
        raise TypeError(msg) from exc


def _on_device_of(x: Array, reference: Array, *, xp: Namespace) -> Array:
    """`x` moved to the device of `reference` if it lives elsewhere (metadata only)."""
    dev = device(reference)
    if device(x) == dev:
        return x
    from array_api_compat import to_device

    return to_device(x, dev)


def _has_nonzero(x: Array, *, xp: Namespace) -> bool | None:
    """Whether `x` has a nonzero entry, or ``None`` when its values are not on the host.

    ``None`` for traced values (``jax.jit``, ``torch.compile``, ``torch.func.vmap``) and for torch
    tensors on an accelerator, where reading a value would be a host synchronisation on every
    call; :func:`_check_nonzero` checks those on the device instead.
    """
    if _torch_value_unreadable(x):
        return None
    try:
        return bool(x if x.ndim == 0 else xp.any(x))
    except (TypeError, RuntimeError):  # traced values (jax.jit, torch.func.vmap)
        return None


def _check_nonzero(x: Array, message: str, *, xp: Namespace) -> None:
    """Raise ``ValueError(message)`` when `x` has no nonzero entry, without a host sync.

    This is the single place where the losses look at values: a batch without any positive pair
    must fail rather than return 0/0. Host values (NumPy, torch on the CPU, ...) are checked at
    once; torch tensors on an accelerator or being compiled get a device-side assertion
    (``torch._assert_async``, a ``RuntimeError`` with `message` when the device reaches it);
    other traced values are not checked.
    """
    if _torch_value_unreadable(x):
        from ._torch_kernel import assert_nonzero  # torch is only imported by its kernels

        assert_nonzero(x, message)
    elif _has_nonzero(x, xp=xp) is False:
        raise ValueError(message)


def _torch_value_unreadable(x: Array) -> bool:
    """Whether `x` is a torch tensor whose value would need a host sync or break a trace."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return False
    return bool(torch.compiler.is_compiling() or x.device.type != "cpu")


def _softplus(x: Array, *, xp: Namespace) -> Array:
    """``log(1 + exp(x))`` without overflow or cancellation."""
    return xp.logaddexp(x, xp.zeros((), dtype=x.dtype, device=device(x)))


def explicit_positive_nll(positive_logits: Array, negative_lse: Array, *, xp: Namespace) -> Array:
    """``-log(e^pos / (e^pos + e^neg_lse))`` elementwise (private; reused by the local loss).

    `negative_lse` is the log-sum-exp of the negatives' logits (broadcast against
    `positive_logits`); the result equals ``softplus(negative_lse - positive_logits)``, which is
    exact for large and small arguments alike. A very negative `negative_lse` (no negatives) gives
    0.
    """
    return _softplus(negative_lse - positive_logits, xp=xp)


def negative_logsumexp(logits: Array, negative_mask: Array, *, xp: Namespace) -> Array:
    """Row-wise log-sum-exp of `logits` (..., K) over the entries where `negative_mask` is True.

    Masked-out entries are filled with the dtype's most negative finite value (never ``-inf``),
    the row maximum is subtracted (and its gradient stopped on torch), so a row without negatives
    yields a very negative finite number and neither the value nor the gradient has a NaN.
    """
    low = xp.asarray(xp.finfo(logits.dtype).min, dtype=logits.dtype, device=device(logits))
    # masked entries give exp(low - m) == 0 unless the whole row is masked (then m == low and the
    # row's sum is its length: log(K) + low is still very negative, and finite)
    return logsumexp(xp.where(negative_mask, logits, low), axis=-1, keepdims=True, xp=xp)


class RowGather(Protocol):
    """Concatenates an array's rows over the processes of a group.

    The losses' shares (``global_contrastive_loss_shard``, ``local_contrastive_loss_shard``)
    take one so that the framework-agnostic core never imports a distributed library:
    ``contrastlocal.nn`` passes a :mod:`torch.distributed` implementation, the tests a
    simulated one. Every process holds the
    same number of rows n; process ``rank`` owns rows ``[rank * n, (rank + 1) * n)`` of every
    gathered array.
    """

    @property
    def rank(self) -> int:
        """Index of this process in the group."""
        ...

    @property
    def world_size(self) -> int:
        """Number of processes K."""
        ...

    def __call__(self, x: Array, *, differentiable: bool) -> Array:
        """(K·n, ...) concatenation of every process's (n, ...) `x`, in rank order.

        With `differentiable`, the gradient reaching the result must flow back to each
        process's own `x` (summed over the processes); otherwise the result is a constant.
        Raises ValueError when the processes' shapes differ.
        """
        ...


def _reduce(
    terms: Array, weights_sum: Array | None, *, normalizer: float | Array | None,
    reduction: str, xp: Namespace,
) -> Array:
    if reduction == "none":
        return terms
    total = xp.sum(terms)
    if reduction == "sum":
        return total
    if normalizer is not None:
        return total / normalizer
    return total / weights_sum


def _masked_contrastive_impl(
    embeddings: Array, positive_weights: Array, negative_mask: Array, *, temperature: float,
    normalizer: float | None, reduction: str, xp: Namespace, use_fast_path: bool = True,
) -> Array:
    """Kernel body; inputs validated. Returns in the compute dtype (float32 at least).

    With torch tensors and a scalar reduction it runs the fused torch path (same mathematics,
    analytic backward; see ``_torch_kernel``) unless `use_fast_path` is False.
    """
    dtype = compute_dtype(embeddings, xp=xp)
    if use_fast_path and reduction != "none" and is_torch_namespace(xp):
        from ._torch_kernel import fused_masked_contrastive_sum

        w = positive_weights
        if w.dtype != xp.bool and w.dtype != dtype:
            w = xp.astype(w, dtype)
        if reduction == "sum":
            divisor = xp.ones((), dtype=dtype, device=device(embeddings))
        elif normalizer is not None:
            divisor = xp.full((), normalizer, dtype=dtype, device=device(embeddings))
        else:
            divisor = xp.astype(xp.count_nonzero(w) if w.dtype == xp.bool else xp.sum(w), dtype)
        if embeddings.dtype != dtype:
            embeddings = xp.astype(embeddings, dtype)
        return fused_masked_contrastive_sum(
            embeddings, w, negative_mask, inv_temperature=1.0 / temperature, divisor=divisor,
            eps=eps_for(dtype, xp=xp),
        )
    return _masked_contrastive_block_impl(
        embeddings, positive_weights, negative_mask, anchor_start=0, temperature=temperature,
        normalizer=normalizer, reduction=reduction, xp=xp,
    )


def _masked_contrastive_block_impl(
    embeddings: Array, positive_weights: Array, negative_mask: Array, *, anchor_start: int,
    temperature: float, normalizer: float | Array | None, reduction: str, xp: Namespace,
) -> Array:
    """Compute the terms of a block of anchor rows against every row (array-API path).

    `embeddings` (N, D) holds every row (the candidates); the anchors are the n rows
    ``[anchor_start, anchor_start + n)`` of it, where n is the number of rows of
    `positive_weights` and `negative_mask` (n, N), i.e. the anchors' rows of the full (N, N)
    pairing. The anchors are sliced from the candidates after normalisation, so the result is
    differentiable through `embeddings` only. ``"mean"`` divides by `normalizer` (a number or a
    0-D array, e.g. the positive-weight sum of the FULL pairing, so that the blocks of a
    partition of the rows add up to the full loss) or, if None, by the block's own weight sum.
    With ``anchor_start=0`` and n = N this is the whole loss.
    """
    dtype = compute_dtype(embeddings, xp=xp)
    z = l2_normalize(xp.astype(embeddings, dtype), xp=xp)
    num_anchors = int(positive_weights.shape[0])
    anchors = z
    if anchor_start != 0 or num_anchors != int(z.shape[0]):
        anchors = z[anchor_start : anchor_start + num_anchors, ...]
    # 1/τ folded into one operand: an (n, D) multiply instead of an (n, N) one
    logits = xp.matmul(anchors * (1.0 / temperature), xp.matrix_transpose(z))  # (n, N)
    neg_lse = negative_logsumexp(logits, negative_mask, xp=xp)  # (n, 1)
    nll = explicit_positive_nll(logits, neg_lse, xp=xp)  # (n, N)
    w = positive_weights
    if w.dtype == xp.bool:  # a pair mask: select instead of converting and multiplying
        terms = xp.where(w, nll, xp.zeros((), dtype=dtype, device=device(nll)))
        weights_sum = None
        if reduction == "mean" and normalizer is None:
            weights_sum = xp.astype(xp.count_nonzero(w), dtype)
    else:
        if w.dtype != dtype:
            w = xp.astype(w, dtype)
        terms = w * nll  # (n, N), 0 where no pair
        weights_sum = xp.sum(w) if (reduction == "mean" and normalizer is None) else None
    return _reduce(terms, weights_sum, normalizer=normalizer, reduction=reduction, xp=xp)


def _check_embeddings(embeddings: Array, *, xp: Namespace) -> int:
    check_ndim(embeddings, 2, "embeddings", "(N, D)")
    check_floating(embeddings, "embeddings", xp=xp)
    n = embeddings.shape[0]
    if n is None:  # lazy backends with unknown sizes
        msg = f"`embeddings` must have a known number of rows; got shape {shape_of(embeddings)}."
        raise ValueError(msg)
    return int(n)


def _check_square(x: Array, n: int, name: str) -> None:
    check_ndim(x, 2, name, "(N, N)")
    if tuple(x.shape) != (n, n):
        msg = (f"`{name}` must have shape (N, N) = ({n}, {n}) to match `embeddings`; "
               f"got shape {shape_of(x)}.")
        raise ValueError(msg)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def masked_contrastive_loss(
    embeddings: Array,
    positive_weights: Array,
    negative_mask: Array,
    *,
    temperature: float = 0.1,
    normalizer: float | None = None,
    reduction: Reduction = "mean",
) -> Array:
    r"""Weighted sum of explicit-positive contrastive terms over a dense pair layout.

    Every loss of the package is this kernel with some pairing: the rows of `embeddings` are
    L2-normalised, ``s = z zᵀ / τ``, and each (anchor `a`, positive `p`) with
    ``positive_weights[a, p] != 0`` contributes ``positive_weights[a, p] · ℓ(a, p)`` where the
    negatives of `a` are the True entries of ``negative_mask[a]``.

    Parameters
    ----------
    embeddings : real floating array of shape (N, D)
        One embedding per row (NumPy, PyTorch, JAX, CuPy or array-api-strict). Half precisions
        are computed in float32.
    positive_weights : bool, integer or real floating array of shape (N, N)
        ``positive_weights[a, p]`` = how many times the term (a, p) counts; 0 (or False) = not a
        pair. Any entry may be set, including the diagonal.
    negative_mask : bool array of shape (N, N)
        ``negative_mask[a, k]`` is True when row `k` enters the denominator of every term of
        anchor `a`. If it includes the positive `p` (or `a`), that row is counted again inside the
        sum, as in the original code's buggy layouts.
    temperature : float, default 0.1
        Temperature τ > 0 dividing the cosine similarities.
    normalizer : float or None, default None
        What ``reduction="mean"`` divides the weighted sum by; None = ``sum(positive_weights)``,
        the mean over terms. Ignored by the other reductions.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"``: the dense (N, N) array of weighted terms ``W_ap · ℓ(a, p)`` (zero where there
        is no pair, so shapes never depend on data); ``"sum"``: its sum; ``"mean"``: the sum
        divided by `normalizer`.

    Returns
    -------
    array
        0-D, or shape (N, N) if ``reduction="none"``; same namespace and device as `embeddings`,
        in the compute dtype (float64 for float64 input, float32 otherwise).

    Raises
    ------
    TypeError
        If the arrays come from different libraries, `embeddings` is not floating, or
        `negative_mask` is not boolean.
    ValueError
        If a shape does not match, `temperature` or `normalizer` is not a positive finite number,
        `reduction` is unknown, or `positive_weights` has no nonzero entry (no positive pair; only
        checked where values are concrete, i.e. not under ``jax.jit``).

    Notes
    -----
    Each term has the explicit-positive form

    .. math::

        \ell(a, p) = -\log \frac{e^{s_{ap}}}{e^{s_{ap}} + \sum_{k:\,M_{ak}} e^{s_{ak}}}
                   = \operatorname{softplus}\Big(\operatorname{LSE}_{k:\,M_{ak}} s_{ak}
                     - s_{ap}\Big),

    computed with a max-subtracted log-sum-exp (masked entries filled with the dtype's most
    negative finite value, never ``-inf``), so τ = 0.01 does not overflow and an all-zero
    embedding row gives a finite loss and gradient. Memory is O(N²).

    With torch tensors and ``reduction="mean"`` or ``"sum"``, a fused implementation with an
    analytic backward runs instead (same values to rounding; it keeps two (N, N) arrays for the
    backward pass, runs with autocast disabled, and supports first-order gradients only: no
    double backward). ``reduction="none"`` and every other library use the array-API code.

    References
    ----------
    Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features for
    medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    Two images with two views each (rows 0, 2 and 1, 3), each view's positive is the other view
    of its image, negatives are the other image's views (SimCLR's NT-Xent):

    >>> import numpy as np
    >>> from contrastlocal.functional import masked_contrastive_loss
    >>> z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> image = np.array([0, 1, 0, 1])
    >>> same = image[:, None] == image[None, :]
    >>> w = same & ~np.eye(4, dtype=bool)
    >>> loss = masked_contrastive_loss(z, w, ~same, temperature=0.5)
    >>> round(float(loss), 4)
    0.2965
    >>> masked_contrastive_loss(z, w, ~same, temperature=0.5, reduction="none").shape
    (4, 4)
    """
    xp = _namespace(embeddings=embeddings, positive_weights=positive_weights,
                    negative_mask=negative_mask)
    n = _check_embeddings(embeddings, xp=xp)
    _check_square(positive_weights, n, "positive_weights")
    _check_square(negative_mask, n, "negative_mask")
    if not (positive_weights.dtype == xp.bool or xp.isdtype(positive_weights.dtype,
                                                            ("integral", "real floating"))):
        msg = ("`positive_weights` must be a bool, integer or real floating array; "
               f"got dtype {positive_weights.dtype}.")
        raise TypeError(msg)
    if negative_mask.dtype != xp.bool:
        msg = f"`negative_mask` must be a bool array; got dtype {negative_mask.dtype}."
        raise TypeError(msg)
    temperature = check_positive(temperature, "temperature")
    if normalizer is not None:
        normalizer = check_positive(normalizer, "normalizer")
    check_choice(reduction, _REDUCTIONS, "reduction")
    _check_nonzero(positive_weights, "`positive_weights` has no nonzero entry: the batch has no "
                   "positive pair, so the loss is undefined.", xp=xp)
    positive_weights = _on_device_of(positive_weights, embeddings, xp=xp)
    negative_mask = _on_device_of(negative_mask, embeddings, xp=xp)
    return _masked_contrastive_impl(
        embeddings, positive_weights, negative_mask, temperature=temperature,
        normalizer=normalizer, reduction=reduction, xp=xp,
    )
