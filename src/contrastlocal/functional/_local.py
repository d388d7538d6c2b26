"""The local contrastive loss of Chaitanya et al. (NeurIPS 2020) (framework-agnostic).

Regions of decoder feature maps are contrasted against the same region in the positive row's
maps and against each region's fixed list of nearby negative regions, in the anchor's map and in
the positive's map. Everything is written against the array API standard.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import array_api_compat.numpy as np_xp
import numpy as np

from .._array_api import (
    compute_dtype,
    device,
    eps_for,
    is_floating,
    is_torch_namespace,
    l2_normalize,
    logsumexp,
)
from .._typing import (
    LOCAL_STRATEGIES,
    LOSS_REDUCTIONS,
    Array,
    LossReduction,
    Namespace,
)
from .._validation import (
    as_positions,
    check_choice,
    check_flag,
    check_int_in_range,
    check_integer_ids,
    check_ndim,
    check_positive,
    check_region_size,
    check_temperature,
    host_values,
    points_key,
    shape_of,
)
from ._global import (
    _check_partitions_of_views,
    _ids_to,
    _is_second_view,
    _per_anchor,
    _rank_tagged_ids,
    _two_view_rows,
    _warn_if_collapsed,
)
from ._kernel import (
    RowGather,
    _namespace,
    _on_device_of,
    _reduce,
    explicit_positive_nll,
)
from ._regions import (
    NegativesKey,
    PointsKey,
    _check_bounds_key,
    _check_feature_maps,
    _default_keys,
    _flat_indices,
    _gather_regions,
    _index_array,
)

__all__ = ["local_contrastive_loss", "local_contrastive_loss_shard", "original_local_pairing"]

#: Gather plan: flat spatial indices of the U distinct regions (U*K*K,), U, and the index
#: among them of each position (R,) and of each negative (R*J,); Python ints only.
Plan = tuple[tuple[int, ...], int, tuple[int, ...], tuple[int, ...]]

# The original L^D batch: 3 volumes x 4 partitions, two views concatenated.
_ORIGINAL_DOMAIN_SLICES = 12


def _pair_mask_weights(
    image_ids: Array,
    partition_ids: Array | None,
    volume_ids: Array | None,
    *,
    strategy: str,
    dtype: Any,
    xp: Namespace,
) -> Array:
    """Dense positive weights (N, N) of the paper's strategies (0/1, zero diagonal)."""
    n = int(image_ids.shape[0])
    rows = xp.arange(n, device=device(image_ids))
    not_self = xp.expand_dims(rows, axis=1) != xp.expand_dims(rows, axis=0)
    same_image = xp.expand_dims(image_ids, axis=1) == xp.expand_dims(image_ids, axis=0)
    positive = same_image & not_self
    if strategy == "domain":
        same_partition = xp.expand_dims(partition_ids, axis=1) == xp.expand_dims(
            partition_ids, axis=0
        )
        other_volume = xp.expand_dims(volume_ids, axis=1) != xp.expand_dims(volume_ids, axis=0)
        positive = positive | (same_partition & other_volume)
    return xp.astype(positive, dtype)


_PLANS: dict[tuple[PointsKey, NegativesKey, int, int], Plan] = {}


def _compiling() -> bool:
    """Whether torch.compile is tracing (then nothing is cached: the plan is a constant)."""
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def _build_plan(
    positions: PointsKey, negatives: NegativesKey, width: int, region_size: int
) -> Plan:
    points = positions + tuple(p for row in negatives for p in row)
    unique = sorted(set(points))  # each distinct region once (the tables repeat points)
    index = {p: i for i, p in enumerate(unique)}
    return (
        _flat_indices(tuple(unique), width, region_size),
        len(unique),
        tuple(index[p] for p in positions),
        tuple(index[p] for row in negatives for p in row),
    )


def _region_plan(
    positions: PointsKey, negatives: NegativesKey, width: int, region_size: int
) -> Plan:
    """Gather plan of the region tables (a function of the tables and the map width only).

    Pure Python on tuples of ints: built on the host, cached by key in eager mode, and
    evaluated as a constant under ``torch.compile`` (no array is built from tensor values).
    """
    key = (positions, negatives, width, region_size)
    if _compiling():
        return _build_plan(*key)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 128:
            _PLANS.clear()
        plan = _PLANS[key] = _build_plan(*key)
    return plan


def _local_impl(
    features: Array,
    weights: Array,
    plan: Plan,
    projection: Array | None,
    *,
    num_regions: int,
    num_negatives: int,
    region_size: int,
    temperature: float | Array,
    normalizer: float | None,
    reduction: str,
    xp: Namespace,
) -> Array:
    """Loss body; inputs validated. Returns in the compute dtype (float32 at least)."""
    z = _local_region_embeddings(features, plan, projection, region_size=region_size, xp=xp)
    if normalizer is None and reduction == "mean":
        normalizer = xp.sum(weights) * float(num_regions)
    return _local_block_terms(
        z, weights, plan, anchor_start=0, num_regions=num_regions, num_negatives=num_negatives,
        temperature=temperature, normalizer=normalizer, reduction=reduction, xp=xp,
    )


