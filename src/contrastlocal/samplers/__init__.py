r"""Partition batch samplers (pure Python + NumPy; no torch import).

:class:`PartitionBatchSampler` builds the batches of the global contrastive loss: distinct volumes
x partitions, one slice per partition. :func:`slice_metadata` gives every slice's volume, slice
index, partition and normalised position; :func:`slice_partition` is the partition of a slice,
:math:`\lfloor z S / Z \rfloor`, for everyone who needs it; :meth:`PartitionBatchSampler.metadata`
and :class:`SliceMetadataDataset` hand a batch's ids to the losses.
"""

from __future__ import annotations

from ._metadata import BatchMetadata, SliceMetadataDataset
from ._partition import PartitionBatchSampler, slice_metadata, slice_partition

__all__ = [
    "BatchMetadata",
    "PartitionBatchSampler",
    "SliceMetadataDataset",
    "slice_metadata",
    "slice_partition",
]
