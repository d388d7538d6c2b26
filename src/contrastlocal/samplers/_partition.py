"""Partition batch sampler: volumes x partitions, one slice per partition (private module).

Pure Python + NumPy (``numpy.random.Generator``); no torch import, so the sampler works with any
loader, and with ``torch.utils.data.DataLoader(batch_sampler=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import check_int_in_range
from ._metadata import BatchMetadata, batch_metadata

__all__ = ["PartitionBatchSampler", "slice_metadata", "slice_partition"]


def slice_partition(
    slice_index: npt.ArrayLike, num_slices: npt.ArrayLike, num_partitions: int
) -> npt.NDArray[np.int64]:
    r"""Return the partition :math:`\lfloor z S / Z \rfloor` of slice ``z`` of ``Z`` slices.

    The one definition of a slice's partition, used by the sampler, the cache index, the plots
    and the command line.

    Parameters
    ----------
    slice_index : int or array of int
        Slice indices ``z`` (``0 <= z < Z``).
    num_slices : int or array of int
        Slices ``Z`` of the volume of each index (broadcast against `slice_index`).
    num_partitions : int
        Number of partitions ``S`` (>= 1).

    Returns
    -------
    ndarray of int64
        The partition of each slice, in ``0 .. S - 1``, of the broadcast shape.

    Raises
    ------
    ValueError
        If `num_partitions` < 1, a `num_slices` < 1 or an index is outside ``[0, Z)``.

    Examples
    --------
    >>> import numpy as np
    >>> slice_partition(np.arange(10), 10, 4).tolist()
    [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    """
    num_partitions = check_int_in_range(num_partitions, "num_partitions", 1)
    z = np.asarray(slice_index, dtype=np.int64)
    nz = np.asarray(num_slices, dtype=np.int64)
    if np.any(nz < 1):
        msg = f"`num_slices` must be >= 1; got {nz.min()}."
        raise ValueError(msg)
    if np.any(z < 0) or np.any(z >= nz):
        msg = f"`slice_index` must lie in [0, num_slices); got values {z.min()}..{z.max()}."
        raise ValueError(msg)
    return np.asarray((z * num_partitions) // nz, dtype=np.int64)


def _check_slices_per_volume(slices_per_volume: Any, num_partitions: int) -> npt.NDArray[np.int64]:
    """Validate `slices_per_volume` (a sequence of ints >= `num_partitions`) and return it."""
    try:
        counts = np.asarray(slices_per_volume)
    except (TypeError, ValueError) as exc:  # pragma: no cover - ragged input
        msg = f"`slices_per_volume` must be a sequence of integers; got {slices_per_volume!r}."
        raise TypeError(msg) from exc
    if counts.ndim != 1:
        msg = (
            "`slices_per_volume` must be a 1-D sequence of slice counts, one per volume; "
            f"got shape {counts.shape}."
        )
        raise ValueError(msg)
    if counts.size > 0 and not np.issubdtype(counts.dtype, np.integer):
        msg = f"`slices_per_volume` must hold integers; got dtype {counts.dtype}."
        raise TypeError(msg)
    if counts.size == 0:
        msg = "`slices_per_volume` must list at least one volume; got an empty sequence."
        raise ValueError(msg)
    short = np.flatnonzero(counts < num_partitions)
    if short.size > 0:
        v = int(short[0])
        msg = (
            f"`slices_per_volume`: volume {v} has {int(counts[v])} slice(s), fewer than "
            f"`num_partitions` = {num_partitions}; every partition needs at least one slice "
            f"({short.size} volume(s) too short: {short[:10].tolist()})."
        )
        raise ValueError(msg)
    return counts.astype(np.int64)


def _partition_bounds(
    counts: npt.NDArray[np.int64], num_partitions: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """First and one-past-last slice of every (volume, partition): two (V, S) arrays.

    Slice ``z`` of a volume with ``Z`` slices is in partition ``floor(z * S / Z)``, so partition
    ``p`` holds ``ceil(p * Z / S) <= z < ceil((p + 1) * Z / S)``.
    """
    p = np.arange(num_partitions + 1, dtype=np.int64)
    edges = -((-p[None, :] * counts[:, None]) // num_partitions)  # ceil(p * Z / S)
    return edges[:, :-1], edges[:, 1:]


def slice_metadata(
    slices_per_volume: Sequence[int] | npt.ArrayLike, *, num_partitions: int = 4
) -> dict[str, npt.NDArray[Any]]:
    r"""Per-slice volume, slice, partition and position of the concatenated slices of all volumes.

    Parameters
    ----------
    slices_per_volume : sequence of int, length V
        Number of slices ``Z_v`` of each volume; the global slice index of slice ``z`` of volume
        ``v`` is ``sum(slices_per_volume[:v]) + z``.
    num_partitions : int, default 4
        Number of partitions S along the slice axis.

    Returns
    -------
    dict of str to ndarray of shape (N,)
        ``"volume_index"`` (int64, 0..V-1), ``"slice_index"`` (int64, z), ``"partition_id"``
        (int64, ``floor(z * S / Z)``) and ``"position"`` (float64, ``z / (Z - 1)`` in [0, 1],
        0 for a single-slice volume), where N = ``sum(slices_per_volume)``.

    Raises
    ------
    ValueError
        If `num_partitions` < 1 or a volume has fewer slices than `num_partitions`.

    Notes
    -----
    Every slice belongs to exactly one partition, :math:`p = \lfloor z S / Z \rfloor`; unlike the
    original code no trailing slices are dropped.

    Examples
    --------
    >>> meta = slice_metadata([5, 4], num_partitions=2)
    >>> meta["partition_id"].tolist()
    [0, 0, 0, 1, 1, 0, 0, 1, 1]
    >>> meta["position"][:5].round(2).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    num_partitions = check_int_in_range(num_partitions, "num_partitions", 1)
    counts = _check_slices_per_volume(slices_per_volume, num_partitions)
    volume_index = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    z = np.arange(int(counts.sum()), dtype=np.int64) - offsets[volume_index]
    nz = counts[volume_index]
    partition = slice_partition(z, nz, num_partitions)
    position = z / np.maximum(nz - 1, 1)
    return {
        "volume_index": volume_index,
        "slice_index": z,
        "partition_id": partition,
        "position": position.astype(np.float64),
    }


class PartitionBatchSampler:
    """Batches of ``volumes_per_batch`` distinct volumes x S partitions, one slice per partition.

    Yields lists of dataset indices into the concatenation of all volumes' slices (volume order).
    For every volume in a batch and every partition ``p`` of it, one slice is drawn uniformly among
    the slices ``z`` with ``floor(z * S / Z) == p``. Usable as
    ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)``.

    Parameters
    ----------
    slices_per_volume : sequence of int, length V
        Number of slices of each volume, in the order their slices are concatenated.
    num_partitions : int, default 4
        Number of partitions S (the paper uses 4).
    volumes_per_batch : int, default 10
        Distinct volumes per batch (the paper's batch of 40 slices is 10 volumes x 4 partitions).
    seed : int, default 0
        Seed (>= 0). The batches of an epoch depend only on (`seed`, epoch), not on `rank`.
    num_replicas : int, default 1
        Number of data-parallel processes sharing the epoch.
    rank : int, default 0
        This process's rank, ``0 <= rank < num_replicas``.
    drop_last : bool, default True
        If True, every batch is full: each epoch uses the first
        ``len(self) * num_replicas * volumes_per_batch`` volumes of the shuffled order and the
        rest wait for a later epoch. If False, every volume is used once per epoch: the shuffled
        volumes are dealt to the replicas round-robin, padded (as ``DistributedSampler`` does)
        with volumes from the start of the shuffled order when V is not a multiple of
        `num_replicas` so all shards have ``ceil(V / num_replicas)`` volumes, and each shard's last
        batch may hold fewer volumes (still all S partitions of each).
    return_positions : bool, default False
        If True, each yielded batch is a list of ``(index, position)`` pairs, where ``position`` is
        the slice's normalised position ``z / (Z - 1)`` in its volume (see :func:`slice_metadata`);
        a dataset that accepts such pairs (e.g. :class:`contrastlocal.data.slices.SliceDataset`)
        works unchanged under ``DataLoader(batch_sampler=...)``. Whatever this flag,
        :meth:`positions` maps any indices to their positions.
    dataset : sized, optional
        The dataset the indices will index; checked at construction: ``len(dataset)`` must be
        ``sum(slices_per_volume)`` (a shorter dataset would fail later with an IndexError).

    Raises
    ------
    ValueError
        At construction, for an impossible configuration: `num_partitions` < 1, a volume with fewer
        slices than `num_partitions` (the message names the first such volume), more
        `volumes_per_batch` than volumes available per replica (``V // num_replicas``),
        ``rank >= num_replicas``, a negative `seed`, or a `dataset` whose length is not
        ``sum(slices_per_volume)``.
    TypeError
        If a count is not an integer.

    Notes
    -----
    Each epoch draws, from ``numpy.random.default_rng([seed, epoch])``, a permutation of the
    volumes and one slice per (volume, partition); every replica computes the same draw and keeps
    its own shard (volumes ``rank``, ``rank + num_replicas``, ... of the shuffled order), and all
    replicas yield the same number of batches. With ``drop_last=True`` the shards are disjoint;
    with ``drop_last=False`` and V not a multiple of `num_replicas`, the padding volumes (up to
    ``num_replicas - 1``, from the start of the order) are in two shards. Call :meth:`set_epoch`
    before each epoch to reshuffle. Within a batch the indices are ordered volume-major:
    ``[v0 p0, v0 p1, ..., v0 p(S-1), v1 p0, ...]``; the losses take partition/volume ids as metadata
    and do not rely on this order.

    References
    ----------
    Chaitanya et al., "Contrastive learning of global and local features for medical image
    segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> sampler = PartitionBatchSampler([6, 5, 8, 4], num_partitions=2, volumes_per_batch=2)
    >>> len(sampler)
    2
    >>> batch = next(iter(sampler))
    >>> len(batch)
    4
    >>> meta = slice_metadata([6, 5, 8, 4], num_partitions=2)
    >>> meta["partition_id"][batch].tolist()
    [0, 1, 0, 1]
    >>> len(set(meta["volume_index"][batch].tolist()))
    2
    >>> sampler.set_epoch(1)
    >>> sampler.positions(batch).shape
    (4,)

    The ids the losses need, for any batch (see also :class:`SliceMetadataDataset`):

    >>> meta = sampler.metadata(batch)
    >>> meta.partition_ids.tolist(), len(set(meta.volume_ids.tolist()))
    ([0, 1, 0, 1], 2)
    """

    def __init__(
        self,
        slices_per_volume: Sequence[int] | npt.ArrayLike,
        *,
        num_partitions: int = 4,
        volumes_per_batch: int = 10,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
        return_positions: bool = False,
        dataset: Any = None,
    ) -> None:
        self.num_partitions = check_int_in_range(num_partitions, "num_partitions", 1)
        counts = _check_slices_per_volume(slices_per_volume, self.num_partitions)
        self.volumes_per_batch = check_int_in_range(volumes_per_batch, "volumes_per_batch", 1)
        self.seed = check_int_in_range(seed, "seed", 0)
        self.num_replicas = check_int_in_range(num_replicas, "num_replicas", 1)
        rank = check_int_in_range(rank, "rank", 0)
        if rank >= self.num_replicas:
            msg = (
                f"`rank` must be in [0, num_replicas - 1] = [0, {self.num_replicas - 1}]; "
                f"got {rank}."
            )
            raise ValueError(msg)
        self.rank = rank
        self.drop_last = bool(drop_last)
        self.return_positions = bool(return_positions)
        num_volumes = int(counts.size)
        per_replica = num_volumes // self.num_replicas
        if self.volumes_per_batch > per_replica:
            msg = (
                f"`volumes_per_batch` = {self.volumes_per_batch} exceeds the volumes available per "
                f"replica: {num_volumes} volume(s) over `num_replicas` = {self.num_replicas} gives "
                f"{per_replica}."
            )
            raise ValueError(msg)
        self.slices_per_volume: tuple[int, ...] = tuple(int(c) for c in counts)
        self._counts = counts
        self._offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._start, self._stop = _partition_bounds(counts, self.num_partitions)
        self._meta = slice_metadata(counts, num_partitions=self.num_partitions)
        if dataset is not None and len(dataset) != int(counts.sum()):
            msg = (f"`dataset` must hold sum(slices_per_volume) = {int(counts.sum())} slices "
                   f"(the sampler's indices index it); got len(dataset) = {len(dataset)}.")
            raise ValueError(msg)
        self.epoch = 0
        if self.drop_last:
            self._num_batches = num_volumes // (self.num_replicas * self.volumes_per_batch)
        else:
            shard = -(-num_volumes // self.num_replicas)
            self._num_batches = -(-shard // self.volumes_per_batch)

    @property
    def num_volumes(self) -> int:
        """Number of volumes V."""
        return len(self.slices_per_volume)

    @property
    def batch_size(self) -> int:
        """Slices in a full batch: ``volumes_per_batch * num_partitions``."""
        return self.volumes_per_batch * self.num_partitions

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; the batches are a function of (`seed`, `epoch`).

        Parameters
        ----------
        epoch : int
            Epoch number (>= 0).
        """
        self.epoch = check_int_in_range(epoch, "epoch", 0)

    def __len__(self) -> int:
        return self._num_batches

    def _shard(self, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Return this replica's volumes (in batch order) for the epoch of `rng`."""
        order = rng.permutation(self.num_volumes).astype(np.int64)
        if self.drop_last:
            used = self._num_batches * self.num_replicas * self.volumes_per_batch
            order = order[:used]
        else:
            total = -(-self.num_volumes // self.num_replicas) * self.num_replicas
            if total > order.size:
                order = np.concatenate([order, order[: total - order.size]])
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]] | Iterator[list[tuple[int, float]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        shard = self._shard(rng)
        # One slice per (volume, partition) for ALL volumes, so the draw is rank-independent.
        slices = rng.integers(self._start, self._stop)  # (V, S)
        indices = slices + self._offsets[:, None]
        if self.return_positions:
            return self._iter_pairs(shard, indices)
        return self._iter_indices(shard, indices)

    def _iter_indices(
        self, shard: npt.NDArray[np.int64], indices: npt.NDArray[np.int64]
    ) -> Iterator[list[int]]:
        for b in range(self._num_batches):
            vols = shard[b * self.volumes_per_batch : (b + 1) * self.volumes_per_batch]
            yield indices[vols].reshape(-1).tolist()

    def _iter_pairs(
        self, shard: npt.NDArray[np.int64], indices: npt.NDArray[np.int64]
    ) -> Iterator[list[tuple[int, float]]]:
        for batch in self._iter_indices(shard, indices):
            pos = self.positions(batch).tolist()
            yield list(zip(batch, pos, strict=True))

    def positions(self, indices: Sequence[int] | npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Normalised positions ``z / (Z - 1)`` in [0, 1] of the slices at global `indices`.

        Parameters
        ----------
        indices : sequence of int, shape (B,)
            Global slice indices, as yielded by the sampler.

        Returns
        -------
        ndarray of shape (B,), float64
            Position of each slice in its volume (0 for a single-slice volume).

        Raises
        ------
        IndexError
            If an index is outside ``[0, sum(slices_per_volume))``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        n = int(self._meta["position"].size)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            msg = f"`indices` must lie in [0, {n - 1}]; got values in [{idx.min()}, {idx.max()}]."
            raise IndexError(msg)
        out: npt.NDArray[np.float64] = self._meta["position"][idx]
        return out

    def metadata(self, indices: Sequence[int] | npt.ArrayLike) -> BatchMetadata:
        """Volume, partition and slice ids of the slices at global `indices` (e.g. a batch).

        Parameters
        ----------
        indices : sequence of int, shape (B,)
            Global slice indices, as yielded by the sampler.

        Returns
        -------
        BatchMetadata
            ``(indices, volume_ids, partition_ids, slice_ids)``, int64 arrays of shape (B,).

        Raises
        ------
        IndexError
            If an index is outside ``[0, sum(slices_per_volume))``.
        """
        return batch_metadata(self._meta, indices)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_volumes={self.num_volumes}, "
            f"num_partitions={self.num_partitions}, volumes_per_batch={self.volumes_per_batch}, "
            f"seed={self.seed}, num_replicas={self.num_replicas}, rank={self.rank}, "
            f"drop_last={self.drop_last}, return_positions={self.return_positions})"
        )