def _local_region_embeddings(
    features: Array,
    plan: Plan,
    projection: Array | None,
    *,
    region_size: int,
    xp: Namespace,
) -> Array:
    """(N, U, D) projected, L2-normalised embeddings of the U distinct regions of the plan."""
    dtype = compute_dtype(features, xp=xp)
    if features.dtype != dtype:
        features = xp.astype(features, dtype)
    indices, num_unique, _, _ = plan
    # One gather of the U distinct regions, projected and normalised once each.
    regions = _gather_regions(features, indices, num_unique, region_size, xp=xp)
    if projection is not None:
        if projection.dtype != dtype:
            projection = xp.astype(projection, dtype)
        regions = xp.matmul(regions, projection)
    return l2_normalize(regions, xp=xp)  # (N, U, D)


def _local_block_terms(
    z: Array,
    weights: Array,
    plan: Plan,
    *,
    anchor_start: int,
    num_regions: int,
    num_negatives: int,
    temperature: float | Array,
    normalizer: float | Array | None,
    reduction: str,
    xp: Namespace,
) -> Array:
    """Terms of the anchor rows ``[anchor_start, anchor_start + n)`` against every row.

    `z` (N, U, D) holds the region embeddings of every row, `weights` (n, N) the anchors' rows
    of the positive weights. ``"mean"`` divides by `normalizer`, which the caller sets (R · the
    weight sum of the FULL pairing, so that the blocks of a partition of the rows add up to the
    full loss). ``"none"`` gives (n, N, R).
    """
    n = int(weights.shape[0])
    n_all = int(z.shape[0])
    r, j = num_regions, num_negatives
    _, _, positive_index, negative_index = plan
    d = int(z.shape[-1])
    u = xp.take(z, _index_array(positive_index, z, xp=xp), axis=1)  # (N, R, D)
    v = xp.take(z, _index_array(negative_index, z, xp=xp), axis=1)  # (N, R*J, D)
    v = xp.reshape(v, (n_all, r, j, d))  # (N, R, J, D)
    u_a, v_a = u, v
    if anchor_start != 0 or n != n_all:
        u_a = u[anchor_start : anchor_start + n, ...]  # (n, R, D)
        v_a = v[anchor_start : anchor_start + n, ...]  # (n, R, J, D)
    # 1/τ is folded into the anchors (R·n·D multiplies instead of n·N·R·J)
    u_anchor = u_a * (1.0 / temperature)

    u_r = xp.permute_dims(u, (1, 0, 2))  # (R, N, D)
    a_r = xp.permute_dims(u_anchor, (1, 0, 2))  # (R, n, D), scaled by 1/τ
    # s(u_ar, u_pr): (R, n_a, N_p)
    s_pos = xp.matmul(a_r, xp.matrix_transpose(u_r))
    # s(u_ar, u_a,n_rj): (n, R, J) -> log-sum-exp over j -> (R, n_a, 1)
    s_own = xp.sum(xp.expand_dims(u_anchor, axis=2) * v_a, axis=-1)
    lse_own = xp.expand_dims(xp.permute_dims(logsumexp(s_own, axis=-1, xp=xp), (1, 0)), axis=2)
    # s(u_ar, u_p,n_rj): (R, n_a, N_p*J) -> (R, n_a, N_p, J) -> log-sum-exp over j
    v_r = xp.reshape(xp.permute_dims(v, (1, 3, 0, 2)), (r, d, n_all * j))
    s_cross = xp.reshape(xp.matmul(a_r, v_r), (r, n, n_all, j))
    lse_cross = logsumexp(s_cross, axis=-1, xp=xp)  # (R, n_a, N_p)
    negative_lse = xp.logaddexp(lse_own, lse_cross)
    terms = explicit_positive_nll(s_pos, negative_lse, xp=xp)  # (R, n_a, N_p)
    terms = xp.permute_dims(terms, (1, 2, 0)) * xp.expand_dims(weights, axis=2)  # (n, N, R)
    kind = "none" if reduction == "pairwise" else reduction  # the kernel's name of dense terms
    return _reduce(terms, None, normalizer=normalizer, reduction=kind, xp=xp)


def _is_points_key(obj: Any, depth: int) -> bool:
    """Whether `obj` is already a tuple key: (x, y) pairs of ints (depth 1) or rows of them."""
    if not isinstance(obj, tuple):
        return False
    if depth == 2:
        return all(_is_points_key(row, 1) and len(row) > 0 for row in obj)
    return all(
        isinstance(p, tuple) and len(p) == 2 and all(type(v) is int for v in p) for p in obj
    )


