"""Per-batch slice metadata for the partition sampler: a typed record and a dataset wrapper.

The losses need, for every row of a batch, its volume, partition and (for two views) image ids.
The sampler knows them from the indices alone (:func:`slice_metadata`); this module hands them
over without the user rebuilding them. Pure Python + NumPy (no torch import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["BatchMetadata", "SliceMetadataDataset"]


class BatchMetadata(NamedTuple):
    """Metadata of the slices at some dataset indices (one entry per slice, int64 arrays).

    Returned by :meth:`PartitionBatchSampler.metadata`.

    Parameters
    ----------
    indices : ndarray of int64, shape (B,)
        The dataset (global slice) indices.
    volume_ids : ndarray of int64, shape (B,)
        Volume of each slice (0..V-1, the sampler's volume order): the local loss's
        `volume_ids`.
    partition_ids : ndarray of int64, shape (B,)
        Partition ``floor(z * S / Z)`` of each slice: the losses' `partition_ids`.
    slice_ids : ndarray of int64, shape (B,)
        Slice index z of each slice within its volume.

    See Also
    --------
    SliceMetadataDataset : The same ids, per item, through a DataLoader.

    Examples
    --------
    >>> from contrastlocal.samplers import PartitionBatchSampler
    >>> sampler = PartitionBatchSampler([4, 4], num_partitions=2, volumes_per_batch=1)
    >>> meta = sampler.metadata([1, 6])
    >>> meta.volume_ids.tolist(), meta.partition_ids.tolist(), meta.slice_ids.tolist()
    ([0, 1], [0, 1], [1, 2])
    """

    indices: npt.NDArray[np.int64]
    volume_ids: npt.NDArray[np.int64]
    partition_ids: npt.NDArray[np.int64]
    slice_ids: npt.NDArray[np.int64]


class SliceMetadataDataset:
    """Wrap a dataset so that each item also carries its slice's metadata.

    ``wrapped[i]`` is ``(dataset[i], {"index": i, "volume_id": v, "partition_id": p,
    "slice_id": z})``, so a ``DataLoader(wrapped, batch_sampler=sampler)`` batch is
    ``(samples, metadata)`` with ``metadata["partition_id"]`` etc. collated to (B,) tensors.
    An index yielded as an ``(index, position)`` pair (``return_positions=True``) is passed to
    the dataset as it is and its metadata is that of ``index``.

    Parameters
    ----------
    dataset : indexable with ``len``
        The slices concatenated in volume order (the sampler's indices index it).
    sampler : PartitionBatchSampler
        Gives the volume layout (`slices_per_volume`, `num_partitions`).

    Raises
    ------
    ValueError
        If ``len(dataset)`` is not the sampler's number of slices.

    Examples
    --------
    >>> from contrastlocal.samplers import PartitionBatchSampler, SliceMetadataDataset
    >>> sampler = PartitionBatchSampler([6, 5, 8, 4], num_partitions=2, volumes_per_batch=2)
    >>> data = SliceMetadataDataset(list(range(23)), sampler)
    >>> sample, meta = data[7]
    >>> sample, meta["volume_id"], meta["partition_id"], meta["slice_id"]
    (7, 1, 0, 1)

    With PyTorch (two augmented views per slice, as in the training stages)::

        loader = DataLoader(SliceMetadataDataset(dataset, sampler), batch_sampler=sampler)
        for images, meta in loader:
            z0, z1 = model(augment(images)), model(augment(images))
            loss = global_loss(z0, z1, partition_ids=meta["partition_id"])
    """

    def __init__(self, dataset: Any, sampler: Any) -> None:
        total = int(sum(sampler.slices_per_volume))
        if len(dataset) != total:
            msg = (f"`dataset` must hold the sampler's {total} slices (sum of "
                   f"`slices_per_volume`); got len(dataset) = {len(dataset)}.")
            raise ValueError(msg)
        self.dataset = dataset
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int | tuple[int, float]) -> tuple[Any, dict[str, int]]:
        i = int(index[0]) if isinstance(index, tuple) else int(index)
        meta = self.sampler.metadata([i])
        return self.dataset[index], {
            "index": i,
            "volume_id": int(meta.volume_ids[0]),
            "partition_id": int(meta.partition_ids[0]),
            "slice_id": int(meta.slice_ids[0]),
        }


def batch_metadata(
    meta: dict[str, npt.NDArray[Any]], indices: Sequence[int] | npt.ArrayLike
) -> BatchMetadata:
    """Return the :class:`BatchMetadata` of `indices` from :func:`slice_metadata`'s arrays."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = int(meta["volume_index"].size)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        msg = f"`indices` must lie in [0, {n - 1}]; got values in [{idx.min()}, {idx.max()}]."
        raise IndexError(msg)
    return BatchMetadata(idx, meta["volume_index"][idx], meta["partition_id"][idx],
                         meta["slice_index"][idx])
