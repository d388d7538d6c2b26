"""The authors' pre-training batches as index arrays, and their local-loss arguments.

Each function returns, for every row of the batch the authors' training script feeds, which
pre-training volume and slice it shows and which view it is (0 = the slice itself, 1 and 2 =
independent augmentations), plus the blank rows of their G^D layout. A stage gathers the slices,
augments the rows whose view is not 0, writes zeros into blank rows and hands the embeddings to
:func:`~contrastlocal.functional.original_global_loss` (global) or the feature maps to
:func:`~contrastlocal.functional.local_contrastive_loss` with
:func:`authors_local_loss_arguments` (local).

Randomness comes from one ``numpy.random.Generator``, drawn in a documented order (volume orders
by ``permutation``, slice positions by ``random``) so that a batch is a function of the
generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..functional import local_region_positions, original_global_layout, original_local_pairing

__all__ = [
    "authors_batch_indices",
    "authors_batch_views",
    "authors_global_batch",
    "authors_local_batch",
    "authors_local_loss_arguments",
    "authors_partition_slices",
]

_IntArray = npt.NDArray[np.int64]
#: The authors' L^D geometry: 3 volumes x 4 partitions, hard-coded.
_LD_VOLUMES, _LD_PARTITIONS = 3, 4
#: The authors' stage-2 batch (cfg.batch_size_ft of init_*.py), used by L^R.
_LR_SLICES = 10


def _check_depths(depths: Sequence[int] | _IntArray) -> _IntArray:
    try:
        values = [int(d) for d in depths]
        ok = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in depths)
    except TypeError:
        ok, values = False, []
    if not ok or not values or min(values) < 1:
        msg = (f"`depths` must be a non-empty sequence of positive integers (the number of "
               f"slices of each pre-training volume); got {depths!r}.")
        raise ValueError(msg)
    return np.asarray(values, dtype=np.int64)


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"`{name}` must be an integer; got {value!r}."
        raise TypeError(msg)
    if value < low:
        msg = f"`{name}` must be >= {low}; got {value}."
        raise ValueError(msg)
    return int(value)


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        msg = f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}."
        raise TypeError(msg)
    return rng


def _need_volumes(needed: int, available: int, what: str) -> None:
    if needed > available:
        msg = (f"{what} needs {needed} pre-training volumes; `depths` lists {available}. Use "
               f"a smaller batch or more volumes.")
        raise ValueError(msg)


def authors_partition_slices(
    depths: Sequence[int] | _IntArray,
    volumes: Sequence[int] | _IntArray,
    num_partitions: int,
    rng: np.random.Generator,
) -> _IntArray:
    """One slice per partition of each listed volume, as the authors' partition sampler.

    Volume v with Z slices is cut into S chunks ``[k·⌊Z/S⌋, (k+1)·⌊Z/S⌋)``; one slice is drawn
    uniformly from each chunk (the last ``Z mod S`` slices are never drawn).

    Parameters
    ----------
    depths : sequence of int
        Number of slices of each pre-training volume.
    volumes : sequence of int
        Indices into `depths` of the volumes to sample, in batch order.
    num_partitions : int
        S, at least 1.
    rng : numpy.random.Generator
        One ``rng.random((len(volumes), S))`` draw.

    Returns
    -------
    ndarray of int64, shape (len(volumes), S)
        Slice index of partition k of each volume.

    Raises
    ------
    ValueError
        If a volume index is out of range or a volume has fewer than S slices.

    Examples
    --------
    >>> import numpy as np
    >>> s = authors_partition_slices([8, 9], [1, 0], 4, np.random.default_rng(0))
    >>> s.shape, bool(((s // 2) == np.arange(4)).all())
    ((2, 4), True)
    """
    z = _check_depths(depths)
    s = _check_int(num_partitions, "num_partitions", 1)
    gen = _check_rng(rng)
    vols = np.asarray(volumes, dtype=np.int64).reshape(-1)
    if vols.size and (vols.min() < 0 or vols.max() >= len(z)):
        msg = f"`volumes` must index `depths` (0 .. {len(z) - 1}); got {vols.tolist()}."
        raise ValueError(msg)
    chunk = z[vols] // s
    if vols.size and chunk.min() < 1:
        bad = int(vols[np.argmin(chunk)])
        msg = (f"volume {bad} has {int(z[bad])} slices, fewer than `num_partitions` = {s}: its "
               f"partitions would be empty.")
        raise ValueError(msg)
    u = gen.random((len(vols), s))
    start = np.arange(s)[None, :] * chunk[:, None]
    return (start + np.floor(u * chunk[:, None])).astype(np.int64)


def _random_slices(z: _IntArray, n: int, rng: np.random.Generator) -> tuple[_IntArray, _IntArray]:
    """N slices uniformly with replacement from the concatenation of all volumes' slices."""
    starts = np.concatenate([[0], np.cumsum(z)])
    flat = np.floor(rng.random(n) * starts[-1]).astype(np.int64)
    volume = np.searchsorted(starts, flat, side="right") - 1
    return volume.astype(np.int64), flat - starts[volume]


def _interleaved(volume: _IntArray, slices: _IntArray) -> dict[str, npt.NDArray[Any]]:
    n = len(volume)
    rows = np.arange(2 * n)
    image = rows // 2
    return {
        "volume": volume[image],
        "slice": slices[image],
        "partition": np.full(2 * n, -1, dtype=np.int64),
        "image": image.astype(np.int64),
        "view": (rows % 2 + 1).astype(np.int64),
        "set": np.zeros(2 * n, dtype=np.int64),
        "call": (rows % 2).astype(np.int64),
        "blank": np.zeros(2 * n, dtype=bool),
    }


def authors_global_batch(
    strategy: str,
    batch_size: int,
    depths: Sequence[int],
    rng: np.random.Generator,
    *,
    num_partitions: int = 4,
    blank_rows: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """Lay out the authors' global-loss batch: volume, slice and view of each row.

    Parameters
    ----------
    strategy : {"random", "domain_negatives", "domain"}
        ``"random"`` (G^R): B slices drawn uniformly with replacement from all slices of all
        volumes, rows interleaved (row 2i = view 1 and row 2i+1 = view 2 of slice i).
        ``"domain_negatives"`` (G^{D−}): the volumes in random order, image k = partition
        ``k mod S`` of volume ``⌊k/S⌋`` (k < B), rows ``[images | view 1 | view 2]``, N = 3B.
        ``"domain"`` (G^D): two sets of volumes in independent random orders; blocks of 4S rows
        ``[set-0 volume b: its S slices | their augmentations | set-1 volume b: slices |
        augmentations]`` for b = 0, 1, ...; N = 4B (S = 4) or 5B + 4 (S = 3, 6).
    batch_size : int
        The authors' B (``--bt_size``), at least 1.
    depths : sequence of int
        Number of slices of each pre-training volume.
    rng : numpy.random.Generator
        Draws, in this order: ``"random"``: ``rng.random(B)``; ``"domain_negatives"``:
        ``rng.permutation(M)``, then :func:`authors_partition_slices` of the first ⌈B/S⌉
        volumes; ``"domain"``: ``rng.permutation(M)`` for set 0 and for set 1, then the partition
        slices of set 0's used volumes and of set 1's.
    num_partitions : int, default 4
        S (3, 4 or 6 for ``"domain"``; unused by ``"random"``).
    blank_rows : bool, default True
        ``"domain"`` only: keep the authors' all-zero rows (their stitching loop stops one block
        early; :func:`~contrastlocal.functional.original_global_layout`). False fills those
        rows with further volumes in the same pattern (the row count is unchanged).

    Returns
    -------
    dict of str to ndarray of shape (N,)
        ``"volume"`` (index into `depths`), ``"slice"`` (slice index in that volume),
        ``"partition"`` (-1 for G^R), ``"image"`` (rows showing views of one sampled slice share
        it), ``"view"`` (0 = the slice itself, 1, 2 = independent augmentations), ``"set"``
        (G^D's set 0 or 1, else 0), ``"call"`` (the authors' augmentation call of an augmented
        row: rows of one call share one intensity draw under ``fidelity.shared_intensity``;
        G^D: one call per set, otherwise one per view; -1 on unaugmented rows), ``"blank"``
        (bool). Integer fields are -1 on blank rows.
        The rows are in the order :func:`~contrastlocal.functional.original_global_loss`
        expects.

    Raises
    ------
    ValueError
        If `strategy` is unknown, S is one the authors' G^D rejects, a volume has fewer than S
        slices, or `depths` lists fewer volumes than the batch needs.
    TypeError
        If `batch_size` or `num_partitions` is not an integer, or `rng` not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> rows = authors_global_batch("domain", 12, [10] * 6, np.random.default_rng(0))
    >>> len(rows["view"]), int(rows["blank"].sum()), rows["view"][:8].tolist()
    (48, 16, [0, 0, 0, 0, 1, 1, 1, 1])
    """
    if strategy not in ("random", "domain_negatives", "domain"):
        msg = (f"`strategy` must be one of 'random', 'domain_negatives', 'domain'; got "
               f"{strategy!r}.")
        raise ValueError(msg)
    b = _check_int(batch_size, "batch_size", 1)
    s = _check_int(num_partitions, "num_partitions", 1)
    z = _check_depths(depths)
    gen = _check_rng(rng)
    if not isinstance(blank_rows, bool):
        msg = f"`blank_rows` must be a bool; got {blank_rows!r}."
        raise TypeError(msg)
    m = len(z)
    if strategy == "random":
        return _interleaved(*_random_slices(z, b, gen))
    layout = original_global_layout(strategy, b, s)  # type: ignore[arg-type]  # checks S
    n = len(layout["blank"])
    if strategy == "domain_negatives":
        used = -(-b // s)
        _need_volumes(used, m, f"G^D- with B = {b}, S = {s} ({used} volumes x {s} partitions)")
        order = gen.permutation(m)[:used]
        slices = authors_partition_slices(z, order, s, gen)
        k = np.arange(n) % b
        view = (np.arange(n) // b).astype(np.int64)
        return {
            "volume": order[k // s].astype(np.int64),
            "slice": slices[k // s, k % s],
            "partition": (k % s).astype(np.int64),
            "image": k.astype(np.int64),
            "view": view,
            "set": np.zeros(n, dtype=np.int64),
            "call": view - 1,
            "blank": np.zeros(n, dtype=bool),
        }
    block = 4 * s
    blank = layout["blank"].astype(bool) if blank_rows else np.zeros(n, dtype=bool)
    real = np.flatnonzero(~blank)
    blocks = int(real.max()) // block + 1 if real.size else 0
    _need_volumes(blocks, m, f"G^D with B = {b}, S = {s} ({blocks} volumes per set)")
    orders = [gen.permutation(m)[:blocks], gen.permutation(m)[:blocks]]
    parts = [authors_partition_slices(z, order, s, gen) for order in orders]
    r = np.arange(n)
    vol_slot = r // block
    within = r % block
    sets = within // (2 * s)
    part = within % s
    if blocks == 0:  # e.g. B < 4 at S = 4: the loop writes no block, every row stays blank
        orders = [np.zeros(1, dtype=np.int64)] * 2
        parts = [np.zeros((1, s), dtype=np.int64)] * 2
    slot = np.where(blank, 0, vol_slot)
    volume = np.where(sets == 0, orders[0][slot], orders[1][slot])
    slice_ = np.where(sets == 0, parts[0][slot, part], parts[1][slot, part])
    out = {
        "volume": volume,
        "slice": slice_,
        "partition": part,
        "image": (vol_slot * 2 + sets) * s + part,
        "view": (within % (2 * s)) // s,
        "set": sets,
        "call": np.where((within % (2 * s)) // s == 1, sets, -1),
    }
    result: dict[str, npt.NDArray[Any]] = {
        k: np.where(blank, -1, v).astype(np.int64) for k, v in out.items()
    }
    result["blank"] = blank
    return result


def authors_local_batch(
    strategy: str,
    depths: Sequence[int],
    rng: np.random.Generator,
    *,
    batch_size: int | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """Lay out the authors' stage-2 batch: volume, slice and view of each row.

    Parameters
    ----------
    strategy : {"random", "domain"}
        ``"random"`` (L^R): B slices uniformly with replacement from all slices of all volumes,
        rows interleaved (2i = view 1, 2i+1 = view 2 of slice i), N = 2B. ``"domain"`` (L^D):
        the authors' hard-coded 3 volumes (the first of a random order) x 4 partitions, slice k =
        partition ``k mod 4`` of volume ``⌊k/4⌋``, views concatenated (rows 0-11 view 1, rows
        12-23 view 2), N = 24.
    depths : sequence of int
        Number of slices of each pre-training volume.
    rng : numpy.random.Generator
        ``"random"``: ``rng.random(B)``; ``"domain"``: ``rng.permutation(M)``, then
        :func:`authors_partition_slices` of the first 3 volumes.
    batch_size : int, optional
        B for ``"random"`` (default 10: the released scripts ignore ``--bt_size`` in stage 2);
        for ``"domain"`` only 12 (the default) is accepted.

    Returns
    -------
    dict of str to ndarray of shape (N,)
        As :func:`authors_global_batch` (views 1 and 2 only; no blank rows).

    Raises
    ------
    ValueError
        If `strategy` is unknown, ``"domain"`` gets a batch size other than 12, or there are
        fewer than 3 volumes (L^D) or a volume with fewer than 4 slices.

    Examples
    --------
    >>> import numpy as np
    >>> rows = authors_local_batch("domain", [8, 8, 8, 8], np.random.default_rng(0))
    >>> rows["view"].tolist() == [1] * 12 + [2] * 12, rows["partition"][:5].tolist()
    (True, [0, 1, 2, 3, 0])
    """
    if strategy not in ("random", "domain"):
        msg = f"`strategy` must be 'random' or 'domain'; got {strategy!r}."
        raise ValueError(msg)
    z = _check_depths(depths)
    gen = _check_rng(rng)
    slices_per_batch = _LD_VOLUMES * _LD_PARTITIONS
    if strategy == "random":
        b = _LR_SLICES if batch_size is None else _check_int(batch_size, "batch_size", 1)
        return _interleaved(*_random_slices(z, b, gen))
    if batch_size is not None and _check_int(batch_size, "batch_size", 1) != slices_per_batch:
        msg = (f"`batch_size` must be {slices_per_batch} for the authors' L^D (3 volumes x 4 "
               f"partitions, hard-coded); got {batch_size}.")
        raise ValueError(msg)
    _need_volumes(_LD_VOLUMES, len(z), "The authors' L^D (3 volumes x 4 partitions)")
    order = gen.permutation(len(z))[:_LD_VOLUMES]
    slices = authors_partition_slices(z, order, _LD_PARTITIONS, gen).reshape(-1)
    k = np.arange(2 * slices_per_batch) % slices_per_batch
    return {
        "volume": order[k // _LD_PARTITIONS].astype(np.int64),
        "slice": slices[k],
        "partition": (k % _LD_PARTITIONS).astype(np.int64),
        "image": k.astype(np.int64),
        "view": (np.arange(2 * slices_per_batch) // slices_per_batch + 1).astype(np.int64),
        "set": np.zeros(2 * slices_per_batch, dtype=np.int64),
        "call": (np.arange(2 * slices_per_batch) // slices_per_batch).astype(np.int64),
        "blank": np.zeros(2 * slices_per_batch, dtype=bool),
    }


def authors_batch_indices(
    rows: dict[str, npt.NDArray[Any]], depths: Sequence[int] | _IntArray
) -> _IntArray:
    """Flat slice index of every row: volume v's slice z is ``sum(depths[:v]) + z``.

    This is the index of the slice in all pre-training slices concatenated volume by volume (the
    order of a slice bank built from the same volumes).

    Parameters
    ----------
    rows : dict of str to ndarray
        A batch of :func:`authors_global_batch` or :func:`authors_local_batch`.
    depths : sequence of int
        The `depths` the batch was drawn with.

    Returns
    -------
    ndarray of int64, shape (N,)
        The flat index, -1 on blank rows.

    Raises
    ------
    ValueError
        If `rows` lacks ``"volume"``/``"slice"`` or indexes outside `depths`.

    Examples
    --------
    >>> import numpy as np
    >>> rows = {"volume": np.array([1, 0, -1]), "slice": np.array([2, 3, -1])}
    >>> authors_batch_indices(rows, [5, 4]).tolist()
    [7, 3, -1]
    """
    z = _check_depths(depths)
    if "volume" not in rows or "slice" not in rows:
        msg = f"`rows` must hold 'volume' and 'slice'; got keys {sorted(rows)}."
        raise ValueError(msg)
    volume = np.asarray(rows["volume"], dtype=np.int64)
    slice_ = np.asarray(rows["slice"], dtype=np.int64)
    blank = volume < 0
    v = np.where(blank, 0, volume)
    if (v >= len(z)).any() or (~blank & ((slice_ < 0) | (slice_ >= z[v]))).any():
        msg = "`rows` index a volume or slice outside `depths`."
        raise ValueError(msg)
    starts = np.concatenate([[0], np.cumsum(z)])
    return np.where(blank, -1, starts[v] + slice_).astype(np.int64)


def authors_batch_views(
    images: Any,
    rows: dict[str, npt.NDArray[Any]],
    generator: Any,
    *,
    kind: str = "global",
    **kwargs: Any,
) -> Any:
    """Turn the gathered slices of an authors' batch into the images their script feeds.

    Rows of view 0 keep their slice, blank rows become all-zero images, and the augmented rows
    are augmented one ``"call"`` at a time, in increasing call order, as the authors' script
    does (so ``shared=True`` gives one intensity draw per call).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        The slice of every row (anything on blank rows), e.g. a slice bank indexed by
        :func:`authors_batch_indices` (blank rows clamped to 0).
    rows : dict of str to ndarray
        The batch (:func:`authors_global_batch`, :func:`authors_local_batch`).
    generator : torch.Generator
        Source of randomness of the augmentations.
    kind : {"global", "local"}, default "global"
        :func:`~contrastlocal.data.augment.global_views` (crop + intensity) or
        :func:`~contrastlocal.data.augment.intensity_views` (intensity only).
    **kwargs
        Passed to the view function (``shared=True``, ``crop_pixels=100``, ...).

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        The batch images.

    Raises
    ------
    ValueError
        If `kind` is unknown or `rows` does not match `images`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> rows = authors_global_batch("domain", 8, [8, 8, 8], np.random.default_rng(0))
    >>> x = torch.rand(len(rows["view"]), 1, 16, 16)
    >>> out = authors_batch_views(x, rows, torch.Generator().manual_seed(0), shared=True)
    >>> int(rows["blank"].sum()), bool((out[rows["blank"]] == 0).all())
    (16, True)
    >>> bool(torch.equal(out[:4], x[:4]))  # rows 0-3: set 0's first volume, not augmented
    True
    """
    from ..data.augment import global_views, intensity_views
    from ._distributed import to_device

    if kind not in ("global", "local"):
        msg = f"`kind` must be 'global' or 'local'; got {kind!r}."
        raise ValueError(msg)
    n = images.shape[0]
    if any(len(rows[k]) != n for k in ("view", "call", "blank")):
        msg = (f"`rows` must describe the {n} rows of `images`; got "
               f"{ {k: len(rows[k]) for k in ('view', 'call', 'blank')} }.")
        raise ValueError(msg)
    view_fn = global_views if kind == "global" else intensity_views
    out = images.clone()
    call = np.asarray(rows["call"])
    for c in np.unique(call[call >= 0]):
        index = to_device(np.flatnonzero(call == c), images.device)  # no wait for the GPU
        out[index] = view_fn(images.index_select(0, index), generator, **kwargs)
    blank = to_device(np.asarray(rows["blank"], dtype=bool), images.device)
    return out.masked_fill(blank.reshape(n, 1, 1, 1), 0.0)


def authors_local_loss_arguments(
    strategy: str,
    map_size: int | tuple[int, int],
    *,
    region_size: int = 3,
    num_regions: int = 13,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Build the local-loss keyword arguments of the authors' L^R / L^D.

    They go to :func:`~contrastlocal.functional.local_contrastive_loss` with the feature maps
    of a batch of :func:`authors_local_batch`.

    Parameters
    ----------
    strategy : {"random", "domain"}
        L^R (J = 5 negatives, mean over the 2B·R anchors) or L^D (view-1 anchors, positives the
        other view and the same partition of the two other volumes cyclically, J = 4,
        normaliser 24·R).
    map_size : int or pair of int
        Feature-map size (48 for 192 x 192 inputs and l = 3).
    region_size : {3, 1}, default 3
        K.
    num_regions : {13, 9}, default 13
        R.
    batch_size : int, optional
        Slices of the batch (default: 10 for L^R, 12 for L^D).

    Returns
    -------
    dict
        ``image_ids`` (None), ``positive_weights`` (N, N), ``normalizer``, ``positions``
        (R, 2) and ``negative_positions`` (R, J, 2): pass them as ``**kwargs`` together with
        the feature maps, ``region_size`` and the projection.

    Raises
    ------
    ValueError
        As :func:`~contrastlocal.functional.original_local_pairing` and
        :func:`~contrastlocal.functional.local_region_positions`.

    Examples
    --------
    >>> kw = authors_local_loss_arguments("domain", 48)
    >>> kw["positive_weights"].shape, kw["negative_positions"].shape, kw["normalizer"]
    ((24, 24), (13, 4, 2), 312.0)
    """
    if batch_size is None:
        batch_size = _LR_SLICES if strategy == "random" else _LD_VOLUMES * _LD_PARTITIONS
    weights, num_negatives, normalizer = original_local_pairing(
        strategy, batch_size, num_regions=num_regions
    )
    positions, negatives = local_region_positions(
        map_size, region_size=region_size, num_regions=num_regions
    )
    return {
        "image_ids": None,
        "positive_weights": weights,
        "normalizer": normalizer,
        "positions": positions,
        "negative_positions": np.ascontiguousarray(negatives[:, :num_negatives]),
    }