def _resolve_positions(
    positions: Any, negative_positions: Any, height: int, width: int, region_size: int,
    num_regions: int = 13,
) -> tuple[PointsKey, NegativesKey]:
    """Return the region tables as tuple keys: the defaults for the map size, or the given ones.

    Tuple keys (as :class:`~contrastlocal.nn.LocalContrastiveLoss` passes them) are used as
    they are, without NumPy, so that the call traces under ``torch.compile``.
    """
    if positions is None and negative_positions is None:
        return _default_keys(height, width, region_size, num_regions)
    if positions is None or negative_positions is None:
        missing = "positions" if positions is None else "negative_positions"
        given = "negative_positions" if positions is None else "positions"
        msg = (
            f"`{missing}` must be given together with `{given}` (or leave both as None for the "
            f"default {num_regions}-region pattern); got None."
        )
        raise ValueError(msg)
    if _is_points_key(positions, 1) and _is_points_key(negative_positions, 2):
        pos_key: PointsKey = positions
        neg_key: NegativesKey = negative_positions
        r, j = len(pos_key), len(neg_key[0]) if neg_key else 0
        if len(neg_key) == r and r > 0 and all(len(row) == j for row in neg_key):
            return pos_key, neg_key
    pos = as_positions(positions, "positions", 2, "(R, 2)")
    neg = as_positions(negative_positions, "negative_positions", 3, "(R, J, 2)")
    if neg.shape[0] != pos.shape[0] or neg.shape[1] < 1:
        msg = (
            f"`negative_positions` must have shape (R, J, 2) with R = {pos.shape[0]} (one row "
            f"per position) and J >= 1; got shape {neg.shape}."
        )
        raise ValueError(msg)
    if pos.shape[0] < 1:
        msg = f"`positions` must hold at least one position; got shape {pos.shape}."
        raise ValueError(msg)
    return points_key(pos), tuple(points_key(row) for row in neg)


def _check_weights(positive_weights: Any, n: int, features: Array, *, xp: Namespace) -> Array:
    if isinstance(positive_weights, np.ndarray) and not isinstance(features, np.ndarray):
        # static pairings (original_local_pairing) are NumPy: bring them to the features
        positive_weights = xp.asarray(positive_weights, device=device(features))
    check_ndim(positive_weights, 2, "positive_weights", "(N, N)")
    if tuple(positive_weights.shape) != (n, n):
        msg = (
            f"`positive_weights` must have shape (N, N) = ({n}, {n}) to match `features`; "
            f"got shape {shape_of(positive_weights)}."
        )
        raise ValueError(msg)
    if not (
        positive_weights.dtype == xp.bool
        or xp.isdtype(positive_weights.dtype, ("integral", "real floating"))
    ):
        msg = (
            "`positive_weights` must be a bool, integer or real floating array; "
            f"got dtype {positive_weights.dtype}."
        )
        raise TypeError(msg)
    return positive_weights


