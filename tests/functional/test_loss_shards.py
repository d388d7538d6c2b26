"""The losses' shares for several processes: summed over the processes, they are the loss.

``global_contrastive_loss_shard`` and ``local_contrastive_loss_shard`` run here on K simulated
processes (NumPy, no framework, see ``_simulated_gather.py``), in the two-view form; the sum of
the K shares is compared with the single-process loss of the batch concatenated in process
order, its image ids made unique per process as the shares do. (``tests/nn/test_distributed.py``
covers the one-batch form and the real 2-process gloo runs.)
"""

from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.functional import (
    global_contrastive_loss,
    global_contrastive_loss_shard,
    local_contrastive_loss,
    local_contrastive_loss_shard,
    local_region_positions,
)

from ._simulated_gather import SimulatedGather, shares

K, N = 3, 4  # processes, images per process (two views each)


def _whole_batch_ids(per_image: np.ndarray) -> np.ndarray:
    """Ids of the concatenated batch: process q's rows are [view 1; view 2] of its N images."""
    return np.concatenate([np.tile(per_image[q * N : (q + 1) * N], 2) for q in range(K)])


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_global_shares_of_two_views_add_up_to_the_loss(strategy, reduction):
    rng = np.random.default_rng(3)
    z0, z1 = rng.normal(size=(2, K * N, 5))
    partition = rng.integers(0, 2, size=K * N)
    rows = [slice(q * N, (q + 1) * N) for q in range(K)]
    got = shares(
        global_contrastive_loss_shard,
        [{"embeddings": z0[r], "image_ids": z1[r], "partition_ids": partition[r]} for r in rows],
        strategy=strategy, temperature=0.2, reduction=reduction, check_pairs=False,
    )
    whole = np.concatenate([np.concatenate([z0[r], z1[r]]) for r in rows])
    full = global_contrastive_loss(
        whole, _whole_batch_ids(np.arange(K * N)), _whole_batch_ids(partition),
        strategy=strategy, temperature=0.2, reduction=reduction, check_pairs=False,
    )
    np.testing.assert_allclose(sum(got), float(full), rtol=1e-12)


@pytest.mark.parametrize(("strategy", "num_regions"), [("random", 9), ("domain", 13)])
def test_local_shares_of_two_views_add_up_to_the_loss(strategy, num_regions):
    rng = np.random.default_rng(4)
    f0 = rng.normal(size=(K * N, 2, 9, 9))
    f1 = f0 + 0.3 * rng.normal(size=f0.shape)
    partition = np.tile([0, 1], K * N // 2)
    volume = np.arange(K * N) // 2
    projection = rng.normal(size=(18, 4))
    rows = [slice(q * N, (q + 1) * N) for q in range(K)]
    got = shares(
        local_contrastive_loss_shard,
        [{"features": f0[r], "image_ids": f1[r], "partition_ids": partition[r],
          "volume_ids": volume[r]} for r in rows],
        strategy=strategy, num_regions=num_regions, projection=projection, temperature=0.2,
    )
    whole = np.concatenate([np.concatenate([f0[r], f1[r]]) for r in rows])
    full = local_contrastive_loss(
        whole, _whole_batch_ids(np.arange(K * N)), _whole_batch_ids(partition),
        _whole_batch_ids(volume), strategy=strategy, num_regions=num_regions,
        projection=projection, temperature=0.2,
    )
    np.testing.assert_allclose(sum(got), float(full), rtol=1e-12)


def test_one_process_share_is_the_loss():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 3))
    image, partition = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 1, 0, 1, 1])
    one = SimulatedGather(0, 1, [[]])
    np.testing.assert_allclose(
        float(global_contrastive_loss_shard(z, image, partition, gather=one)),
        float(global_contrastive_loss(z, image, partition)), rtol=1e-12,
    )


@pytest.mark.parametrize("fn", [global_contrastive_loss_shard, local_contrastive_loss_shard])
@pytest.mark.parametrize("reduction", ["none", "pairwise"])
def test_shares_take_only_scalar_reductions(fn, reduction):
    x = np.zeros((2, 3, 8, 8)) if fn is local_contrastive_loss_shard else np.zeros((2, 3))
    with pytest.raises(ValueError, match="`reduction` must be one of 'mean', 'sum'"):
        fn(x, np.array([0, 0]), np.array([0, 0]), gather=SimulatedGather(0, 1, None),
           reduction=reduction)


@pytest.mark.parametrize("num_regions", [13, 9])
def test_local_loss_num_regions_is_the_default_pattern_of_that_size(num_regions):
    rng = np.random.default_rng(6)
    f = rng.normal(size=(4, 2, 10, 10))
    image = np.array([0, 1, 0, 1])
    positions, negatives = local_region_positions(10, region_size=1, num_regions=num_regions)
    expected = local_contrastive_loss(f, image, region_size=1, positions=positions,
                                      negative_positions=negatives, reduction="pairwise")
    got = local_contrastive_loss(f, image, region_size=1, num_regions=num_regions,
                                 reduction="pairwise")
    assert got.shape == (4, 4, num_regions)
    np.testing.assert_array_equal(got, expected)


def test_local_loss_rejects_an_unknown_num_regions():
    with pytest.raises(ValueError, match="`num_regions` must be one of 13, 9; got 12"):
        local_contrastive_loss(np.zeros((2, 1, 8, 8)), np.array([0, 0]), num_regions=12)
