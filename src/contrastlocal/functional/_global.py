"""Global (image-level) contrastive loss: the paper's G^R, G^{D−} and G^D (framework-agnostic)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._array_api import compute_dtype, device, is_torch_namespace
from .._typing import (
    GLOBAL_STRATEGIES,
    LOSS_REDUCTIONS,
    Array,
    GlobalStrategy,
    LossReduction,
    Namespace,
)
from .._validation import (
    check_choice,
    check_flag,
    check_integer_ids,
    check_ndim,
    check_temperature,
    host_values,
    shape_of,
)
from ._kernel import (
    RowGather,
    _check_embeddings,
    _masked_contrastive_block_impl,
    _masked_contrastive_impl,
    _namespace,
    _on_device_of,
)

__all__ = ["global_contrastive_loss", "global_contrastive_loss_shard", "global_pairing"]

_NO_PAIR = {
    "random": "no image has a second view (every value of `image_ids` appears once)",
    "domain_negatives": "no image has a second view (every value of `image_ids` appears once)",
    "domain": "every partition appears once (every value of `partition_ids` appears once)",
}


def _check_ids(
    image_ids: Array | None, partition_ids: Array | None, n: int | None, strategy: str, *,
    xp: Namespace,
) -> None:
    check_choice(strategy, GLOBAL_STRATEGIES, "strategy")
    if image_ids is None:
        if strategy != "domain":
            msg = (f"`image_ids` is required by strategy={strategy!r} (the positives are the "
                   "other views of the anchor's image); got None. Pass integer ids of shape "
                   "(N,), or two views `loss(z0, z1)`.")
            raise ValueError(msg)
    else:
        check_integer_ids(image_ids, n, "image_ids", xp=xp)
        if n is None:
            n = image_ids.shape[0]
    if partition_ids is None:
        if strategy != "random":
            msg = (f"`partition_ids` is required by strategy={strategy!r} (negatives are the rows "
                   "of other partitions); got None.")
            raise ValueError(msg)
    else:
        check_integer_ids(partition_ids, n, "partition_ids", xp=xp)


def _global_pairing_impl(
    image_ids: Array | None, partition_ids: Array | None, *, strategy: str, xp: Namespace
) -> tuple[Array, Array]:
    """Dense (positive mask, negative mask), both bool (N, N), from the row metadata."""
    ids = image_ids if image_ids is not None else partition_ids
    assert ids is not None  # validated by the caller
    n = ids.shape[0]
    rows = xp.arange(n, device=device(ids))
    not_self = rows[:, None] != rows[None, :]
    if strategy == "domain":
        assert partition_ids is not None  # validated by the caller
        same_part = partition_ids[:, None] == partition_ids[None, :]
        return xp.logical_and(same_part, not_self), xp.logical_not(same_part)
    assert image_ids is not None  # validated by the caller
    same_image = image_ids[:, None] == image_ids[None, :]
    positives = xp.logical_and(same_image, not_self)
    if strategy == "random" or partition_ids is None:
        return positives, xp.logical_not(same_image)
    return positives, partition_ids[:, None] != partition_ids[None, :]


def _no_pair_message(strategy: str, n: int) -> str:
    return (f"The batch has no positive pair for strategy={strategy!r}: {_NO_PAIR[strategy]}; "
            f"got N = {n} rows.")


def _raise_no_pair(strategy: str, n: int) -> None:
    raise ValueError(_no_pair_message(strategy, n))


def _global_loss_fused(
    embeddings: Array, image_ids: Array | None, partition_ids: Array | None, *, n: int,
    strategy: str,
    temperature: float, reduction: str, check_pairs: bool, xp: Namespace,
) -> Array:
    """Torch path of the scalar reductions: the kernel builds its masks from the ids.

    The positives are the rows sharing the group id (image, or partition for ``"domain"``) but
    the anchor; the negatives, rows of another group (of another partition for
    ``"domain_negatives"``). The kernel counts the positive pairs and, with `check_pairs`,
    checks the count (a ``ValueError`` for host values, a device assertion otherwise).
    """
    from ._torch_kernel import fused_global_loss

    group = partition_ids if strategy == "domain" else image_ids
    assert group is not None  # validated by the caller
    result: Array = fused_global_loss(
        embeddings, group, partition_ids if strategy == "domain_negatives" else None,
        temperature=temperature, reduction=reduction,
        no_pair_message=_no_pair_message(strategy, n) if check_pairs else None,
    )
    return result


def global_pairing(
    image_ids: Array, partition_ids: Array | None = None, *, strategy: GlobalStrategy = "domain"
) -> tuple[Array, Array]:
    """Positive and negative pair masks of a global-loss strategy, built from row metadata.

    Use it to inspect or modify the pairs, then call
    :func:`~contrastlocal.functional.masked_contrastive_loss` with them.

    Parameters
    ----------
    image_ids : integer array of shape (N,)
        Rows with equal id are views of one image (2D slice).
    partition_ids : integer array of shape (N,) or None, default None
        Partition of each row's slice in its volume; required unless ``strategy="random"``.
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        The paper's G^R, G^{D−} or G^D; see
        :func:`~contrastlocal.functional.global_contrastive_loss`.

    Returns
    -------
    positive_mask : bool array of shape (N, N)
        ``positive_mask[a, p]``: (a, p) is a term (never on the diagonal). Usable as
        `positive_weights`.
    negative_mask : bool array of shape (N, N)
        ``negative_mask[a, k]``: row `k` is in the denominator of anchor `a`.

    Raises
    ------
    TypeError
        If ids are not integer arrays or come from different libraries.
    ValueError
        If ids are not 1-D of one length, the strategy is unknown, or `partition_ids` is missing.

    See Also
    --------
    global_contrastive_loss : The loss these masks define.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.functional import global_pairing
    >>> pos, neg = global_pairing(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1]),
    ...                           strategy="domain")
    >>> pos.astype(int)
    array([[0, 0, 1, 0],
           [0, 0, 0, 1],
           [1, 0, 0, 0],
           [0, 1, 0, 0]])
    >>> neg[0].astype(int)
    array([0, 1, 0, 1])
    """
    xp = _namespace(image_ids=image_ids, partition_ids=partition_ids)
    _check_ids(image_ids, partition_ids, None, strategy, xp=xp)
    if partition_ids is not None:
        partition_ids = _on_device_of(partition_ids, image_ids, xp=xp)
    return _global_pairing_impl(image_ids, partition_ids, strategy=strategy, xp=xp)


def _is_second_view(x: Any, *, xp: Namespace) -> bool:
    """Whether the second positional argument is a view (floating) rather than image ids."""
    return (x is not None and hasattr(x, "dtype") and getattr(x, "ndim", 1) >= 2
            and bool(xp.isdtype(x.dtype, "real floating")))


def _two_view_rows(
    first: Array, second: Array, per_image: dict[str, Array | None], *, ndim: int, layout: str,
    xp: Namespace,
) -> tuple[Array, Array, dict[str, Array | None]]:
    """Turn two views ``(x0, x1)`` into one batch: rows ``cat([x0, x1])``, ids ``arange(N)`` twice.

    `per_image` holds optional integer id arrays of shape (N,), one entry per image; each is
    repeated for the two views. Returns the rows, the image ids (on the rows' device) and the
    repeated ids.
    """
    check_ndim(second, ndim, "image_ids", f"{layout} (the second view)")
    if shape_of(second) != shape_of(first):
        msg = (f"The second view (argument `image_ids`) must have the shape of the first, "
               f"{shape_of(first)}; got shape {shape_of(second)}.")
        raise ValueError(msg)
    if second.dtype != first.dtype:
        msg = (f"The two views must have one dtype; got {first.dtype} and {second.dtype} "
               "(argument `image_ids`).")
        raise TypeError(msg)
    n = int(first.shape[0])
    repeated: dict[str, Array | None] = {}
    for name, ids in per_image.items():
        if ids is not None:
            check_ndim(ids, 1, name, "(N,)")
            if not xp.isdtype(ids.dtype, "integral") or int(ids.shape[0]) != n:
                msg = (f"`{name}` must be an integer array of shape (N,) = ({n},) with two "
                       "views, one entry per image (it is repeated for both views); got shape "
                       f"{shape_of(ids)} and dtype {ids.dtype}.")
                raise (TypeError if int(ids.shape[0]) == n else ValueError)(msg)
            ids = xp.concat([ids, ids], axis=0)
        repeated[name] = ids
    rows = xp.concat([first, _on_device_of(second, first, xp=xp)], axis=0)
    image = xp.arange(n, device=device(first))
    return rows, xp.concat([image, image], axis=0), repeated


def _ids_to(x: Array, reference: Array, *, xp: Namespace) -> Array:
    """Ids moved to the device of `reference`; host-to-accelerator torch copies do not wait.

    A blocking copy from pageable host memory synchronises the stream; ``non_blocking`` stages
    the ids and returns (the ids are never written afterwards).
    """
    if is_torch_namespace(xp) and x.device != reference.device:
        return x.to(reference.device, non_blocking=True)
    return _on_device_of(x, reference, xp=xp)


def _check_partitions_of_views(
    image: np.ndarray, partition: np.ndarray, name: str = "partition_ids"
) -> None:
    """Raise unless the views of each image (equal image ids) share one partition (or volume) id."""
    order = np.argsort(image, kind="stable")
    si, sp = image[order], partition[order]
    bad = (si[1:] == si[:-1]) & (sp[1:] != sp[:-1])
    if bad.any():
        k = int(np.argmax(bad))
        what = name.removesuffix("_ids")
        msg = (f"Views of one image must share a {what}: rows with `image_ids` {si[k]} have "
               f"`{name}` {sp[k]} and {sp[k + 1]} (an image's views come from one slice, "
               f"hence one {what}).")
        raise ValueError(msg)


def _check_global_pairs(
    image_ids: Array | None, partition_ids: Array | None, *, strategy: str, n: int,
    pairs: bool = True,
) -> None:
    """Degenerate batches raise: no positive pair, no negative at all, views split over partitions.

    Reads only host ids (:func:`host_values`); ids on a device or traced are not read (no
    synchronisation), and the checks they would feed are skipped. `pairs` False leaves the
    positive pairs to the caller (the fused kernel counts them anyway).
    """
    image = None if image_ids is None else host_values(image_ids)
    part = None if partition_ids is None else host_values(partition_ids)
    group = part if strategy == "domain" else image
    if pairs and group is not None:  # some id appears twice: equal neighbours once sorted
        ordered = np.sort(group, axis=None)
        if not bool((ordered[1:] == ordered[:-1]).any()):
            _raise_no_pair(strategy, n)
    other = image if strategy == "random" else part
    if other is not None and n > 0 and not bool((other != other.reshape(-1)[0]).any()):
        what, name = ("image", "image_ids") if strategy == "random" else ("partition",
                                                                           "partition_ids")
        msg = (f"The batch has no negative for any anchor with strategy={strategy!r}: every row "
               f"has `{name}` {other.reshape(-1)[0]} (negatives are rows of another {what}), so "
               f"the loss would be 0 with no gradient; got N = {n} rows.")
        raise ValueError(msg)
    if strategy != "random" and image is not None and part is not None:
        _check_partitions_of_views(image, part)


def _warn_if_collapsed(x: Array, name: str) -> None:
    """Warn when every embedding in host array `x` is the same vector (a collapsed representation).

    (N, D): all rows equal. (N, C, H, W) feature maps: every pixel of every row has the same
    C-vector, so all regions are equal (identical maps with spatial structure are fine).
    """
    host = host_values(x)
    if host is None or host.size < 2 or (host.ndim == 2 and host.shape[0] < 2):
        return
    first = host[:1] if host.ndim == 2 else host[:1, :, :1, :1]
    last = host[-1:] if host.ndim == 2 else host[-1:, :, -1:, -1:]
    if bool((last != first).any()):  # the usual case, without reading the whole batch
        return
    if bool(np.all(host == first)):
        what = "rows" if host.ndim == 2 else "pixels (all rows, all positions)"
        msg = (f"All {what} of `{name}` are identical: every similarity is equal, so the loss "
               "is a constant of the batch layout and carries no contrast (a collapsed "
               "representation?).")
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _per_anchor(terms: Array, positives: Array, *, xp: Namespace) -> Array:
    """Row means of the (N, N) or (N, N, R) terms over each anchor's nonzero weights; 0 if none."""
    w = xp.astype(positives, terms.dtype) if positives.dtype == xp.bool else positives
    count = xp.sum(xp.astype(w, terms.dtype), axis=1)
    total = xp.sum(terms, axis=1)
    if terms.ndim == 3:  # local: (n, N, R) -> mean over the regions too
        total = xp.sum(total, axis=1)
        count = count * float(terms.shape[2])
    one = xp.ones((), dtype=terms.dtype, device=device(terms))
    return total / xp.where(count > 0, count, one)


def global_contrastive_loss(
    embeddings: Array,
    image_ids: Array | None = None,
    partition_ids: Array | None = None,
    *,
    strategy: GlobalStrategy = "domain",
    temperature: float | Array = 0.1,
    reduction: LossReduction = "mean",
    check_pairs: bool = True,
) -> Array:
    r"""Global contrastive loss of Chaitanya et al. (G^R, G^{D−} or G^D) from row metadata.

    Two call forms: ``global_contrastive_loss(z, image_ids, partition_ids)`` on one batch of
    rows with their ids, or ``global_contrastive_loss(z0, z1, partition_ids=...)`` on two views
    (rows i of `z0` and `z1` are views of image i), which is the first form on
    ``cat([z0, z1])`` with image ids ``arange(N)`` repeated twice.

    Parameters
    ----------
    embeddings : real floating array of shape (N, D)
        Projected image-level embeddings, one per row (NumPy, PyTorch, JAX, CuPy,
        array-api-strict), or the first view. Half precisions are computed in float32.
    image_ids : integer array of shape (N,), real floating array of shape (N, D), or None
        Integer: rows with equal id are views (augmented copies) of one image. Floating: the
        second view (two-view form). May be None for ``strategy="domain"`` (G^D pairs rows by
        partition only; the ids are then used for the checks alone).
    partition_ids : integer array of shape (N,) or None, default None
        Partition of each row's slice within its volume (the same for all views of an image);
        with two views, one entry per image, shape (N,) for the (N, D) views. Required by
        ``"domain"`` and ``"domain_negatives"``, ignored by ``"random"``.
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        ``"random"`` (G^R): positives = the other views of the anchor's image, negatives = every
        row of another image; with two views per image this is exactly SimCLR's NT-Xent.
        ``"domain_negatives"`` (G^{D−}): positives = the other views of the anchor's image,
        negatives = every row of another partition. ``"domain"`` (G^D): positives = every other
        row of the anchor's partition (any volume, any view), negatives = every row of another
        partition. Same-partition rows that are not positives are neither.
    temperature : float or 0-D real floating array, default 0.1
        Temperature τ > 0. An array (e.g. a learnable ``torch.nn.Parameter``, as in CLIP) gets
        its gradient; its value is checked where it is on the host.
    reduction : {"mean", "sum", "none", "pairwise"}, default "mean"
        ``"mean"`` over all (anchor, positive) terms, ``"sum"``; ``"none"``: one value per
        anchor row, shape (N,) (2N with two views, first view's rows first): the mean of the
        anchor's terms over its positives, 0 for a row without positive. Weighted by each
        row's number of positives P_a, its mean is the ``"mean"`` loss:
        ``sum(P * r) / sum(P)`` (with two views and G^R or G^{D−}, P_a = 1 and ``r.mean()`` is
        the ``"mean"`` loss). ``"pairwise"``: the dense (N, N) terms, ``ℓ(a, p)`` at positive
        pairs and 0 elsewhere.
    check_pairs : bool, default True
        Check the batch where its ids are on the host (NumPy, CPU tensors, outside
        ``torch.compile``/``torch.func``): raise if there is no positive pair, no negative for
        any anchor (e.g. a single partition under G^D), or views of one image with different
        partition ids, and warn if all embeddings are identical (CPU only). Ids on a device are
        never read (no synchronisation): the checks are skipped there, except that the
        ``"mean"``/``"sum"`` of torch tensors asserts on the device that a positive pair
        exists. Set False when the sampler guarantees pairs: no check at all, and a batch
        without a positive pair then gives NaN for ``"mean"`` (0/0, NaN gradients) and 0 for
        ``"sum"`` (zero gradients).

    Returns
    -------
    array
        0-D, (N,) for ``"none"``, (N, N) for ``"pairwise"`` (N = rows of the batch, 2N with
        two views); same namespace and device as `embeddings`, in the compute dtype (float64
        for float64 input, float32 otherwise).

    Raises
    ------
    TypeError
        If an input has the wrong type or dtype kind (e.g. float ids), or the arrays come from
        different libraries.
    ValueError
        If shapes do not match, `temperature` is not a positive finite number, `strategy` or
        `reduction` is unknown, `partition_ids` is missing, or (with `check_pairs`, host ids)
        the batch has no positive pair, no negative, or an image's views in two partitions.

    Warns
    -----
    RuntimeWarning
        With `check_pairs`, when all rows of a host `embeddings` are identical.

    See Also
    --------
    global_pairing : The masks of a strategy.
    masked_contrastive_loss : The kernel, for any other pairing.
    original_global_pairing : The original code's exact pairing, to reproduce its values.

    Notes
    -----
    Every term has the explicit-positive form

    .. math::

        \ell(a, p) = -\log \frac{\exp(s_{ap})}{\exp(s_{ap}) + \sum_{k \in \mathrm{Neg}(a)}
        \exp(s_{ak})}, \qquad s_{ij} = \hat z_i \cdot \hat z_j / \tau,

    and ``"mean"`` averages over all ordered (anchor, positive) pairs. An anchor without
    positives contributes nothing. The metadata is never inferred from row order.

    References
    ----------
    Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features for
    medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    Two volumes, two partitions, two views per slice:

    >>> import numpy as np
    >>> from contrastlocal.functional import global_contrastive_loss
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(8, 4))
    >>> image = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    >>> partition = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    >>> loss = global_contrastive_loss(z, image_ids=image, partition_ids=partition)
    >>> loss.shape, loss.dtype
    ((), dtype('float64'))
    >>> bool(loss > 0)
    True

    The same batch as two views, one partition id per image:

    >>> z0, z1 = z[:4], z[4:]
    >>> two = global_contrastive_loss(z0, z1, partition_ids=partition[:4])
    >>> bool(np.isclose(two, loss))
    True
    >>> global_contrastive_loss(z0, z1, strategy="random", reduction="none").shape
    (8,)
    """
    xp = _namespace(embeddings=embeddings, image_ids=image_ids, partition_ids=partition_ids,
                    temperature=temperature if hasattr(temperature, "shape") else None)
    n = _check_embeddings(embeddings, xp=xp)
    check_choice(strategy, GLOBAL_STRATEGIES, "strategy")
    temperature = check_temperature(temperature, xp=xp)
    check_choice(reduction, LOSS_REDUCTIONS, "reduction")
    check_pairs = check_flag(check_pairs, "check_pairs")
    if _is_second_view(image_ids, xp=xp):
        embeddings, image_ids, ids = _two_view_rows(
            embeddings, image_ids, {"partition_ids": partition_ids}, ndim=2, layout="(N, D)",
            xp=xp,
        )
        partition_ids, n = ids["partition_ids"], 2 * n
    _check_ids(image_ids, partition_ids, n, strategy, xp=xp)
    fixed_tau = isinstance(temperature, float)
    fused = reduction in ("mean", "sum") and fixed_tau and is_torch_namespace(xp)
    if check_pairs:  # (the fused kernel checks its count of positive pairs itself)
        _check_global_pairs(image_ids, partition_ids if strategy != "random" else None,
                            strategy=strategy, n=n, pairs=not fused)
        _warn_if_collapsed(embeddings, "embeddings")
    if image_ids is not None:
        image_ids = _ids_to(image_ids, embeddings, xp=xp)
    if partition_ids is not None:
        partition_ids = _ids_to(partition_ids, embeddings, xp=xp)
    if fused:
        return _global_loss_fused(
            embeddings, image_ids, partition_ids, n=n, strategy=strategy,
            temperature=temperature, reduction=reduction, check_pairs=check_pairs, xp=xp,
        )
    positives, negatives = _global_pairing_impl(image_ids, partition_ids, strategy=strategy, xp=xp)
    scalar = reduction in ("mean", "sum")
    terms = _masked_contrastive_impl(
        embeddings, positives, negatives, temperature=temperature, normalizer=None,
        reduction=reduction if scalar else "none", xp=xp, use_fast_path=fixed_tau,
    )
    if reduction == "none":
        return _per_anchor(terms, positives, xp=xp)
    return terms


# --------------------------------------------------------------------------------------------
# one process's share of a batch spread over several processes (data-parallel training)
# --------------------------------------------------------------------------------------------


def _rank_tagged_ids(ids_all: Array, world_size: int, num_rows: int, *, xp: Namespace) -> Array:
    """Image ids made unique across processes: ``id · K + rank of the row``.

    Two rows share a tagged id iff they share an id AND come from the same process (the map is
    injective on the integers, negative ids included, for 0 <= rank < K); ids must stay within
    ±2^63 / K to not overflow int64.
    """
    if world_size == 1:
        return ids_all
    rows = xp.arange(int(ids_all.shape[0]), dtype=ids_all.dtype, device=device(ids_all))
    return ids_all * world_size + rows // num_rows


def global_contrastive_loss_shard(
    embeddings: Array,
    image_ids: Array | None = None,
    partition_ids: Array | None = None,
    *,
    gather: RowGather,
    strategy: GlobalStrategy = "domain",
    temperature: float | Array = 0.1,
    reduction: str = "mean",
    check_pairs: bool = True,
) -> Array:
    r"""Compute one process's share of the global loss of a batch spread over processes.

    For data-parallel training: each of K processes holds n rows of the batch. Process q's
    rows are its anchors; the candidates (positives and negatives) are the rows of every
    process, collected with `gather`. The result is the loss of the anchor rows against all
    K·n rows divided by the WHOLE batch's normaliser, so summing the shares of the K processes
    gives :func:`global_contrastive_loss` of the batch concatenated in process order.
    :class:`contrastlocal.nn.GlobalContrastiveLoss` with ``gather_distributed=True`` is built
    on it.

    Parameters
    ----------
    embeddings : real floating array of shape (n, D)
        This process's embeddings, or its first view (two-view form, as
        :func:`global_contrastive_loss`).
    image_ids : integer array of shape (n,), real floating array of shape (n, D), or None
        Rows with equal id are views of one image; or the second view. Ids are local to each
        process (views of one image are on one process): the function makes them unique across
        processes (``id · K + q``), so ``arange(n)`` on every process is fine.
    partition_ids : integer array of shape (n,) or None, default None
        Partition of each row's slice (one per image with two views); compared across
        processes as they are. Required unless ``strategy="random"``.
    gather : RowGather
        Concatenates an array's rows over the processes: ``gather(x, differentiable=...)``
        returns the (K·n, ...) rows of every process in rank order (with
        ``differentiable=True`` the gradient must flow back to each process's own rows, e.g.
        :func:`contrastlocal.nn.all_gather_with_grad`); its integer attributes ``rank`` and
        ``world_size`` are q and K. Every process must hold the same n.
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        G^R, G^{D−} or G^D, as in :func:`global_contrastive_loss`.
    temperature : float or 0-D real floating array, default 0.1
        Temperature τ > 0.
    reduction : {"mean", "sum"}, default "mean"
        ``"mean"`` divides this process's terms by the number of (anchor, positive) pairs of
        the whole batch; ``"sum"`` sums them.
    check_pairs : bool, default True
        Where the ids are on the host: raise if an image's views are in two partitions, or if
        the whole batch has no positive pair (the same answer on every process).

    Returns
    -------
    array
        0-D, this process's share :math:`L_q`; :math:`\sum_q L_q` is the loss of the whole
        batch. Same namespace and device as `embeddings`, in the compute dtype.

    Raises
    ------
    TypeError
        If an input has the wrong type or dtype kind.
    ValueError
        If shapes do not match, a setting is unknown (``reduction`` other than ``"mean"`` or
        ``"sum"``), ids a strategy needs are missing, or (with `check_pairs`) the batch has no
        positive pair or an image's views in two partitions.

    See Also
    --------
    global_contrastive_loss : The loss of the whole batch on one process.
    contrastlocal.nn.GlobalContrastiveLoss : Uses it with ``gather_distributed=True``.

    Examples
    --------
    With one process the share is the loss (K processes pass a ``torch.distributed`` gather
    and get shares that add up to it):

    >>> import numpy as np
    >>> from contrastlocal.functional import (global_contrastive_loss,
    ...                                       global_contrastive_loss_shard)
    >>> class OneProcess:
    ...     rank, world_size = 0, 1
    ...     def __call__(self, x, *, differentiable):
    ...         return x
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(8, 4))
    >>> image = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    >>> partition = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    >>> share = global_contrastive_loss_shard(z, image, partition, gather=OneProcess())
    >>> bool(np.isclose(share, global_contrastive_loss(z, image, partition)))
    True
    """
    xp = _namespace(embeddings=embeddings, image_ids=image_ids, partition_ids=partition_ids)
    n = _check_embeddings(embeddings, xp=xp)
    if _is_second_view(image_ids, xp=xp):
        embeddings, image_ids, ids = _two_view_rows(
            embeddings, image_ids, {"partition_ids": partition_ids}, ndim=2, layout="(N, D)",
            xp=xp,
        )
        partition_ids, n = ids["partition_ids"], 2 * n
    _check_ids(image_ids, partition_ids, n, strategy, xp=xp)
    temperature = check_temperature(temperature, xp=xp)
    check_choice(reduction, ("mean", "sum"), "reduction")
    if check_pairs and image_ids is not None and partition_ids is not None:
        image_host, part_host = host_values(image_ids), host_values(partition_ids)
        if strategy != "random" and image_host is not None and part_host is not None:
            _check_partitions_of_views(image_host, part_host)
    z_all = gather(embeddings, differentiable=True)  # (K·n, D); checks that all n agree
    ids_all = None
    if image_ids is not None:
        image_ids = _on_device_of(image_ids, embeddings, xp=xp)
        ids_all = _rank_tagged_ids(
            gather(image_ids, differentiable=False), gather.world_size, n, xp=xp
        )
    parts_all = None
    if partition_ids is not None:
        partition_ids = _on_device_of(partition_ids, embeddings, xp=xp)
        parts_all = gather(partition_ids, differentiable=False)
    positives, negatives = _global_pairing_impl(ids_all, parts_all, strategy=strategy, xp=xp)
    # same answer on every process; read only where the gathered ids are on the host (gloo)
    host = host_values(positives) if check_pairs else None
    if host is not None and not bool(host.any()):
        msg = (f"The batch gathered from {gather.world_size} processes has no positive pair for "
               f"strategy={strategy!r}: {_NO_PAIR[strategy]}; got N = {int(z_all.shape[0])} "
               "rows.")
        raise ValueError(msg)
    start = gather.rank * n
    normalizer = None
    if reduction == "mean":
        normalizer = xp.astype(xp.count_nonzero(positives), compute_dtype(z_all, xp=xp))
    return _masked_contrastive_block_impl(
        z_all, positives[start : start + n, ...], negatives[start : start + n, ...],
        anchor_start=start, temperature=temperature, normalizer=normalizer,
        reduction=reduction, xp=xp,
    )