def local_contrastive_loss(
    features: Array,
    image_ids: Array | None = None,
    partition_ids: Array | None = None,
    volume_ids: Array | None = None,
    *,
    strategy: str = "random",
    region_size: int = 3,
    num_regions: int = 13,
    positions: Any = None,
    negative_positions: Any = None,
    projection: Array | None = None,
    temperature: float | Array = 0.1,
    positive_weights: Array | None = None,
    normalizer: float | None = None,
    reduction: LossReduction = "mean",
    check_pairs: bool = True,
) -> Array:
    r"""Local contrastive loss on feature maps: regions against their own nearby regions.

    For every pair of rows (anchor `a`, positive `p`) and every region `r`, the region of `a`
    at position :math:`P_r` is pulled towards the same region of `p` and pushed away from the
    regions at the J negative positions of `r`, in `a`'s map and in `p`'s map.

    Two call forms, as :func:`global_contrastive_loss`: ``(features, image_ids,
    partition_ids, volume_ids)`` on one batch of rows, or ``(f0, f1, partition_ids=...,
    volume_ids=...)`` on two pixel-aligned views (rows i of `f0` and `f1` are views of image
    i; the batch is ``cat([f0, f1])`` with image ids ``arange(N)`` repeated twice, and the
    partition and volume ids, one per image, are repeated too).

    Parameters
    ----------
    features : real floating array of shape (N, C, H, W)
        Feature maps (the output of the decoder and its projection head g_2), channel-first,
        or the first view. NumPy, PyTorch, JAX, CuPy or array-api-strict; half precisions are
        computed in float32.
    image_ids : int array of shape (N,), real floating array of shape (N, C, H, W), or None
        Integer: rows with equal id are views of one image (pixel-aligned). Floating: the
        second view. Required unless `positive_weights` is given.
    partition_ids : int array of shape (N,), optional
        Partition of each row's slice (one per image with two views); required by
        ``strategy="domain"``.
    volume_ids : int array of shape (N,), optional
        Volume of each row's slice (one per image with two views); required by
        ``strategy="domain"``.
    strategy : {"random", "domain"}, default "random"
        ``"random"`` (L^R): the positives of a row are the other views of its image.
        ``"domain"`` (L^D): also every row of another volume with the same partition.
        Ignored when `positive_weights` is given.
    region_size : {3, 1}, default 3
        Side K of the square regions; each region is the K×K×C block flattened in (row offset,
        column offset, channel) order.
    num_regions : {13, 9}, default 13
        Size R of the paper's default pattern for this map size and K
        (:func:`local_region_positions`), used when `positions` is None.
    positions : int array-like of shape (R, 2), optional
        Top-left corners of the regions (static settings, read with NumPy). Default: the
        paper's `num_regions`-point pattern.
    negative_positions : int array-like of shape (R, J, 2), optional
        Top-left corners of the J negative regions of each region; given together with
        `positions`. They need not be among `positions`.
    projection : real floating array of shape (K*K*C, D'), optional
        Linear map applied to every flattened region before the cosine similarity (the learned
        9·C → 128 matrix of the paper for K = 3). Same library as `features`.
    temperature : float or 0-D real floating array, default 0.1
        Temperature τ > 0 dividing the cosine similarities; an array (learnable τ) gets its
        gradient.
    positive_weights : bool, int or real floating array of shape (N, N), optional
        Explicit pairing that replaces the strategy: ``positive_weights[a, p]`` = how many times
        each of the R terms (a, p, r) counts (0 = not a pair). Same library as `features`, or a
        NumPy array (as returned by :func:`original_local_pairing`).
    normalizer : float, optional
        What ``reduction="mean"`` divides the weighted sum by; default ``R · sum(W)``, the mean
        over (anchor, positive, region) terms.
    reduction : {"mean", "sum", "none", "pairwise"}, default "mean"
        ``"pairwise"``: the dense (N, N, R) array of weighted terms ``W_ap · ℓ(a, p, r)``, zero
        where there is no pair; ``"sum"``: its sum; ``"mean"``: the sum divided by
        `normalizer`; ``"none"``: one value per anchor row, shape (N,), the anchor's weighted
        mean over its (positive, region) terms,
        ``r_a = Σ_{p,r} W_ap ℓ(a, p, r) / (R · Σ_p W_ap)``, and 0 for a row without positive.
        With weights ``P_a = Σ_p W_ap``, ``Σ_a P_a r_a / Σ_a P_a`` is the ``"mean"`` loss
        (default `normalizer`); with two views and L^R, P_a = 1 and ``r.mean()`` is it.
    check_pairs : bool, default True
        Check the batch where its ids (or `positive_weights`) are on the host (NumPy, CPU
        tensors, outside ``torch.compile``/``torch.func``): raise if there is no positive pair
        or the views of one image have different partition or volume ids, and warn if all
        feature maps are identical (CPU only). Values on a device are never read (no
        synchronisation): the checks are skipped there, except that the ``"mean"``/``"sum"``
        of torch tensors asserts on the device that a positive pair exists. False: no check at
        all, and a batch without a positive pair then gives NaN for ``"mean"`` (0/0, NaN
        gradients; a given `normalizer` gives 0) and 0 for ``"sum"`` (zero gradients).

    Returns
    -------
    array
        0-D, (N,) for ``"none"`` or (N, N, R) for ``"pairwise"`` (2N rows with two views);
        same namespace and device as `features`, in the compute dtype (float64 for float64
        input, float32 otherwise).

    Raises
    ------
    ValueError
        If `features` is not 4-D, the maps are too small for the default pattern,
        `region_size` is not 1 or 3, a position is out of bounds, `negative_positions` does not
        match `positions`, the projection's input size is not K·K·C, an id array's length is
        not N, ``strategy="domain"`` lacks `partition_ids` or `volume_ids`, an option is
        unknown, or there is no positive pair at all (checked where values are concrete).
    TypeError
        If the arrays come from different libraries, `features` is not floating, or ids are not
        integers.

    See Also
    --------
    local_region_positions : The default positions and negative tables.
    extract_regions : The region vectors.
    original_local_pairing : The original code's pairings and normalisers.

    Notes
    -----
    With :math:`u_{ar}` the (projected, L2-normalised) region `r` of row `a`,
    :math:`s(x, y) = x \cdot y / \tau` and :math:`n_{rj}` the negative positions of `r`,

    .. math::

        \ell(a, p, r) = -\log \frac{e^{s(u_{ar}, u_{pr})}}{e^{s(u_{ar}, u_{pr})}
            + \sum_j e^{s(u_{ar}, u_{a, n_{rj}})} + \sum_j e^{s(u_{ar}, u_{p, n_{rj}})}}

    Every row is an anchor (both directions). The value is computed with max-subtracted
    log-sum-exps in at least float32, with no loop over rows, pairs, regions or negatives;
    memory is O(N²·R·J).

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    Two images with two pixel-aligned views each, 1×1 regions on 8×8 maps:

    >>> import numpy as np
    >>> from contrastlocal.functional import local_contrastive_loss
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(2, 4, 8, 8))
    >>> views = np.concatenate([base, base + 0.1 * rng.normal(size=base.shape)])
    >>> image_ids = np.array([0, 1, 0, 1])
    >>> loss = local_contrastive_loss(views, image_ids=image_ids, region_size=1)
    >>> round(float(loss), 3)
    0.207
    >>> local_contrastive_loss(views, image_ids=image_ids, region_size=1,
    ...                        reduction="pairwise").shape
    (4, 4, 13)

    The same batch as two views, and one value per anchor row:

    >>> f0, f1 = views[:2], views[2:]
    >>> round(float(local_contrastive_loss(f0, f1, region_size=1)), 3)
    0.207
    >>> local_contrastive_loss(f0, f1, region_size=1, reduction="none").shape
    (4,)
    """
    numpy_weights = isinstance(positive_weights, np.ndarray)
    xp = _namespace(
        features=features,
        image_ids=image_ids,
        partition_ids=partition_ids,
        volume_ids=volume_ids,
        projection=projection,
        positive_weights=None if numpy_weights else positive_weights,
        temperature=temperature if hasattr(temperature, "shape") else None,
    )
    check_pairs = check_flag(check_pairs, "check_pairs")
    if _is_second_view(image_ids, xp=xp):
        _check_feature_maps(features, "features", xp=xp)
        features, image_ids, ids = _two_view_rows(
            features, image_ids, {"partition_ids": partition_ids, "volume_ids": volume_ids},
            ndim=4, layout="(N, C, H, W)", xp=xp,
        )
        partition_ids, volume_ids = ids["partition_ids"], ids["volume_ids"]
    setup = _check_local_inputs(
        features, image_ids, partition_ids, volume_ids, strategy=strategy,
        region_size=region_size, num_regions=num_regions, positions=positions,
        negative_positions=negative_positions, projection=projection, temperature=temperature,
        normalizer=normalizer, reduction=reduction, reductions=LOSS_REDUCTIONS, xp=xp,
    )
    n = setup.n
    dtype = compute_dtype(features, xp=xp)
    if positive_weights is not None:
        weights = _check_weights(positive_weights, n, features, xp=xp)
        if check_pairs:
            host = host_values(weights)
            if host is not None and not bool(np.any(host != 0)):
                msg = ("`positive_weights` has no nonzero entry: the batch has no positive "
                       "pair, so the loss is undefined.")
                raise ValueError(msg)
        weights = _ids_to(weights, features, xp=xp)
        weights = xp.astype(weights, dtype)
    else:
        if check_pairs:
            _check_local_pairs(image_ids, partition_ids, volume_ids, strategy=strategy)
        image_ids, partition_ids, volume_ids = _strategy_ids(
            features, image_ids, partition_ids, volume_ids, strategy, xp=xp
        )
    if check_pairs:
        _warn_if_collapsed(features, "features")
    if positive_weights is not None:
        msg = (
            "`positive_weights` has no nonzero entry: the batch has no positive pair, so "
            "the loss is undefined."
        )
    else:
        msg = _no_pair_message(strategy)
    fixed_tau = isinstance(setup.temperature, float)
    if reduction in ("mean", "sum") and fixed_tau and is_torch_namespace(xp):
        from ._torch_local import fused_local_loss

        return fused_local_loss(
            features, setup.projection, weights=weights if positive_weights is not None else None,
            image_ids=image_ids, partition_ids=partition_ids, volume_ids=volume_ids,
            strategy=strategy, plan=setup.plan, num_regions=setup.num_regions,
            num_negatives=setup.num_negatives, temperature=setup.temperature,
            normalizer=setup.normalizer, reduction=reduction, eps=eps_for(dtype, xp=xp),
            no_pair_message=msg if check_pairs else None,
        )
    if positive_weights is None:
        weights = _pair_mask_weights(
            image_ids, partition_ids, volume_ids, strategy=strategy, dtype=dtype, xp=xp
        )
    terms = _local_impl(
        features,
        weights,
        setup.plan,
        setup.projection,
        num_regions=setup.num_regions,
        num_negatives=setup.num_negatives,
        region_size=setup.region_size,
        temperature=setup.temperature,
        normalizer=setup.normalizer,
        reduction="pairwise" if reduction == "none" else reduction,
        xp=xp,
    )
    if reduction == "none":
        return _per_anchor(terms, weights, xp=xp)
    return terms


