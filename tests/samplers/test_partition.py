"""Tests of PartitionBatchSampler and slice_metadata (hypothesis properties + errors)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrastlocal.samplers import PartitionBatchSampler, slice_metadata


def _loop_partition(z: int, num_slices: int, num_partitions: int) -> int:
    """Partition of slice z from the definition p = floor(z * S / Z), in exact arithmetic."""
    return math.floor(z * num_partitions / num_slices)


@st.composite
def configs(draw: st.DrawFn) -> dict:
    s = draw(st.integers(1, 5))
    v = draw(st.integers(1, 14))
    counts = draw(st.lists(st.integers(s, s + 12), min_size=v, max_size=v))
    replicas = draw(st.integers(1, 3))
    per_replica = v // replicas
    if per_replica < 1:
        replicas, per_replica = 1, v
    return {
        "slices_per_volume": counts,
        "num_partitions": s,
        "volumes_per_batch": draw(st.integers(1, per_replica)),
        "num_replicas": replicas,
        "seed": draw(st.integers(0, 2**31)),
        "drop_last": draw(st.booleans()),
    }


def _owner(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    vol = np.repeat(np.arange(len(counts)), counts)
    z = np.concatenate([np.arange(c) for c in counts])
    return vol, z


def test_slice_metadata_matches_definition() -> None:
    counts = [4, 7, 13, 5]
    meta = slice_metadata(counts, num_partitions=4)
    k = 0
    for v, c in enumerate(counts):
        for z in range(c):
            assert meta["volume_index"][k] == v
            assert meta["slice_index"][k] == z
            assert meta["partition_id"][k] == _loop_partition(z, c, 4)
            assert meta["position"][k] == pytest.approx(z / (c - 1))
            k += 1
    assert k == meta["partition_id"].size


@given(configs())
def test_partition_batches_are_volumes_times_partitions(cfg: dict) -> None:
    counts, s = cfg["slices_per_volume"], cfg["num_partitions"]
    vol, z = _owner(counts)
    for rank in range(cfg["num_replicas"]):
        sampler = PartitionBatchSampler(**cfg, rank=rank)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for i, batch in enumerate(batches):
            vols = vol[batch]
            distinct = list(dict.fromkeys(vols.tolist()))
            if cfg["drop_last"] or i < len(batches) - 1:
                assert len(distinct) == cfg["volumes_per_batch"]
            else:
                assert 1 <= len(distinct) <= cfg["volumes_per_batch"]
            assert len(batch) == len(distinct) * s
            for j, v in enumerate(distinct):
                rows = np.asarray(batch[j * s : (j + 1) * s])
                assert (vol[rows] == v).all()
                parts = [_loop_partition(int(z[r]), counts[v], s) for r in rows]
                assert parts == list(range(s))


@given(configs(), st.integers(0, 50))
def test_partition_deterministic_per_seed_and_epoch(cfg: dict, epoch: int) -> None:
    a = PartitionBatchSampler(**cfg)
    b = PartitionBatchSampler(**cfg)
    a.set_epoch(epoch)
    b.set_epoch(epoch)
    assert list(a) == list(b)
    assert list(a) == list(a)  # re-iterating an epoch gives the same batches


def test_partition_epochs_differ() -> None:
    sampler = PartitionBatchSampler([8] * 12, volumes_per_batch=3, seed=3)
    seen = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        seen.add(tuple(map(tuple, sampler)))
    assert len(seen) == 5


def test_partition_seeds_differ() -> None:
    a = PartitionBatchSampler([8] * 12, volumes_per_batch=3, seed=0)
    b = PartitionBatchSampler([8] * 12, volumes_per_batch=3, seed=1)
    assert list(a) != list(b)


@given(configs(), st.integers(0, 20))
def test_partition_shards_disjoint_and_equal(cfg: dict, epoch: int) -> None:
    counts = cfg["slices_per_volume"]
    vol, _ = _owner(counts)
    per_rank = []
    for rank in range(cfg["num_replicas"]):
        sampler = PartitionBatchSampler(**cfg, rank=rank)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    lengths = {len(b) for b in per_rank}
    assert len(lengths) == 1
    vol_sets = [
        set(vol[np.concatenate([b for b in bs if b] or [[]]).astype(int)].tolist())
        for bs in per_rank
    ]
    if cfg["drop_last"] or len(counts) % cfg["num_replicas"] == 0:
        for i in range(len(vol_sets)):
            for j in range(i + 1, len(vol_sets)):
                assert not vol_sets[i] & vol_sets[j]
    if not cfg["drop_last"]:
        # every volume is used once per epoch
        assert set().union(*vol_sets) == set(range(len(counts)))


@given(configs())
def test_partition_every_slice_reachable(cfg: dict) -> None:
    counts = cfg["slices_per_volume"]
    total = sum(counts)
    sampler = PartitionBatchSampler(**{**cfg, "drop_last": False})
    seen = np.zeros(total, dtype=bool)
    for epoch in range(400):
        sampler.set_epoch(epoch)
        for batch in sampler:
            seen[batch] = True
        if seen.all():
            break
    assert seen.all()


def test_partition_drop_last_false_short_batch() -> None:
    sampler = PartitionBatchSampler([4] * 7, volumes_per_batch=3, drop_last=False)
    batches = list(sampler)
    assert [len(b) for b in batches] == [12, 12, 4]
    assert len(sampler) == 3
    full = PartitionBatchSampler([4] * 7, volumes_per_batch=3, drop_last=True)
    assert [len(b) for b in full] == [12, 12]


def test_partition_return_positions() -> None:
    counts = [5, 9, 6, 7]
    sampler = PartitionBatchSampler(counts, volumes_per_batch=2, return_positions=True, seed=4)
    plain = PartitionBatchSampler(counts, volumes_per_batch=2, seed=4)
    vol, z = _owner(counts)
    for pairs, batch in zip(sampler, plain, strict=True):
        assert [i for i, _ in pairs] == batch
        for i, pos in pairs:
            assert isinstance(pos, float)
            assert pos == pytest.approx(z[i] / (counts[vol[i]] - 1))
        np.testing.assert_allclose(plain.positions(batch), [p for _, p in pairs])


def test_partition_works_as_dataloader_batch_sampler() -> None:
    torch = pytest.importorskip("torch")
    data = torch.arange(30)
    sampler = PartitionBatchSampler([10, 10, 10], num_partitions=2, volumes_per_batch=3)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    out = [b.tolist() for b in loader]
    assert out == list(sampler)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"slices_per_volume": [5, 3, 6], "num_partitions": 4, "volumes_per_batch": 1},
            r"volume 1 has 3",
        ),
        ({"slices_per_volume": [5, 5], "volumes_per_batch": 3}, "volumes_per_batch"),
        (
            {"slices_per_volume": [5, 5, 5, 5], "volumes_per_batch": 3, "num_replicas": 2},
            "volumes_per_batch",
        ),
        ({"slices_per_volume": [5, 5], "num_partitions": 0}, "num_partitions"),
        ({"slices_per_volume": [5, 5], "volumes_per_batch": 0}, "volumes_per_batch"),
        (
            {"slices_per_volume": [5, 5], "volumes_per_batch": 1, "rank": 2, "num_replicas": 2},
            "rank",
        ),
        ({"slices_per_volume": [5, 5], "volumes_per_batch": 1, "seed": -1}, "seed"),
        ({"slices_per_volume": [], "volumes_per_batch": 1}, "slices_per_volume"),
        ({"slices_per_volume": [[5, 5]], "volumes_per_batch": 1}, "slices_per_volume"),
    ],
)
def test_partition_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PartitionBatchSampler(**kwargs)


def test_partition_bad_types() -> None:
    with pytest.raises(TypeError, match="slices_per_volume"):
        PartitionBatchSampler([5.0, 6.0], volumes_per_batch=1)
    with pytest.raises(TypeError, match="volumes_per_batch"):
        PartitionBatchSampler([5, 6], volumes_per_batch=1.5)  # type: ignore[arg-type]
    sampler = PartitionBatchSampler([5, 6], volumes_per_batch=1)
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    with pytest.raises(IndexError, match="indices"):
        sampler.positions([11])


def test_samplers_import_no_torch() -> None:
    code = "import sys, contrastlocal.samplers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------
# issue 16: batch metadata, dataset length check, shards with drop_last=False
# ------------------------------------------------------------------------------------------


def test_sampler_metadata_matches_slice_metadata_for_every_batch():
    from contrastlocal.samplers import BatchMetadata

    counts = [6, 5, 8, 4, 7]
    sampler = PartitionBatchSampler(counts, num_partitions=2, volumes_per_batch=2, seed=3)
    meta = slice_metadata(counts, num_partitions=2)
    for batch in sampler:
        record = sampler.metadata(batch)
        assert isinstance(record, BatchMetadata)
        np.testing.assert_array_equal(record.indices, batch)
        np.testing.assert_array_equal(record.volume_ids, meta["volume_index"][batch])
        np.testing.assert_array_equal(record.partition_ids, meta["partition_id"][batch])
        np.testing.assert_array_equal(record.slice_ids, meta["slice_index"][batch])
        assert record.partition_ids.tolist() == [0, 1, 0, 1]
    with pytest.raises(IndexError, match=r"`indices` must lie in \[0, 29\]; got values in"):
        sampler.metadata([30])


def test_slice_metadata_dataset_under_dataloader():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from contrastlocal.samplers import SliceMetadataDataset

    counts = [6, 5, 8, 4]
    data = [float(i) for i in range(sum(counts))]
    sampler = PartitionBatchSampler(counts, num_partitions=2, volumes_per_batch=2,
                                    dataset=data)
    loader = DataLoader(SliceMetadataDataset(data, sampler), batch_sampler=sampler)
    expected = [sampler.metadata(b) for b in sampler]
    batches = list(loader)
    assert len(batches) == len(expected) == len(sampler)
    for (samples, meta), record in zip(batches, expected, strict=True):
        assert samples.tolist() == [float(i) for i in record.indices]
        assert meta["index"].tolist() == record.indices.tolist()
        assert meta["volume_id"].tolist() == record.volume_ids.tolist()
        assert meta["partition_id"].tolist() == record.partition_ids.tolist()
        assert meta["slice_id"].tolist() == record.slice_ids.tolist()
        assert meta["partition_id"].dtype == torch.int64


def test_slice_metadata_dataset_accepts_position_pairs():
    from contrastlocal.samplers import SliceMetadataDataset

    class Pairs:
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return index

    sampler = PartitionBatchSampler([5, 5], num_partitions=2, volumes_per_batch=1,
                                    return_positions=True)
    wrapped = SliceMetadataDataset(Pairs(), sampler)
    item, meta = wrapped[(7, 0.5)]
    assert item == (7, 0.5)
    assert (meta["volume_id"], meta["slice_id"], meta["partition_id"]) == (1, 2, 0)


@pytest.mark.parametrize("length", [22, 24])
def test_sampler_checks_dataset_length_at_construction(length):
    from contrastlocal.samplers import SliceMetadataDataset

    with pytest.raises(ValueError, match=rf"`dataset` must hold .*23.*len\(dataset\) = {length}"):
        PartitionBatchSampler([6, 5, 8, 4], num_partitions=2, volumes_per_batch=2,
                              dataset=[0] * length)
    sampler = PartitionBatchSampler([6, 5, 8, 4], num_partitions=2, volumes_per_batch=2)
    with pytest.raises(ValueError, match=rf"`dataset`.*23.*got len\(dataset\) = {length}"):
        SliceMetadataDataset([0] * length, sampler)


def test_sampler_shards_overlap_only_by_the_padding_without_drop_last():
    counts = [4] * 7  # 7 volumes over 3 replicas: 2 padding volumes
    shards = []
    for rank in range(3):
        sampler = PartitionBatchSampler(counts, num_partitions=2, volumes_per_batch=2,
                                        num_replicas=3, rank=rank, drop_last=False)
        shards.append([int(v) for b in sampler for v in sampler.metadata(b).volume_ids[::2]])
    seen = [v for shard in shards for v in shard]
    assert sorted(set(seen)) == list(range(7))  # every volume used
    assert len(seen) - len(set(seen)) == 2  # exactly the padding repeats
    disjoint = []
    for rank in range(3):
        sampler = PartitionBatchSampler(counts, num_partitions=2, volumes_per_batch=2,
                                        num_replicas=3, rank=rank, drop_last=True)
        disjoint += [int(v) for b in sampler for v in sampler.metadata(b).volume_ids[::2]]
    assert len(disjoint) == len(set(disjoint))
