"""2D slice dataset over concatenated volumes, with partition metadata, and its collate.

The slices of all volumes are stored concatenated in volume order, as one (N, H, W) or
(N, C, H, W) array: in memory, or a memory-mapped ``.npy`` cache
(``np.load(path, mmap_mode="r")``). Per-item access suits ``DataLoader(batch_sampler=...)``;
:meth:`SliceDataset.get_batch` reads a whole batch with one NumPy fancy-indexing call, the fast
path the cache is laid out for.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from ..samplers import PartitionBatchSampler, slice_metadata

__all__ = ["SliceDataset", "collate_slices"]

_META_KEYS = ("image_id", "volume_id", "partition_id", "slice_index")
_BATCH_KEYS = {
    "image": "images",
    "label": "labels",
    "image_id": "image_ids",
    "volume_id": "volume_ids",
    "partition_id": "partition_ids",
    "slice_index": "slice_indices",
    "position": "positions",
}


def _to_float32(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Convert an image array to float32 (uint8 is scaled to [0, 1]); always a fresh array."""
    out: npt.NDArray[np.float32]
    if x.dtype == np.uint8:
        out = np.divide(x, np.float32(255.0), dtype=np.float32)
    else:
        out = np.array(x, dtype=np.float32, copy=True)
    return out


class _ArrayRef:
    """An array that pickles as a file reference when it is a whole-file memory map."""

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array

    def __getstate__(self) -> dict[str, Any]:
        a = self.array
        if isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.filename is not None:
            return {
                "filename": a.filename,
                "dtype": a.dtype.str,
                "shape": a.shape,
                "offset": a.offset,
                "order": "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C",
            }
        return {"array": a}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "array" in state:
            self.array = state["array"]
        else:
            self.array = np.memmap(
                state["filename"],
                dtype=np.dtype(state["dtype"]),
                mode="r",
                offset=state["offset"],
                shape=state["shape"],
                order=state["order"],
            )