def _check_local_pairs(
    image_ids: Array | None, partition_ids: Array | None, volume_ids: Array | None, *,
    strategy: str, where: str = "",
) -> None:
    """Raise on a batch without positive pair or with an image's views split (host ids only)."""
    if image_ids is None:
        return  # _strategy_ids raises
    image = host_values(image_ids)
    if image is None:
        return
    part = volume = None
    if strategy == "domain":
        part = None if partition_ids is None else host_values(partition_ids)
        volume = None if volume_ids is None else host_values(volume_ids)
        if part is None or volume is None:
            return  # on a device (not read), or missing (_strategy_ids raises)
    mask = _pair_mask_weights(image, part, volume, strategy=strategy, dtype=np.bool_,
                              xp=np_xp)
    if not bool(mask.any()):
        raise ValueError(_no_pair_message(strategy, where))
    if part is not None and volume is not None:
        _check_partitions_of_views(image, part)
        _check_partitions_of_views(image, volume, "volume_ids")


class _LocalSetup(NamedTuple):
    n: int
    region_size: int
    plan: Plan
    num_regions: int
    num_negatives: int
    projection: Array | None
    temperature: float | Array
    normalizer: float | None


def _no_pair_message(strategy: str, where: str = "") -> str:
    how = " or a partition across volumes" if strategy == "domain" else ""
    return (
        f"`image_ids` gives no positive pair{where}: no two rows share an image{how}, so the "
        "loss is undefined."
    )


