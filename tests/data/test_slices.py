"""Tests of SliceDataset, its batch path and collate_slices."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.data.slices import SliceDataset, collate_slices  # noqa: E402
from contrastlocal.samplers import PartitionBatchSampler  # noqa: E402


def _volumes(rng: np.random.Generator, counts: list[int], channels: int | None = None):
    shape = (8, 6) if channels is None else (channels, 8, 6)
    vols = [rng.random((c, *shape), dtype=np.float32) for c in counts]
    labs = [rng.integers(0, 4, (c, 8, 6), dtype=np.uint8) for c in counts]
    return vols, labs


@pytest.mark.parametrize("channels", [None, 3])
def test_slices_items_match_loop_reference(channels: int | None) -> None:
    rng = np.random.default_rng(0)
    counts = [5, 4, 7]
    vols, labs = _volumes(rng, counts, channels)
    ds = SliceDataset.from_volumes(vols, labs, num_partitions=4, volume_ids=[10, 20, 30])
    assert len(ds) == sum(counts)
    k = 0
    for v, (vol, lab) in enumerate(zip(vols, labs, strict=True)):
        for z in range(vol.shape[0]):
            item = ds[k]
            expected = vol[z] if channels else vol[z][None]
            assert item["image"].dtype == torch.float32
            np.testing.assert_array_equal(item["image"].numpy(), expected)
            assert item["label"].dtype == torch.int64
            np.testing.assert_array_equal(item["label"].numpy(), lab[z])
            assert item["image_id"] == k
            assert item["volume_id"] == [10, 20, 30][v]
            assert item["slice_index"] == z
            assert item["partition_id"] == (z * 4) // vol.shape[0]
            assert item["position"] == pytest.approx(z / (vol.shape[0] - 1))
            k += 1


def test_slices_get_batch_equals_collated_items() -> None:
    rng = np.random.default_rng(1)
    vols, labs = _volumes(rng, [6, 5, 9, 4])
    ds = SliceDataset.from_volumes(vols, labs, num_partitions=2)
    indices = [3, 0, 22, 7, 7, 15]
    fast = ds.get_batch(indices)
    slow = collate_slices([ds[i] for i in indices])
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key].dtype == slow[key].dtype, key
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=0)
    assert fast["images"].shape == (6, 1, 8, 6)
    assert fast["positions"].dtype == torch.float32
    assert fast["image_ids"].tolist() == indices


def test_slices_without_labels_and_uint8() -> None:
    images = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 10
    ds = SliceDataset(images, slices_per_volume=[2], num_partitions=2)
    item = ds[1]
    assert "label" not in item
    np.testing.assert_allclose(item["image"].numpy(), images[1] / 255.0, rtol=1e-6)
    assert float(ds.get_batch([1])["images"].max()) <= 1.0
    assert "labels" not in ds.get_batch([0, 1])


def test_slices_with_dataloader_and_sampler() -> None:
    rng = np.random.default_rng(2)
    vols, labs = _volumes(rng, [4, 6, 5, 8])
    ds = SliceDataset.from_volumes(vols, labs, num_partitions=4)
    sampler = ds.batch_sampler(volumes_per_batch=2, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_slices)
    batches = list(loader)
    assert len(batches) == len(sampler) == 2
    for batch, idx in zip(batches, sampler, strict=True):
        assert batch["image_ids"].tolist() == idx
        assert sorted(batch["partition_ids"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert len(set(batch["volume_ids"].tolist())) == 2
    # (index, position) pairs from return_positions=True are accepted too
    pos_sampler = ds.batch_sampler(volumes_per_batch=2, seed=1, return_positions=True)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=pos_sampler, collate_fn=collate_slices)
    for batch, pairs in zip(loader, pos_sampler, strict=True):
        assert batch["image_ids"].tolist() == [i for i, _ in pairs]
        np.testing.assert_allclose(batch["positions"].numpy(), [p for _, p in pairs], rtol=1e-6)
        np.testing.assert_array_equal(
            ds.get_batch(pairs)["images"].numpy(), batch["images"].numpy()
        )


def test_slices_memmap_pickles_as_reference(tmp_path) -> None:
    rng = np.random.default_rng(3)
    images = rng.random((40, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 3, (40, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    ds = SliceDataset(
        np.load(tmp_path / "images.npy", mmap_mode="r"),
        np.load(tmp_path / "labels.npy", mmap_mode="r"),
        slices_per_volume=[10, 10, 20],
    )
    blob = pickle.dumps(ds)
    assert len(blob) < images.nbytes // 4  # the data did not travel
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.get_batch([3, 39])["images"][:, 0].numpy(), images[[3, 39]])
    np.testing.assert_array_equal(clone[5]["label"].numpy(), labels[5])
    # in-memory arrays pickle by value
    mem = SliceDataset(images, labels, slices_per_volume=[10, 10, 20])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(mem))[7]["image"][0].numpy(), images[7])


def test_slices_errors() -> None:
    img = np.zeros((6, 4, 4), np.float32)
    with pytest.raises(ValueError, match="slices_per_volume"):
        SliceDataset(img, slices_per_volume=[3, 2])
    with pytest.raises(ValueError, match="slices_per_volume"):
        SliceDataset(img, slices_per_volume=[4, 2], num_partitions=4)
    with pytest.raises(ValueError, match="labels"):
        SliceDataset(img, np.zeros((6, 4, 5), np.uint8), slices_per_volume=[6])
    with pytest.raises(TypeError, match="labels"):
        SliceDataset(img, np.zeros((6, 4, 4), np.float32), slices_per_volume=[6])
    with pytest.raises(ValueError, match="images"):
        SliceDataset(np.zeros((6, 4)), slices_per_volume=[6])
    with pytest.raises(TypeError, match="images"):
        SliceDataset(np.zeros((6, 4, 4), np.int32), slices_per_volume=[6])
    with pytest.raises(ValueError, match="volume_ids"):
        SliceDataset(img, slices_per_volume=[4, 2], num_partitions=2, volume_ids=[1, 1])
    with pytest.raises(ValueError, match="volume_ids"):
        SliceDataset(img, slices_per_volume=[4, 2], num_partitions=2, volume_ids=[1])
    with pytest.raises(ValueError, match="volumes"):
        SliceDataset.from_volumes([np.zeros((4, 3, 3)), np.zeros((4, 3, 2))])
    ds = SliceDataset(img, slices_per_volume=[6])
    with pytest.raises(IndexError, match="index"):
        ds[6]
    with pytest.raises(IndexError, match="indices"):
        ds.get_batch([0, -1])
    with pytest.raises(ValueError, match="items"):
        collate_slices([])
    with pytest.raises(ValueError, match="volumes_per_batch"):
        ds.batch_sampler(volumes_per_batch=2)


def test_slices_batch_sampler_matches_dataset() -> None:
    ds = SliceDataset(np.zeros((13, 2, 2), np.float32), slices_per_volume=[6, 7], num_partitions=3)
    sampler = ds.batch_sampler(volumes_per_batch=2)
    assert isinstance(sampler, PartitionBatchSampler)
    for batch in sampler:
        b = ds.get_batch(batch)
        assert b["partition_ids"].tolist() == [0, 1, 2, 0, 1, 2]
        assert sorted(set(b["volume_ids"].tolist())) == [0, 1]
