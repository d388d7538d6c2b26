"""local_region_positions and extract_regions: the REFERENCE tables, gathering, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

from contrastlocal.functional import extract_regions, local_region_positions
from tests import _reference_local as ref
from tests import to_numpy


@pytest.mark.parametrize("region_size", [1, 3])
@pytest.mark.parametrize("num_regions", [9, 13])
@pytest.mark.parametrize("map_size", [8, 10, 12, 13, 24, 40, 48, 96, 192])
def test_local_region_positions_match_reference_tables(region_size, num_regions, map_size):
    positions, negatives = local_region_positions(
        map_size, region_size=region_size, num_regions=num_regions
    )
    expected_pos, expected_neg = ref.reference_tables(map_size, region_size, num_regions)
    np.testing.assert_array_equal(positions, expected_pos[:num_regions])
    np.testing.assert_array_equal(negatives, expected_neg[:num_regions])
    assert positions.dtype == np.int64
    assert negatives.shape == (num_regions, 5, 2)


def test_local_region_positions_readme_configuration():
    # REFERENCE.md §2.3: m = 48, 3x3 -> e = 44, h = 22, q = 11, t = 33; 1x1 -> 47, 23, 11, 35
    positions, _ = local_region_positions(48, region_size=3)
    assert positions.tolist()[8:] == [[44, 44], [11, 11], [11, 33], [33, 11], [33, 33]]
    positions, _ = local_region_positions(48, region_size=1)
    assert positions.tolist()[8:] == [[47, 47], [11, 11], [11, 35], [35, 11], [35, 35]]
    positions, _ = local_region_positions(40, region_size=3)  # MMWHS 160 input, l = 3
    assert positions.tolist()[8:] == [[36, 36], [9, 9], [9, 27], [27, 9], [27, 27]]


def test_local_region_positions_rectangular_maps_use_each_axis():
    positions, negatives = local_region_positions((12, 20), region_size=3)
    square_h, _ = local_region_positions(12, region_size=3)
    square_w, _ = local_region_positions(20, region_size=3)
    np.testing.assert_array_equal(positions[:, 0], square_h[:, 0])
    np.testing.assert_array_equal(positions[:, 1], square_w[:, 1])
    assert negatives[..., 0].max() <= 12 - 4
    assert negatives[..., 1].max() <= 20 - 4


def test_local_region_positions_are_read_only_and_within_the_map():
    positions, negatives = local_region_positions(8, region_size=3)
    with pytest.raises(ValueError, match="read-only"):
        positions[0, 0] = 1
    assert negatives.min() >= 0
    assert negatives.max() + 3 <= 8
    # the 13 points are distinct at the smallest accepted size
    assert len({tuple(p) for p in positions.tolist()}) == 13


@pytest.mark.parametrize(
    ("map_size", "region_size", "num_regions"),
    [(7, 3, 13), (4, 1, 13), (5, 3, 9), (2, 1, 9), ((12, 6), 3, 13)],
)
def test_local_region_positions_map_too_small(map_size, region_size, num_regions):
    with pytest.raises(ValueError, match="map_size"):
        local_region_positions(map_size, region_size=region_size, num_regions=num_regions)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"map_size": 48, "region_size": 2}, ValueError, "region_size"),
        ({"map_size": 48, "region_size": 5}, ValueError, "region_size"),
        ({"map_size": 48, "region_size": 3.0}, TypeError, "region_size"),
        ({"map_size": 48, "num_regions": 12}, ValueError, "num_regions"),
        ({"map_size": 48.0}, TypeError, "map_size"),
        ({"map_size": (48, 48, 48)}, TypeError, "map_size"),
    ],
)
def test_local_region_positions_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        local_region_positions(**kwargs)


@pytest.mark.parametrize("region_size", [1, 3])
def test_extract_regions_matches_loop_oracle(region_size):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 4, 9, 11))
    positions = np.stack(
        [rng.integers(0, 9 - region_size + 1, 7), rng.integers(0, 11 - region_size + 1, 7)],
        axis=1,
    )
    got = extract_regions(features, positions, region_size=region_size)
    assert got.shape == (3, 7, region_size * region_size * 4)
    for n in range(3):
        for r, (x, y) in enumerate(positions):
            expected = ref.region_vector(features, n, int(x), int(y), region_size)
            np.testing.assert_array_equal(got[n, r], expected)


def test_extract_regions_order_is_row_column_channel():
    # value = 100*channel + 10*row + column: the flattened block must read (dx, dy, c)
    c, h, w = 2, 5, 5
    ch, row, col = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    features = (100.0 * ch + 10.0 * row + col)[None]
    got = extract_regions(features, [[1, 2]], region_size=3)[0, 0]
    expected = [
        100.0 * k + 10.0 * (1 + dx) + (2 + dy)
        for dx in range(3)
        for dy in range(3)
        for k in range(c)
    ]
    assert got.tolist() == expected


def test_extract_regions_preserves_namespace_and_dtype(xp):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    features = xp.asarray(base)
    got = extract_regions(features, np.array([[0, 0], [5, 5]]), region_size=3)
    assert array_namespace(got) is array_namespace(features)
    assert got.dtype == xp.float32
    assert tuple(got.shape) == (2, 2, 27)
    expected = extract_regions(base, np.array([[0, 0], [5, 5]]), region_size=3)
    np.testing.assert_array_equal(to_numpy(got), expected)


def test_extract_regions_carries_gradients():
    torch = pytest.importorskip("torch")
    features = torch.zeros(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    out = extract_regions(features, [[0, 0], [1, 1]], region_size=3)
    out.sum().backward()
    # pixels covered by both blocks get 2, by one block 1, by none 0
    covered = np.zeros((6, 6))
    covered[0:3, 0:3] += 1
    covered[1:4, 1:4] += 1
    np.testing.assert_array_equal(features.grad.numpy(), np.broadcast_to(covered, (2, 3, 6, 6)))


@pytest.mark.parametrize(
    ("features", "positions", "kwargs", "error", "match"),
    [
        (np.zeros((2, 8, 8)), [[0, 0]], {}, ValueError, "features"),
        (np.zeros((2, 1, 8, 8), dtype=np.int64), [[0, 0]], {}, TypeError, "features"),
        (np.zeros((2, 1, 8, 8)), [[0, 0]], {"region_size": 2}, ValueError, "region_size"),
        (np.zeros((2, 1, 8, 8)), [[6, 0]], {}, ValueError, "positions"),
        (np.zeros((2, 1, 8, 8)), [[0, -1]], {}, ValueError, "positions"),
        (np.zeros((2, 1, 8, 8)), [[8, 0]], {"region_size": 1}, ValueError, "positions"),
        (np.zeros((2, 1, 8, 8)), [0, 0], {}, ValueError, "positions"),
        (np.zeros((2, 1, 8, 8)), [[0.5, 0]], {}, TypeError, "positions"),
    ],
)
def test_extract_regions_bad_input(features, positions, kwargs, error, match):
    with pytest.raises(error, match=match):
        extract_regions(features, positions, **kwargs)


def test_extract_regions_accepts_the_last_fitting_position():
    features = np.arange(64.0).reshape(1, 1, 8, 8)
    assert extract_regions(features, [[7, 7]], region_size=1)[0, 0].tolist() == [63.0]
    assert extract_regions(features, [[5, 5]], region_size=3)[0, 0, -1] == 63.0
