"""Global (image-level) contrastive loss: the paper's G^R, G^{D−} and G^D (framework-agnostic)."""

from __future__ import annotations

from typing import Literal

from array_api_compat import is_torch_namespace

from .._array_api import compute_dtype, device
from .._typing import Array, Namespace, Reduction
from .._validation import check_choice, check_integer_ids, check_positive
from ._kernel import (
    _REDUCTIONS,
    RowGather,
    _check_embeddings,
    _check_nonzero,
    _masked_contrastive_block_impl,
    _masked_contrastive_impl,
    _namespace,
    _on_device_of,
)

__all__ = ["global_contrastive_loss", "global_pairing"]

GlobalStrategy = Literal["random", "domain_negatives", "domain"]
_STRATEGIES: tuple[str, ...] = ("random", "domain_negatives", "domain")

_NO_PAIR = {
    "random": "no image has a second view (every value of `image_ids` appears once)",
    "domain_negatives": "no image has a second view (every value of `image_ids` appears once)",
    "domain": "every partition appears once (every value of `partition_ids` appears once)",
}


def _check_ids(
    image_ids: Array, partition_ids: Array | None, n: int | None, strategy: str, *, xp: Namespace
) -> None:
    check_choice(strategy, _STRATEGIES, "strategy")
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
    image_ids: Array, partition_ids: Array | None, *, strategy: str, xp: Namespace
) -> tuple[Array, Array]:
    """Dense (positive mask, negative mask), both bool (N, N), from the row metadata."""
    n = image_ids.shape[0]
    rows = xp.arange(n, device=device(image_ids))
    not_self = rows[:, None] != rows[None, :]
    if strategy == "domain":
        assert partition_ids is not None  # validated by the caller
        same_part = partition_ids[:, None] == partition_ids[None, :]
        return xp.logical_and(same_part, not_self), xp.logical_not(same_part)
    same_image = image_ids[:, None] == image_ids[None, :]
    positives = xp.logical_and(same_image, not_self)
    if strategy == "random" or partition_ids is None:
        return positives, xp.logical_not(same_image)
    return positives, partition_ids[:, None] != partition_ids[None, :]


def _no_pair_message(strategy: str, n: int) -> str:
    return (f"The batch has no positive pair for strategy={strategy!r}: {_NO_PAIR[strategy]}; "
            f"got N = {n} rows.")


