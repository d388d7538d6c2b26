r"""Partition batch samplers (pure Python + NumPy; no torch import).

:class:`PartitionBatchSampler` builds the batches of the global contrastive loss: distinct volumes
x partitions, one slice per partition. :func:`slice_metadata` gives every slice's volume, slice
index, partition and normalised position; :func:`slice_partition` is the partition of a slice,
:math:`\lfloor z S / Z \rfloor`, for everyone who needs it.
"""

from __future__ import annotations

from ._partition import PartitionBatchSampler, slice_metadata, slice_partition

__all__ = ["PartitionBatchSampler", "slice_metadata", "slice_partition"]