def _check_local_inputs(
    features: Array,
    image_ids: Array | None,
    partition_ids: Array | None,
    volume_ids: Array | None,
    *,
    strategy: str,
    region_size: int,
    num_regions: int,
    positions: Any,
    negative_positions: Any,
    projection: Array | None,
    temperature: float | Array,
    normalizer: float | None,
    reduction: str,
    reductions: tuple[str, ...],
    xp: Namespace,
) -> _LocalSetup:
    """Validate everything but the pairing; resolve the region tables and the gather plan."""
    n, c, h, w = _check_feature_maps(features, "features", xp=xp)
    k = check_region_size(region_size)
    check_choice(num_regions, (13, 9), "num_regions")
    check_choice(strategy, LOCAL_STRATEGIES, "strategy")
    check_choice(reduction, reductions, "reduction")
    temperature = check_temperature(temperature, xp=xp)
    if normalizer is not None:
        normalizer = check_positive(normalizer, "normalizer")
    for name, ids in (
        ("image_ids", image_ids),
        ("partition_ids", partition_ids),
        ("volume_ids", volume_ids),
    ):
        if ids is not None:
            check_integer_ids(ids, n, name, xp=xp)

    pos, neg = _resolve_positions(positions, negative_positions, h, w, k, num_regions)
    _check_bounds_key(pos, h, w, k, "positions")
    _check_bounds_key(tuple(p for row in neg for p in row), h, w, k, "negative_positions")
    num_regions, num_negatives = len(pos), len(neg[0])

    if projection is not None:
        check_ndim(projection, 2, "projection", "(K*K*C, D')")
        if not is_floating(projection, xp=xp):
            msg = f"`projection` must have a real floating dtype; got dtype {projection.dtype}."
            raise TypeError(msg)
        if projection.shape[0] != k * k * c:
            msg = (
                f"`projection` must have shape (K*K*C, D') with K*K*C = {k}*{k}*{c} = "
                f"{k * k * c} (the flattened region of `features` with C = {c}); got shape "
                f"{shape_of(projection)}."
            )
            raise ValueError(msg)
        projection = _on_device_of(projection, features, xp=xp)
    return _LocalSetup(
        n, k, _region_plan(pos, neg, w, k), num_regions, num_negatives, projection, temperature,
        normalizer,
    )


def _strategy_ids(
    features: Array,
    image_ids: Array | None,
    partition_ids: Array | None,
    volume_ids: Array | None,
    strategy: str,
    *,
    xp: Namespace,
) -> tuple[Array, Array | None, Array | None]:
    """Check the ids a strategy needs are given; move them to the device of `features`."""
    if image_ids is None:
        msg = "`image_ids` must be an int array of shape (N,) unless `positive_weights` "
        msg += "is given; got None."
        raise ValueError(msg)
    if strategy == "domain" and (partition_ids is None or volume_ids is None):
        missing = [
            f"`{name}`"
            for name, ids in (("partition_ids", partition_ids), ("volume_ids", volume_ids))
            if ids is None
        ]
        msg = (
            f'strategy="domain" needs `partition_ids` and `volume_ids` (integer arrays of '
            f"shape (N,)); got None for {' and '.join(missing)}."
        )
        raise ValueError(msg)
    image_ids = _ids_to(image_ids, features, xp=xp)
    if strategy == "domain":
        partition_ids = _ids_to(partition_ids, features, xp=xp)
        volume_ids = _ids_to(volume_ids, features, xp=xp)
    return image_ids, partition_ids, volume_ids


