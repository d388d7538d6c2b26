"""slice_partition: the one definition of a slice's partition, against a loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrastlocal.samplers import slice_metadata, slice_partition


def _reference(z: int, num_slices: int, num_partitions: int) -> int:
    # partition p holds ceil(p Z / S) <= z < ceil((p + 1) Z / S)
    for p in range(num_partitions):
        lo = math.ceil(p * num_slices / num_partitions)
        hi = math.ceil((p + 1) * num_slices / num_partitions)
        if lo <= z < hi:
            return p
    raise AssertionError((z, num_slices, num_partitions))


@given(st.integers(1, 40), st.integers(1, 8))
def test_slice_partition_matches_loop_reference(num_slices: int, num_partitions: int) -> None:
    got = slice_partition(np.arange(num_slices), num_slices, num_partitions)
    assert got.dtype == np.int64
    assert got.tolist() == [_reference(z, num_slices, num_partitions) for z in range(num_slices)]


def test_slice_metadata_uses_the_same_partition() -> None:
    meta = slice_metadata([7, 5, 9], num_partitions=3)
    counts = np.repeat([7, 5, 9], [7, 5, 9])
    assert meta["partition_id"].tolist() == slice_partition(
        meta["slice_index"], counts, 3
    ).tolist()


@pytest.mark.parametrize(
    ("z", "n", "s", "fragment"),
    [(0, 4, 0, "num_partitions"), (0, 0, 2, "num_slices"), (4, 4, 2, "slice_index"),
     (-1, 4, 2, "slice_index")],
)
def test_slice_partition_rejects_bad_input(z: int, n: int, s: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        slice_partition(z, n, s)