def _global_loss_fused(
    embeddings: Array, image_ids: Array, partition_ids: Array | None, *, n: int, strategy: str,
    temperature: float, reduction: str, xp: Namespace,
) -> Array:
    """Torch path of the scalar reductions: one id comparison, masks derived inside the kernel.

    The positives are the rows sharing the group id (image, or partition for ``"domain"``) but
    the anchor; the kernel gets only that comparison (and, for ``"domain_negatives"``, the
    partition mask), and the number of positive pairs is counted from it.
    """
    from ._torch_kernel import fused_global_loss

    group = partition_ids if strategy == "domain" else image_ids
    assert group is not None  # validated by the caller
    result: Array = fused_global_loss(
        embeddings, group, partition_ids if strategy == "domain_negatives" else None,
        temperature=temperature, reduction=reduction,
        no_pair_message=_no_pair_message(strategy, n),
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


def global_contrastive_loss(
    embeddings: Array,
    *,
    image_ids: Array,
    partition_ids: Array | None = None,
    strategy: GlobalStrategy = "domain",
    temperature: float = 0.1,
    reduction: Reduction = "mean",
) -> Array:
    r"""Global contrastive loss of Chaitanya et al. (G^R, G^{D−} or G^D) from row metadata.

    Parameters
    ----------
    embeddings : real floating array of shape (N, D)
        Projected image-level embeddings, one per row (NumPy, PyTorch, JAX, CuPy,
        array-api-strict). Half precisions are computed in float32.
    image_ids : integer array of shape (N,)
        Rows with equal id are views (augmented copies) of one image.
    partition_ids : integer array of shape (N,) or None, default None
        Partition of each row's slice within its volume (the same for all views of an image).
        Required by ``"domain"`` and ``"domain_negatives"``, ignored by ``"random"``.
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        ``"random"`` (G^R): positives = the other views of the anchor's image, negatives = every
        row of another image; with two views per image this is exactly SimCLR's NT-Xent.
        ``"domain_negatives"`` (G^{D−}): positives = the other views of the anchor's image,
        negatives = every row of another partition. ``"domain"`` (G^D): positives = every other
        row of the anchor's partition (any volume, any view), negatives = every row of another
        partition. Same-partition rows that are not positives are neither.
    temperature : float, default 0.1
        Temperature τ > 0.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over all (anchor, positive) terms, ``"sum"``, or ``"none"``: the dense (N, N)
        array of terms, ``ℓ(a, p)`` at positive pairs and 0 elsewhere.

    Returns
    -------
    array
        0-D, or shape (N, N) if ``reduction="none"``; same namespace and device as `embeddings`,
        in the compute dtype (float64 for float64 input, float32 otherwise).

    Raises
    ------
    TypeError
        If an input has the wrong type or dtype kind (e.g. float ids), or the arrays come from
        different libraries.
    ValueError
        If shapes do not match, `temperature` is not a positive finite number, `strategy` or
        `reduction` is unknown, `partition_ids` is missing, or the batch has no positive pair
        (checked where values are concrete, i.e. not under ``jax.jit``).

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
    """
    xp = _namespace(embeddings=embeddings, image_ids=image_ids, partition_ids=partition_ids)
    n = _check_embeddings(embeddings, xp=xp)
    _check_ids(image_ids, partition_ids, n, strategy, xp=xp)
    temperature = check_positive(temperature, "temperature")
    check_choice(reduction, _REDUCTIONS, "reduction")
    image_ids = _on_device_of(image_ids, embeddings, xp=xp)
    if partition_ids is not None:
        partition_ids = _on_device_of(partition_ids, embeddings, xp=xp)
    if reduction != "none" and is_torch_namespace(xp):
        return _global_loss_fused(
            embeddings, image_ids, partition_ids, n=n, strategy=strategy,
            temperature=temperature, reduction=reduction, xp=xp,
        )
    positives, negatives = _global_pairing_impl(image_ids, partition_ids, strategy=strategy, xp=xp)
    _check_nonzero(positives, _no_pair_message(strategy, n), xp=xp)
    return _masked_contrastive_impl(
        embeddings, positives, negatives, temperature=temperature, normalizer=None,
        reduction=reduction, xp=xp,
    )


# --------------------------------------------------------------------------------------------
# sharded (multi-process) form, private: used by GlobalContrastiveLoss(gather_distributed=True)
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


def _global_loss_sharded(
    embeddings: Array,
    *,
    image_ids: Array,
    partition_ids: Array | None,
    strategy: str,
    temperature: float,
    reduction: str,
    gather: RowGather,
) -> Array:
    """Compute this process's share of the global loss of the batch gathered from all processes.

    The local rows are this process's anchors; the candidates (positives and negatives) are the
    rows of every process, gathered with `gather` (the embeddings with gradient, the ids
    without). Image ids are tagged with the process (views of one image never span processes);
    partition ids are positions within a volume and compared as they are. The result is the
    anchors' terms of the global pairing divided by the GLOBAL normaliser (``"mean"``: the
    number of positive pairs of the whole batch), so the shares of the K processes add up to the
    single-process loss of the concatenated batch, for ``"mean"`` and ``"sum"``.
    """
    xp = _namespace(embeddings=embeddings, image_ids=image_ids, partition_ids=partition_ids)
    n = _check_embeddings(embeddings, xp=xp)
    _check_ids(image_ids, partition_ids, n, strategy, xp=xp)
    temperature = check_positive(temperature, "temperature")
    check_choice(reduction, ("mean", "sum"), "reduction")
    image_ids = _on_device_of(image_ids, embeddings, xp=xp)
    z_all = gather(embeddings, differentiable=True)  # (K·n, D); checks that all n agree
    ids_all = _rank_tagged_ids(
        gather(image_ids, differentiable=False), gather.world_size, n, xp=xp
    )
    parts_all = None
    if partition_ids is not None:
        partition_ids = _on_device_of(partition_ids, embeddings, xp=xp)
        parts_all = gather(partition_ids, differentiable=False)
    positives, negatives = _global_pairing_impl(ids_all, parts_all, strategy=strategy, xp=xp)
    msg = (f"The batch gathered from {gather.world_size} processes has no positive pair for "
           f"strategy={strategy!r}: {_NO_PAIR[strategy]}; got N = {int(z_all.shape[0])} rows.")
    _check_nonzero(positives, msg, xp=xp)  # same answer on every process
    start = gather.rank * n
    normalizer = None
    if reduction == "mean":
        normalizer = xp.astype(xp.count_nonzero(positives), compute_dtype(z_all, xp=xp))
    return _masked_contrastive_block_impl(
        z_all, positives[start : start + n, ...], negatives[start : start + n, ...],
        anchor_start=start, temperature=temperature, normalizer=normalizer,
        reduction=reduction, xp=xp,
    )