def local_contrastive_loss_shard(
    features: Array,
    image_ids: Array | None = None,
    partition_ids: Array | None = None,
    volume_ids: Array | None = None,
    *,
    gather: RowGather,
    strategy: str = "random",
    region_size: int = 3,
    num_regions: int = 13,
    positions: Any = None,
    negative_positions: Any = None,
    projection: Array | None = None,
    temperature: float | Array = 0.1,
    reduction: str = "mean",
    check_pairs: bool = True,
) -> Array:
    r"""Compute one process's share of the local loss of a batch spread over processes.

    For data-parallel training: each of K processes holds n rows of the batch. Each process
    embeds the regions of its own maps (projection and normalisation); only these region
    embeddings are collected from every process with `gather` (never the feature maps), and
    the ids. Process q's rows are its anchors; positives and their negative regions come from
    all K·n rows. The result is the loss of the anchor rows divided by the WHOLE batch's
    normaliser, so summing the shares of the K processes gives :func:`local_contrastive_loss`
    of the batch concatenated in process order.
    :class:`contrastlocal.nn.LocalContrastiveLoss` with ``gather_distributed=True`` is built
    on it.

    Parameters
    ----------
    features : real floating array of shape (n, C, H, W)
        This process's feature maps, or its first view (two-view form, as
        :func:`local_contrastive_loss`). Every process has the same shape.
    image_ids : integer array of shape (n,), real floating array of shape (n, C, H, W)
        Rows with equal id are views of one image; or the second view. Ids are local to each
        process (an image's views are on one process): the function makes them unique across
        processes (``id · K + q``).
    partition_ids : integer array of shape (n,), optional
        Partition of each row's slice (one per image with two views); ``strategy="domain"``.
    volume_ids : integer array of shape (n,), optional
        Volume of each row's slice (one per image with two views); ``strategy="domain"``.
        Compared across processes as they are, so they must be global (dataset volume ids).
    gather : RowGather
        Concatenates an array's rows over the processes, as for
        :func:`global_contrastive_loss_shard`.
    strategy : {"random", "domain"}, default "random"
        L^R or L^D, as in :func:`local_contrastive_loss`.
    region_size : {3, 1}, default 3
        Side K of the square regions.
    num_regions : {13, 9}, default 13
        Size R of the default pattern, used when `positions` is None.
    positions : int array-like of shape (R, 2), optional
        Top-left corners of the regions; given together with `negative_positions`.
    negative_positions : int array-like of shape (R, J, 2), optional
        Top-left corners of the J negative regions of each region.
    projection : real floating array of shape (K*K*C, D'), optional
        Linear map applied to every flattened region (same on every process).
    temperature : float or 0-D real floating array, default 0.1
        Temperature τ > 0.
    reduction : {"mean", "sum"}, default "mean"
        ``"mean"`` divides this process's terms by R · the number of (anchor, positive) pairs
        of the whole batch; ``"sum"`` sums them.
    check_pairs : bool, default True
        Raise if the whole batch has no positive pair, where the ids are on the host (the same
        answer on every process).

    Returns
    -------
    array
        0-D, this process's share :math:`L_q`; :math:`\sum_q L_q` is the loss of the whole
        batch. Same namespace and device as `features`, in the compute dtype.

    Raises
    ------
    TypeError
        If an input has the wrong type or dtype kind.
    ValueError
        If shapes do not match, a setting is unknown (``reduction`` other than ``"mean"`` or
        ``"sum"``), a position is out of bounds, ids a strategy needs are missing, or (with
        `check_pairs`) the batch has no positive pair.

    See Also
    --------
    local_contrastive_loss : The loss of the whole batch on one process.
    contrastlocal.nn.LocalContrastiveLoss : Uses it with ``gather_distributed=True``.

    Examples
    --------
    With one process the share is the loss:

    >>> import numpy as np
    >>> from contrastlocal.functional import local_contrastive_loss, local_contrastive_loss_shard
    >>> class OneProcess:
    ...     rank, world_size = 0, 1
    ...     def __call__(self, x, *, differentiable):
    ...         return x
    >>> rng = np.random.default_rng(0)
    >>> f0, f1 = rng.normal(size=(2, 3, 4, 8, 8))
    >>> share = local_contrastive_loss_shard(f0, f1, region_size=1, gather=OneProcess())
    >>> bool(np.isclose(share, local_contrastive_loss(f0, f1, region_size=1)))
    True
    """
    xp = _namespace(
        features=features,
        image_ids=image_ids,
        partition_ids=partition_ids,
        volume_ids=volume_ids,
        projection=projection,
    )
    if _is_second_view(image_ids, xp=xp):
        _check_feature_maps(features, "features", xp=xp)
        features, image_ids, ids = _two_view_rows(
            features, image_ids, {"partition_ids": partition_ids, "volume_ids": volume_ids},
            ndim=4, layout="(N, C, H, W)", xp=xp,
        )
        partition_ids, volume_ids = ids["partition_ids"], ids["volume_ids"]
    setup = _check_local_inputs(
        features, image_ids, partition_ids, volume_ids, strategy=strategy,
        region_size=region_size, num_regions=num_regions, positions=positions,
        negative_positions=negative_positions, projection=projection, temperature=temperature,
        normalizer=None, reduction=reduction, reductions=("mean", "sum"), xp=xp,
    )
    image_ids, partition_ids, volume_ids = _strategy_ids(
        features, image_ids, partition_ids, volume_ids, strategy, xp=xp
    )
    n = setup.n
    z = _local_region_embeddings(
        features, setup.plan, setup.projection, region_size=setup.region_size, xp=xp
    )
    z_all = gather(z, differentiable=True)  # (K·n, U, D); checks that all n agree
    image_all = _rank_tagged_ids(
        gather(image_ids, differentiable=False), gather.world_size, n, xp=xp
    )
    partition_all = volume_all = None
    if strategy == "domain":
        partition_all = gather(partition_ids, differentiable=False)
        volume_all = gather(volume_ids, differentiable=False)
    weights = _pair_mask_weights(
        image_all, partition_all, volume_all, strategy=strategy, dtype=z_all.dtype, xp=xp
    )
    # same answer on every process; read only where the weights are on the host
    host = host_values(weights) if check_pairs else None
    if host is not None and not bool(host.any()):
        raise ValueError(_no_pair_message(strategy, f" in the batch of {gather.world_size} "
                                                    "processes"))
    normalizer = None
    if reduction == "mean":
        normalizer = xp.sum(weights) * float(setup.num_regions)
    start = gather.rank * n
    return _local_block_terms(
        z_all, weights[start : start + n, ...], setup.plan, anchor_start=start,
        num_regions=setup.num_regions, num_negatives=setup.num_negatives,
        temperature=setup.temperature, normalizer=normalizer, reduction=reduction, xp=xp,
    )


