"""``gather_distributed=True`` on spawned 2-process gloo groups (CPU), the sampler under 2 ranks.

One module-scoped fixture spawns the two processes once (see ``_distributed_worker.py``); the
tests compare what every process saw with the single-process computation on the concatenated
batch: loss values, the parameter gradients after DistributedDataParallel's averaging, and the
gradients reaching each process's inputs (K times the single-process ones, see
``contrastlocal.nn._distributed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from contrastlocal.functional import (  # noqa: E402
    global_contrastive_loss,
    global_contrastive_loss_shard,
    local_contrastive_loss,
    local_contrastive_loss_shard,
)
from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss  # noqa: E402

from ..functional._simulated_gather import SimulatedGather  # noqa: E402
from ..functional._simulated_gather import shares as simulated_shares  # noqa: E402
from . import _distributed_worker as w  # noqa: E402

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed+gloo"
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[Any, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(w.worker, args=(str(out),), nprocs=w.WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(w.WORLD_SIZE)]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * max(scale, 1e-300))


def _check_matches_single_process(results: list[dict[Any, Any]], key: tuple[Any, ...]) -> None:
    kind, case = (key[1], key[2:]) if key[0] == "plain" else (key[0], key[1:])
    ref = w.reference_case(kind, case)
    for rank, res in enumerate(r[key] for r in results):
        _close(res["loss"], ref["loss"])  # the global loss, on every process
        assert res["grads"].keys() == ref["grads"].keys()
        for name, grad in ref["grads"].items():
            _close(res["grads"][name], grad)  # after DDP's average
        rows = slice(rank * w.ROWS, (rank + 1) * w.ROWS)
        _close(res["input_grad"], w.WORLD_SIZE * ref["input_grad"][rows])


@pytest.mark.slow
@pytest.mark.parametrize("case", w.GLOBAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_global_contrastive_loss_gather_distributed_equals_single_process(ranks, case):
    _check_matches_single_process(ranks, ("global", *case))


@pytest.mark.slow
@pytest.mark.parametrize("case", w.LOCAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_local_contrastive_loss_gather_distributed_equals_single_process(ranks, case):
    _check_matches_single_process(ranks, ("local", *case))


@pytest.mark.slow
@pytest.mark.parametrize(
    "key", [("plain", "global", "domain", "mean"), ("plain", "local", "domain", 3, "mean")]
)
def test_gather_without_gradient_fails_the_comparison(ranks, key):
    """A plain all_gather (other processes' rows as constants) gives the right VALUE but wrong
    gradients, and the comparison used above detects it."""
    ref = w.reference_case(key[1], key[2:])
    for res in (r[key] for r in ranks):
        _close(res["loss"], ref["loss"])
    with pytest.raises(AssertionError):
        _check_matches_single_process(ranks, key)
    # and not by a hair: the parameter gradients are off by a sizeable fraction
    name = next(iter(ref["grads"]))
    err = float((ranks[0][key]["grads"][name] - ref["grads"][name]).abs().max())
    assert err > 1e-3 * float(ref["grads"][name].abs().max())


@pytest.mark.slow
def test_distributed_ranks_hold_identical_gradients(ranks):
    for key in [("global", *c) for c in w.GLOBAL_CASES] + [("local", *c) for c in w.LOCAL_CASES]:
        for name, grad in ranks[0][key]["grads"].items():
            assert torch.equal(grad, ranks[1][key]["grads"][name])


@pytest.mark.slow
@pytest.mark.parametrize(("key", "name"), [("mismatch_global", "embeddings"),
                                           ("mismatch_local", "features")])
def test_gather_distributed_different_batch_sizes_raise_on_every_rank(ranks, key, name):
    for rank in ranks:
        message = rank[key]
        assert message.startswith("ValueError:"), message
        assert f"`{name}` must have the same shape on every process" in message
        assert "rank 0: (8," in message
        assert "rank 1: (6," in message


@pytest.mark.slow
def test_partition_batch_sampler_two_ranks_disjoint_equal_and_reshuffled(ranks):
    from contrastlocal.samplers import slice_metadata

    volume_of = slice_metadata(w.SAMPLER_SLICES, num_partitions=3)["volume_index"]
    partition_of = slice_metadata(w.SAMPLER_SLICES, num_partitions=3)["partition_id"]
    samplers = [r["sampler"] for r in ranks]
    assert samplers[0]["len"] == samplers[1]["len"] == 11 // (2 * 2)
    for epoch in (0, 1):
        per_rank = [s["epochs"][epoch] for s in samplers]
        assert [len(b) for b in per_rank] == [samplers[0]["len"]] * 2  # equal batch counts
        volumes = []
        for batches in per_rank:
            vols = set()
            for batch in batches:
                assert len(batch) == 2 * 3
                assert sorted(partition_of[batch].tolist()) == [0, 0, 1, 1, 2, 2]
                vols |= set(volume_of[batch].tolist())
            volumes.append(vols)
        assert not volumes[0] & volumes[1]  # disjoint shards
        assert len(volumes[0]) == len(volumes[1]) == 2 * samplers[0]["len"]
    for s in samplers:  # set_epoch reshuffles
        assert s["epochs"][0] != s["epochs"][1]


# ------------------------------------------------------------------------------------------
# single-process checks (no spawn)
# ------------------------------------------------------------------------------------------


def test_local_contrastive_loss_module_gather_without_process_group_is_single_process():
    assert not dist.is_initialized()
    torch.manual_seed(0)
    module = LocalContrastiveLoss(in_channels=3, gather_distributed=True)
    plain = LocalContrastiveLoss(in_channels=3)
    plain.load_state_dict(module.state_dict())
    features, ids = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(module(features, ids), plain(features, ids), rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GlobalContrastiveLoss(reduction="none", gather_distributed=True),
        lambda: LocalContrastiveLoss(reduction="none", gather_distributed=True),
    ],
)
def test_contrastive_loss_modules_reject_reduction_none_with_gather(make):
    with pytest.raises(ValueError, match="reduction"):
        make()


def test_local_contrastive_loss_module_validates_gather_distributed_type():
    with pytest.raises(TypeError, match="gather_distributed"):
        LocalContrastiveLoss(gather_distributed=1)
    assert "gather_distributed=True" in repr(LocalContrastiveLoss(gather_distributed=True))


def test_modules_with_one_process_group_equal_the_plain_loss():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        meta = w.batch_metadata(0)
        z = torch.randn(8, 6, dtype=torch.float64)
        plain = GlobalContrastiveLoss()(z, meta["image"], meta["partition"])
        gathered = GlobalContrastiveLoss(gather_distributed=True)(
            z, meta["image"], meta["partition"]
        )
        assert torch.equal(plain, gathered)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_global_loss_sharded_shares_add_up_to_the_full_loss(strategy, reduction):
    rng = np.random.default_rng(0)
    k, n = 3, 6
    z = rng.normal(size=(k * n, 4))
    image = np.tile(np.arange(3), 2 * k)  # per-process ids, equal on every process
    partition = rng.integers(0, 3, size=k * n)
    shares = simulated_shares(
        global_contrastive_loss_shard,
        [{"embeddings": z[r * n : (r + 1) * n], "image_ids": image[r * n : (r + 1) * n],
          "partition_ids": partition[r * n : (r + 1) * n]} for r in range(k)],
        strategy=strategy, temperature=0.3, reduction=reduction, check_pairs=False,
    )
    unique_image = image + 10 * np.repeat(np.arange(k), n)
    # the rows' partitions are drawn independently of their images (views of one image in two
    # partitions, which the checks reject): the sum identity holds for any pairing
    full = global_contrastive_loss(z, image_ids=unique_image, partition_ids=partition,
                                   strategy=strategy, temperature=0.3, reduction=reduction,
                                   check_pairs=False)
    np.testing.assert_allclose(sum(shares), float(full), rtol=1e-12)


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_local_loss_sharded_shares_add_up_to_the_full_loss(strategy):
    rng = np.random.default_rng(1)
    k, n = 3, 4
    f = rng.normal(size=(k * n, 2, 8, 8))
    image = np.tile(np.arange(2), 2 * k)
    partition = np.tile(np.array([0, 1]), 2 * k)
    volume = np.repeat(np.arange(k), n)
    projection = rng.normal(size=(18, 5))
    shares = simulated_shares(
        local_contrastive_loss_shard,
        [{"features": f[r * n : (r + 1) * n], "image_ids": image[r * n : (r + 1) * n],
          "partition_ids": partition[r * n : (r + 1) * n],
          "volume_ids": volume[r * n : (r + 1) * n]} for r in range(k)],
        strategy=strategy, region_size=3, positions=None, negative_positions=None,
        projection=projection, temperature=0.3, reduction="mean",
    )
    unique_image = image + 10 * np.repeat(np.arange(k), n)
    full = local_contrastive_loss(f, image_ids=unique_image, partition_ids=partition,
                                  volume_ids=volume, strategy=strategy, region_size=3,
                                  projection=projection, temperature=0.3)
    np.testing.assert_allclose(sum(shares), float(full), rtol=1e-12)


def test_global_loss_sharded_without_pairs_raises_on_every_process():
    z = np.ones((2, 3))
    gather = SimulatedGather(0, 2, [[z, np.array([0, 1])], [z, np.array([2, 3])]])
    with pytest.raises(ValueError, match="no positive pair"):
        global_contrastive_loss_shard(z, image_ids=np.array([0, 1]), partition_ids=None,
                                      strategy="random", temperature=0.1, reduction="mean",
                                      gather=gather)