class SliceDataset(Dataset[dict[str, Any]]):
    """2D slices of several volumes, each item carrying its volume, partition and position.

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or (N, C, H, W)
        The slices of all volumes concatenated in volume order (in memory or a ``np.memmap``),
        floating point (returned as float32) or uint8 (scaled to [0, 1]).
    labels : ndarray of shape (N, H, W), integer, optional
        Label maps (e.g. uint8), returned as int64.
    slices_per_volume : sequence of int, length V
        Number of slices of each volume; must sum to N.
    num_partitions : int, default 4
        Partitions S along the slice axis: slice ``z`` of a volume with ``Z`` slices is in
        partition ``floor(z * S / Z)``.
    volume_ids : sequence of int, length V, optional
        Distinct integer id of each volume (e.g. the case number); default ``0..V-1``.

    Raises
    ------
    ValueError
        If shapes disagree, `slices_per_volume` does not sum to N, a volume has fewer slices than
        `num_partitions`, or `volume_ids` is not V distinct integers.
    TypeError
        If `images` or `labels` has an unsupported dtype.

    Notes
    -----
    An item is a dict: ``image`` float32 tensor (C, H, W), ``label`` int64 tensor (H, W) if labels
    were given, ``image_id`` (the global slice index, shared by all views of the slice),
    ``volume_id``, ``partition_id``, ``slice_index`` (z) as ints and ``position`` (``z / (Z - 1)``,
    a float in [0, 1]). Besides an int, ``dataset[i]`` accepts the ``(index, position)`` pairs
    that ``PartitionBatchSampler(return_positions=True)`` yields. The dataset pickles cheaply for
    ``DataLoader`` workers: a whole-file memory map is pickled as a reference to its file.

    Examples
    --------
    >>> import numpy as np
    >>> volumes = [np.zeros((5, 8, 8), np.float32), np.ones((4, 8, 8), np.float32)]
    >>> ds = SliceDataset.from_volumes(volumes, num_partitions=2)
    >>> len(ds), ds.num_volumes
    (9, 2)
    >>> item = ds[6]
    >>> tuple(item["image"].shape), item["volume_id"], item["slice_index"], item["partition_id"]
    ((1, 8, 8), 1, 1, 0)
    >>> batch = ds.get_batch([0, 4, 5, 8])
    >>> batch["partition_ids"].tolist(), batch["volume_ids"].tolist()
    ([0, 1, 0, 1], [0, 0, 1, 1])
    """

    def __init__(
        self,
        images: npt.NDArray[Any],
        labels: npt.NDArray[Any] | None = None,
        *,
        slices_per_volume: Sequence[int] | npt.ArrayLike,
        num_partitions: int = 4,
        volume_ids: Sequence[int] | npt.ArrayLike | None = None,
    ) -> None:
        if not isinstance(images, np.ndarray):
            msg = f"`images` must be a NumPy array (or memmap); got {type(images).__name__}."
            raise TypeError(msg)
        if images.ndim not in (3, 4):
            msg = f"`images` must have shape (N, H, W) or (N, C, H, W); got shape {images.shape}."
            raise ValueError(msg)
        if not (np.issubdtype(images.dtype, np.floating) or images.dtype == np.uint8):
            msg = f"`images` must be floating point or uint8; got dtype {images.dtype}."
            raise TypeError(msg)
        n = images.shape[0]
        spatial = images.shape[-2:]
        if labels is not None:
            if not isinstance(labels, np.ndarray):
                msg = f"`labels` must be a NumPy array or None; got {type(labels).__name__}."
                raise TypeError(msg)
            if labels.shape != (n, *spatial):
                msg = (
                    f"`labels` must have shape (N, H, W) = {(n, *spatial)} to match `images`; "
                    f"got shape {labels.shape}."
                )
                raise ValueError(msg)
            if not np.issubdtype(labels.dtype, np.integer):
                msg = f"`labels` must have an integer dtype; got dtype {labels.dtype}."
                raise TypeError(msg)
        meta = slice_metadata(slices_per_volume, num_partitions=num_partitions)
        counts = tuple(int(c) for c in np.bincount(meta["volume_index"]))
        if sum(counts) != n:
            msg = (
                f"`slices_per_volume` must sum to the number of slices N = {n} in `images`; "
                f"got {sum(counts)}."
            )
            raise ValueError(msg)
        if volume_ids is None:
            vids = np.arange(len(counts), dtype=np.int64)
        else:
            vids = np.asarray(volume_ids)
            if vids.shape != (len(counts),) or not np.issubdtype(vids.dtype, np.integer):
                msg = (
                    f"`volume_ids` must be {len(counts)} integers (one per volume); "
                    f"got {volume_ids!r}."
                )
                raise ValueError(msg)
            if np.unique(vids).size != vids.size:
                msg = f"`volume_ids` must be distinct; got {vids.tolist()}."
                raise ValueError(msg)
            vids = vids.astype(np.int64)
        self._images = _ArrayRef(images)
        self._labels = None if labels is None else _ArrayRef(labels)
        self.slices_per_volume: tuple[int, ...] = counts
        self.num_partitions = num_partitions
        self.volume_ids: npt.NDArray[np.int64] = vids
        self._volume_index: npt.NDArray[np.int64] = meta["volume_index"]
        self._meta: dict[str, npt.NDArray[Any]] = {
            "volume_id": vids[meta["volume_index"]],
            "partition_id": meta["partition_id"],
            "slice_index": meta["slice_index"],
            "position": meta["position"].astype(np.float32),
        }

    @classmethod
    def from_volumes(
        cls,
        volumes: Sequence[npt.NDArray[Any]],
        labels: Sequence[npt.NDArray[Any]] | None = None,
        *,
        num_partitions: int = 4,
        volume_ids: Sequence[int] | npt.ArrayLike | None = None,
    ) -> SliceDataset:
        """Build the dataset from a list of volumes (concatenated in memory).

        Parameters
        ----------
        volumes : sequence of ndarray of shape (Z, H, W) or (Z, C, H, W)
            One array per volume, slices along the first axis.
        labels : sequence of ndarray of shape (Z, H, W), optional
            One label volume per image volume.
        num_partitions : int, default 4
            Partitions S along the slice axis.
        volume_ids : sequence of int, optional
            Distinct id of each volume; default ``0..V-1``.

        Returns
        -------
        SliceDataset
            The dataset over the concatenated slices.

        Raises
        ------
        ValueError
            If `volumes` is empty, the volumes' in-plane shapes differ, or `labels` has a different
            length; see also the class.
        """
        if len(volumes) == 0:
            msg = "`volumes` must hold at least one volume; got an empty sequence."
            raise ValueError(msg)
        if labels is not None and len(labels) != len(volumes):
            msg = (
                f"`labels` must hold one label volume per image volume ({len(volumes)}); "
                f"got {len(labels)}."
            )
            raise ValueError(msg)
        shapes = {tuple(np.shape(v)[1:]) for v in volumes}
        if len(shapes) != 1:
            msg = f"`volumes` must share their per-slice shape; got {sorted(shapes)}."
            raise ValueError(msg)
        images = np.concatenate([np.asarray(v) for v in volumes], axis=0)
        lab = None if labels is None else np.concatenate([np.asarray(x) for x in labels], axis=0)
        return cls(
            images,
            lab,
            slices_per_volume=[int(np.shape(v)[0]) for v in volumes],
            num_partitions=num_partitions,
            volume_ids=volume_ids,
        )

    @property
    def num_volumes(self) -> int:
        """Number of volumes V."""
        return len(self.slices_per_volume)

    @property
    def has_labels(self) -> bool:
        """Whether items carry a ``label``."""
        return self._labels is not None

    def __len__(self) -> int:
        return int(self._images.array.shape[0])

    def _check_index(self, index: Any) -> int:
        if isinstance(index, tuple) and len(index) == 2:
            index = index[0]
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            msg = f"`index` must be an int or an (index, position) pair; got {index!r}."
            raise TypeError(msg)
        i = int(index)
        if not 0 <= i < len(self):
            msg = f"`index` must be in [0, {len(self) - 1}]; got {i}."
            raise IndexError(msg)
        return i

    def __getitem__(self, index: int | tuple[int, float]) -> dict[str, Any]:
        i = self._check_index(index)
        image = _to_float32(self._images.array[i])
        if image.ndim == 2:
            image = image[None]
        item: dict[str, Any] = {"image": torch.from_numpy(image)}
        if self._labels is not None:
            item["label"] = torch.from_numpy(np.array(self._labels.array[i], dtype=np.int64))
        item["image_id"] = i
        for key in ("volume_id", "partition_id", "slice_index"):
            item[key] = int(self._meta[key][i])
        item["position"] = float(self._meta["position"][i])
        return item

    def get_batch(
        self, indices: Sequence[int] | Sequence[tuple[int, float]] | npt.ArrayLike
    ) -> dict[str, torch.Tensor]:
        """Read a whole batch with one fancy-indexing call per array (the fast path).

        Parameters
        ----------
        indices : sequence of int of length B, or of ``(index, position)`` pairs
            Global slice indices, e.g. one batch of a
            :class:`~contrastlocal.samplers.PartitionBatchSampler`.

        Returns
        -------
        dict of str to torch.Tensor
            The same layout as :func:`collate_slices`: ``images`` float32 (B, C, H, W), ``labels``
            int64 (B, H, W) if present, ``image_ids``, ``volume_ids``, ``partition_ids``,
            ``slice_indices`` int64 (B,), ``positions`` float32 (B,).

        Raises
        ------
        IndexError
            If an index is out of range.
        """
        if isinstance(indices, np.ndarray):
            idx = indices.astype(np.int64, copy=False).reshape(-1)
        else:
            seq: list[Any] = list(indices)  # type: ignore[arg-type]
            if seq and isinstance(seq[0], tuple):
                seq = [p[0] for p in seq]
            idx = np.asarray(seq, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            msg = f"`indices` must lie in [0, {n - 1}]; got values in [{idx.min()}, {idx.max()}]."
            raise IndexError(msg)
        images = _to_float32(self._images.array[idx])
        if images.ndim == 3:
            images = images[:, None]
        out: dict[str, torch.Tensor] = {"images": torch.from_numpy(images)}
        if self._labels is not None:
            out["labels"] = torch.from_numpy(np.asarray(self._labels.array[idx], dtype=np.int64))
        out["image_ids"] = torch.from_numpy(idx.copy())
        out["volume_ids"] = torch.from_numpy(self._meta["volume_id"][idx])
        out["partition_ids"] = torch.from_numpy(self._meta["partition_id"][idx])
        out["slice_indices"] = torch.from_numpy(self._meta["slice_index"][idx])
        out["positions"] = torch.from_numpy(self._meta["position"][idx])
        return out

    def batch_sampler(self, **kwargs: Any) -> PartitionBatchSampler:
        """Return a partition batch sampler over this dataset's volumes and partitions.

        Parameters
        ----------
        **kwargs
            Passed to :class:`~contrastlocal.samplers.PartitionBatchSampler`
            (``volumes_per_batch``, ``seed``, ``num_replicas``, ``rank``, ``drop_last``,
            ``return_positions``).

        Returns
        -------
        PartitionBatchSampler
            A sampler with this dataset's ``slices_per_volume`` and ``num_partitions``.
        """
        return PartitionBatchSampler(
            self.slices_per_volume, num_partitions=self.num_partitions, **kwargs
        )

    def __repr__(self) -> str:
        shape = tuple(self._images.array.shape)
        return (
            f"{type(self).__name__}(shape={shape}, num_volumes={self.num_volumes}, "
            f"num_partitions={self.num_partitions}, labels={self.has_labels})"
        )


def collate_slices(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack :class:`SliceDataset` items into a batch, keeping the metadata as integer tensors.

    Parameters
    ----------
    items : sequence of dict
        Items as returned by ``SliceDataset.__getitem__``.

    Returns
    -------
    dict of str to torch.Tensor
        ``images`` float32 (B, C, H, W), ``labels`` int64 (B, H, W) when the items have labels,
        ``image_ids``, ``volume_ids``, ``partition_ids``, ``slice_indices`` int64 (B,) and
        ``positions`` float32 (B,).

    Raises
    ------
    ValueError
        If `items` is empty or only some items carry a label.

    Examples
    --------
    >>> import numpy as np
    >>> ds = SliceDataset(np.zeros((4, 6, 6), np.float32), slices_per_volume=[4], num_partitions=2)
    >>> batch = collate_slices([ds[0], ds[3]])
    >>> tuple(batch["images"].shape), batch["partition_ids"].tolist(), batch["image_ids"].dtype
    ((2, 1, 6, 6), [0, 1], torch.int64)
    """
    if len(items) == 0:
        msg = "`items` must hold at least one item; got an empty sequence."
        raise ValueError(msg)
    with_label = ["label" in it for it in items]
    if any(with_label) and not all(with_label):
        msg = "`items` must all carry a `label` or none; got a mix."
        raise ValueError(msg)
    out: dict[str, torch.Tensor] = {"images": torch.stack([it["image"] for it in items])}
    if all(with_label):
        out["labels"] = torch.stack([it["label"] for it in items]).to(torch.int64)
    for key in _META_KEYS:
        out[_BATCH_KEYS[key]] = torch.tensor([int(it[key]) for it in items], dtype=torch.int64)
    out["positions"] = torch.tensor([float(it["position"]) for it in items], dtype=torch.float32)
    return out