def original_local_pairing(
    strategy: str, batch_size: int, *, num_regions: int = 13
) -> tuple[np.ndarray, int, float]:
    """Pairing, number of negatives and normaliser of the original code's local losses.

    With the feature maps in the original batch layout and the default negative tables cut to
    their first `num_negatives` entries, :func:`local_contrastive_loss` with these weights and
    this normaliser reproduces the authors' values.

    Parameters
    ----------
    strategy : {"random", "domain"}
        ``"random"``: L^R (``local_loss_exp_no = 0``); ``"domain"``: L^D
        (``local_loss_exp_no = 1``).
    batch_size : int
        Number of slices B. L^R: rows are interleaved views, row 2i = view 1 and row 2i+1 =
        view 2 of slice i (N = 2B; B = 10 in the released scripts). L^D: the original hard-codes
        12 slices (3 volumes × 4 partitions, slice k = volume k // 4, partition k % 4), views
        concatenated (rows 0–11 view 1, rows 12–23 view 2), so `batch_size` must be 12.
    num_regions : int, default 13
        Number of regions R (enters the normaliser).

    Returns
    -------
    positive_weights : ndarray of float64, shape (N, N)
        L^R: 1 for (2i, 2i+1) and (2i+1, 2i). L^D: 1 for (k, 12+k), (k, (k+4) mod 12) and
        (k, (k+8) mod 12), k < 12 (view-1 anchors only, two cyclic partner volumes).
    num_negatives : int
        J: 5 for L^R, 4 for L^D (the training scripts force 4).
    normalizer : float
        L^R: R·2B (the mean over row-region anchors); L^D: 24·R, whatever the batch holds.

    Raises
    ------
    ValueError
        If `strategy` is unknown, `batch_size` < 1, or `batch_size` ≠ 12 for ``"domain"``.
    TypeError
        If `batch_size` or `num_regions` is not an int.

    See Also
    --------
    local_contrastive_loss : Takes these as `positive_weights`, `normalizer`.

    Notes
    -----
    The original L^R term for slice i and region r uses the same positive similarity for both
    views and the negatives of both maps, so it is exactly this package's term for the pairs
    (2i, 2i+1) and (2i+1, 2i). The original L^D differs from the paper's (no view-2 anchors, no
    symmetric terms, J = 4, fixed 3 × 4 geometry, fixed normaliser).

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> from contrastlocal.functional import original_local_pairing
    >>> weights, num_negatives, normalizer = original_local_pairing("random", 2)
    >>> weights
    array([[0., 1., 0., 0.],
           [1., 0., 0., 0.],
           [0., 0., 0., 1.],
           [0., 0., 1., 0.]])
    >>> num_negatives, normalizer
    (5, 52.0)
    >>> weights, num_negatives, normalizer = original_local_pairing("domain", 12)
    >>> weights.shape, int(weights.sum()), num_negatives, normalizer
    ((24, 24), 36, 4, 312.0)
    """
    check_choice(strategy, LOCAL_STRATEGIES, "strategy")
    b = check_int_in_range(batch_size, "batch_size", 1)
    r = check_int_in_range(num_regions, "num_regions", 1)
    if strategy == "random":
        weights = np.zeros((2 * b, 2 * b))
        i = np.arange(b)
        weights[2 * i, 2 * i + 1] = 1.0
        weights[2 * i + 1, 2 * i] = 1.0
        return weights, 5, float(r * 2 * b)
    if b != _ORIGINAL_DOMAIN_SLICES:
        msg = (
            f'`batch_size` must be {_ORIGINAL_DOMAIN_SLICES} for strategy="domain" (the original '
            f"L^D hard-codes 3 volumes x 4 partitions, two views concatenated); got {b}."
        )
        raise ValueError(msg)
    s = _ORIGINAL_DOMAIN_SLICES
    weights = np.zeros((2 * s, 2 * s))
    k = np.arange(s)
    weights[k, s + k] = 1.0
    weights[k, (k + 4) % s] = 1.0
    weights[k, (k + 8) % s] = 1.0
    return weights, 4, float(2 * s * r)
