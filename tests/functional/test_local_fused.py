"""The torch fused path of the local loss against the array-API path.

For torch tensors with ``reduction="mean"``/``"sum"`` the local loss runs a fused kernel
(``_torch_local``); with ``reduction="none"`` it runs the framework-agnostic code, whose terms
summed (and divided by the normaliser) must give the same value and the same gradients, for
every strategy, region size, projection, explicit weight table and awkward region layout.
"""

from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.functional import local_contrastive_loss, original_local_pairing

torch = pytest.importorskip("torch")


def _ids(n: int):
    images = torch.arange(n) % (n // 2)  # two views
    return images, images % 4, images // 4


def _pairs(kwargs) -> np.ndarray:
    """The paper's positive pairs, written from the definitions (loop over pairs)."""
    images = kwargs["image_ids"].tolist()
    domain = kwargs.get("strategy") == "domain"
    parts = kwargs["partition_ids"].tolist() if domain else images
    volumes = kwargs["volume_ids"].tolist() if domain else images
    n = len(images)
    pairs = np.zeros((n, n))
    for a in range(n):
        for p in range(n):
            same_image = images[a] == images[p]
            across = parts[a] == parts[p] and volumes[a] != volumes[p]
            pairs[a, p] = a != p and (same_image or (domain and across))
    return pairs


def _both(features, projection, reduction, *, normalizer=None, **kwargs):
    """(fused value, its grads) and (array-API value, its grads) for the same call."""
    results = []
    for fused in (True, False):
        f = features.detach().clone().requires_grad_(True)
        p = None if projection is None else projection.detach().clone().requires_grad_(True)
        if fused:
            out = local_contrastive_loss(f, projection=p, reduction=reduction,
                                         normalizer=normalizer, **kwargs)
        else:
            terms = local_contrastive_loss(f, projection=p, reduction="pairwise", **kwargs)
            out = terms.sum()
            if reduction == "mean":
                if normalizer is None:
                    w = kwargs.get("positive_weights")
                    if w is None:
                        w = _pairs(kwargs)
                    out = out / (float(np.asarray(w).sum()) * terms.shape[2])
                else:
                    out = out / normalizer
        (out * 1.3).backward()
        results.append((out.detach(), f.grad, None if p is None else p.grad))
    return results


def _assert_same(results, dtype):
    (v0, f0, p0), (v1, f1, p1) = results
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    assert v0.dtype == dtype
    torch.testing.assert_close(v0, v1, rtol=rtol, atol=0)
    torch.testing.assert_close(f0, f1, rtol=rtol, atol=rtol * float(f1.abs().max()))
    if p1 is not None:
        torch.testing.assert_close(p0, p1, rtol=rtol, atol=rtol * float(p1.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("strategy", ["random", "domain"])
@pytest.mark.parametrize("region_size", [1, 3])
@pytest.mark.parametrize("use_projection", [False, True], ids=["plain", "projected"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_local_fused_equals_array_api(dtype, strategy, region_size, use_projection, reduction):
    gen = torch.Generator().manual_seed(11 + region_size)
    n, c, m = 8, 3, 12
    features = torch.randn(n, c, m, m, dtype=dtype, generator=gen)
    features[2, :, :4, :4] = 0.0  # all-zero regions: a zero row after projection
    projection = None
    if use_projection:
        projection = torch.randn(region_size**2 * c, 5, dtype=dtype, generator=gen)
    images, partitions, volumes = _ids(n)
    results = _both(features, projection, reduction, image_ids=images,
                    partition_ids=partitions, volume_ids=volumes, strategy=strategy,
                    region_size=region_size, temperature=0.2)
    _assert_same(results, dtype)


@pytest.mark.parametrize("strategy", ["random", "domain"])
@pytest.mark.parametrize("normalizer", [None, 7.5])
def test_local_fused_explicit_weight_tables(strategy, normalizer):
    batch = 12 if strategy == "domain" else 5
    weights, num_negatives, original_normalizer = original_local_pairing(strategy, batch)
    n = weights.shape[0]
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(n, 4, 10, 10, dtype=torch.float64, generator=gen)
    projection = torch.randn(36, 6, dtype=torch.float64, generator=gen)
    from contrastlocal.functional import local_region_positions

    positions, negatives = local_region_positions(10, region_size=3)
    weights = weights * np.linspace(0.5, 2.0, n)[:, None]  # non-binary weights
    results = _both(features, projection, "mean",
                    normalizer=original_normalizer if normalizer is None else normalizer,
                    image_ids=None, positive_weights=weights, region_size=3,
                    positions=positions, negative_positions=negatives[:, :num_negatives],
                    temperature=0.1)
    _assert_same(results, torch.float64)


def test_local_fused_overlapping_and_repeated_regions():
    # regions that overlap, negatives repeated and shared with other positions, an anchor's
    # negative equal to another region's position: the gathers' backward must accumulate
    gen = torch.Generator().manual_seed(8)
    features = torch.randn(6, 2, 7, 7, dtype=torch.float64, generator=gen)
    positions = np.array([[0, 0], [1, 1], [4, 4]])
    negatives = np.array([[[1, 1], [1, 1], [2, 0]], [[0, 0], [4, 4], [3, 3]],
                          [[0, 0], [1, 2], [1, 1]]])
    images, _, _ = _ids(6)
    for reduction in ("mean", "sum"):
        results = _both(features, torch.randn(18, 4, dtype=torch.float64, generator=gen),
                        reduction, image_ids=images, region_size=3, positions=positions,
                        negative_positions=negatives, temperature=0.05)
        _assert_same(results, torch.float64)


def test_local_fused_gradcheck():
    gen = torch.Generator().manual_seed(9)
    features = torch.randn(4, 2, 8, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    projection = torch.randn(18, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    images, partitions, volumes = _ids(4)

    def loss(f, p):
        return local_contrastive_loss(f, image_ids=images, partition_ids=partitions,
                                      volume_ids=volumes, strategy="domain", projection=p,
                                      temperature=0.5)

    assert torch.autograd.gradcheck(loss, (features, projection))


def test_local_fused_no_positive_pair_is_value_error():
    features = torch.randn(4, 2, 8, 8)
    with pytest.raises(ValueError, match="no positive pair"):
        local_contrastive_loss(features, image_ids=torch.arange(4), region_size=1)


def test_local_fused_under_torch_func_grad_and_vmap():
    gen = torch.Generator().manual_seed(12)
    projection = torch.randn(27, 4, dtype=torch.float64, generator=gen)
    images = torch.arange(6) % 3

    def loss(f):
        return local_contrastive_loss(f, image_ids=images, projection=projection,
                                      temperature=0.3)

    features = torch.randn(6, 3, 10, 10, dtype=torch.float64, generator=gen)
    leaf = features.clone().requires_grad_(True)
    loss(leaf).backward()
    torch.testing.assert_close(torch.func.grad(loss)(features), leaf.grad, rtol=1e-12, atol=0)
    batch = torch.randn(2, 6, 3, 10, 10, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(torch.func.vmap(loss)(batch),
                               torch.stack([loss(b) for b in batch]), rtol=1e-12, atol=0)


def test_local_fused_compiles_fullgraph_on_its_first_call():
    # the index tables are built from the region plan (Python ints), never from tensor values,
    # so a first call inside torch.compile works, with no graph break
    from contrastlocal.functional._local import _region_plan
    from contrastlocal.functional._regions import _default_keys
    from contrastlocal.functional._torch_kernel import _CONSTANTS
    from contrastlocal.functional._torch_local import fused_local_loss

    positions, negatives = _default_keys(11, 11, 3, 13)
    plan = _region_plan(positions, negatives, 11, 3)  # Python ints only
    assert all(isinstance(v, int) for part in (plan[0], plan[2], plan[3]) for v in part)
    gen = torch.Generator().manual_seed(13)
    projection = torch.randn(27, 4, dtype=torch.float64, generator=gen)
    images = torch.arange(6) % 3

    def loss(f):
        return fused_local_loss(f, projection, weights=None, image_ids=images,
                                partition_ids=None, volume_ids=None, strategy="random",
                                plan=plan, num_regions=13, num_negatives=5, temperature=0.3,
                                normalizer=None, reduction="mean", eps=1e-30,
                                no_pair_message="no pair")

    features = torch.randn(6, 3, 11, 11, dtype=torch.float64, generator=gen)
    _CONSTANTS.clear()
    torch._dynamo.reset()
    compiled_input = features.clone().requires_grad_(True)
    out = torch.compile(loss, fullgraph=True)(compiled_input)
    out.backward()
    assert not _CONSTANTS  # nothing traced was cached
    eager_input = features.clone().requires_grad_(True)
    expected = local_contrastive_loss(eager_input, image_ids=images, projection=projection,
                                      positions=positions, negative_positions=negatives,
                                      temperature=0.3)
    expected.backward()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(compiled_input.grad, eager_input.grad, rtol=1e-9, atol=1e-14)
    torch._dynamo.reset()
    assert torch._dynamo.explain(loss)(features).graph_break_count == 0


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_local_fused_no_positive_pair_without_check_pairs(strategy):
    # check_pairs=False switches every check off, the fused kernel's own included: a batch
    # without a positive pair gives 0/0 = NaN for "mean" and an empty sum, 0 with a zero
    # gradient, for "sum" -- the values of the array-API path (NumPy) on the same batch
    gen = torch.Generator().manual_seed(22)
    features = torch.randn(4, 2, 8, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = {"image_ids": torch.arange(4), "partition_ids": torch.arange(4),
           "volume_ids": torch.arange(4)}
    host = {k: v.numpy() for k, v in ids.items()}
    common = {"strategy": strategy, "region_size": 1}
    with pytest.raises(ValueError, match="no positive pair"):
        local_contrastive_loss(features, **ids, **common)
    mean = local_contrastive_loss(features, **ids, **common, check_pairs=False)
    (d_mean,) = torch.autograd.grad(mean, features)
    assert torch.isnan(mean)
    assert torch.isnan(d_mean).any()
    total = local_contrastive_loss(features, **ids, **common, reduction="sum",
                                   check_pairs=False)
    (d_total,) = torch.autograd.grad(total, features)
    assert float(total.detach()) == 0.0
    assert not d_total.any()
    with np.errstate(invalid="ignore"):
        reference = local_contrastive_loss(features.detach().numpy(), **host, **common,
                                           check_pairs=False)
    assert np.isnan(reference)
    assert float(local_contrastive_loss(features.detach().numpy(), **host, **common,
                                        reduction="sum", check_pairs=False)) == 0.0
