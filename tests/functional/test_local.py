"""local_contrastive_loss and original_local_pairing: loop oracles, reductions, backends, errors."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

from contrastlocal.functional import (
    local_contrastive_loss,
    local_region_positions,
    original_local_pairing,
)
from tests import _reference_local as ref

# (strategy, region_size, num_regions, (H, W), C, layout, use_projection)
# layouts: (image_ids, partition_ids, volume_ids) with rows in various orders
_INTERLEAVED_4 = ([0, 0, 1, 1], None, None)
_CONCAT_3_VIEWS = ([0, 1, 2, 0, 1, 2, 0], None, None)  # image 0 has three views
_SHUFFLED_5 = ([3, 1, 3, 7, 1], None, None)  # image 7 has a single view (anchor of nothing)
# 2 volumes x 2 partitions x 2 views, views concatenated
_DOMAIN_8 = ([0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 0, 1, 0, 1, 0, 1], [5, 5, 9, 9, 5, 5, 9, 9])
# 3 volumes x 2 partitions, one view each except image 10 (2 views), rows shuffled
_DOMAIN_7 = ([10, 11, 20, 10, 21, 30, 31], [0, 1, 0, 0, 1, 0, 1], [1, 1, 2, 1, 2, 3, 3])

ORACLE_CASES = [
    ("random", 1, 13, (12, 12), 3, _INTERLEAVED_4, False),
    ("random", 3, 13, (12, 12), 3, _CONCAT_3_VIEWS, True),
    ("random", 3, 9, (24, 24), 2, _SHUFFLED_5, False),
    ("random", 3, 13, (96, 96), 2, _INTERLEAVED_4, True),
    ("domain", 3, 13, (48, 48), 4, _DOMAIN_8, True),
    ("domain", 1, 9, (96, 96), 2, _DOMAIN_7, False),
    ("domain", 1, 13, (20, 28), 3, _DOMAIN_7, False),
    ("domain", 3, 9, (12, 12), 2, _DOMAIN_8, False),
]
# every case at τ = 0.1; the small maps also at τ = 0.5 and 0.05 (the big ones cost seconds)
ORACLE_RUNS = [(case, 0.1) for case in ORACLE_CASES] + [
    (case, temperature)
    for case in ORACLE_CASES
    if case[3][0] * case[3][1] <= 24 * 24
    for temperature in (0.05, 0.5)
]


def _case_inputs(case, seed=0):
    strategy, k, r, (h, w), c, (images, parts, vols), use_projection = case
    rng = np.random.default_rng(seed)
    n = len(images)
    features = rng.normal(size=(n, c, h, w))
    projection = rng.normal(size=(k * k * c, 5)) if use_projection else None
    positions, negatives = local_region_positions((h, w), region_size=k, num_regions=r)
    kwargs = {
        "image_ids": np.array(images),
        "partition_ids": None if parts is None else np.array(parts),
        "volume_ids": None if vols is None else np.array(vols),
        "strategy": strategy,
        "region_size": k,
        "positions": positions,
        "negative_positions": negatives,
    }
    weights = ref.strategy_weights_reference(images, parts, vols, strategy)
    return features, projection, kwargs, weights, positions, negatives


@pytest.mark.parametrize(
    ("case", "temperature"),
    ORACLE_RUNS,
    ids=[f"{c[0]}-K{c[1]}-R{c[2]}-{c[3][0]}x{c[3][1]}-t{t}" for c, t in ORACLE_RUNS],
)
def test_local_contrastive_loss_matches_oracle_value_and_gradient(case, temperature):
    torch = pytest.importorskip("torch")
    features, projection, kwargs, weights, positions, negatives = _case_inputs(case)
    k = kwargs["region_size"]
    expected = ref.local_loss_reference(
        features,
        weights,
        positions,
        negatives,
        region_size=k,
        projection=projection,
        temperature=temperature,
    )
    got = local_contrastive_loss(features, projection=projection, temperature=temperature, **kwargs)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)

    # gradients: autograd through the loop oracle vs through the vectorised loss
    f_ref = torch.tensor(features, requires_grad=True)
    p_ref = None if projection is None else torch.tensor(projection, requires_grad=True)
    ref.local_loss_reference(
        f_ref,
        weights,
        positions,
        negatives,
        region_size=k,
        projection=p_ref,
        temperature=temperature,
    ).backward()
    f_got = torch.tensor(features, requires_grad=True)
    p_got = None if projection is None else torch.tensor(projection, requires_grad=True)
    torch_kwargs = {
        key: torch.tensor(v) if isinstance(v, np.ndarray) and key.endswith("_ids") else v
        for key, v in kwargs.items()
    }
    loss = local_contrastive_loss(f_got, projection=p_got, temperature=temperature, **torch_kwargs)
    loss.backward()
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-10)
    np.testing.assert_allclose(f_got.grad.numpy(), f_ref.grad.numpy(), rtol=1e-10, atol=1e-13)
    if projection is not None:
        np.testing.assert_allclose(p_got.grad.numpy(), p_ref.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", [ORACLE_CASES[1], ORACLE_CASES[6]], ids=["random", "domain"])
def test_local_contrastive_loss_reductions_match_oracle(case):
    features, projection, kwargs, weights, positions, negatives = _case_inputs(case, seed=3)
    k = kwargs["region_size"]
    none = local_contrastive_loss(features, projection=projection, reduction="pairwise", **kwargs)
    expected = ref.local_loss_reference(
        features,
        weights,
        positions,
        negatives,
        region_size=k,
        projection=projection,
        reduction="none",
    )
    assert none.shape == (weights.shape[0], weights.shape[0], positions.shape[0])
    np.testing.assert_allclose(none, expected, rtol=1e-10, atol=0)
    assert np.all(none[weights == 0] == 0)
    assert np.all(none[weights != 0] > 0)
    total = local_contrastive_loss(features, projection=projection, reduction="sum", **kwargs)
    np.testing.assert_allclose(float(total), none.sum(), rtol=1e-12)
    mean = local_contrastive_loss(features, projection=projection, normalizer=7.0, **kwargs)
    np.testing.assert_allclose(float(mean), none.sum() / 7.0, rtol=1e-12)


def test_local_contrastive_loss_explicit_weights_replace_the_strategy():
    features, projection, kwargs, weights, positions, negatives = _case_inputs(ORACLE_CASES[4])
    rng = np.random.default_rng(4)
    custom = rng.integers(0, 3, size=weights.shape).astype(np.float64)
    expected = ref.local_loss_reference(
        features, custom, positions, negatives, region_size=3, projection=projection
    )
    kwargs.update(image_ids=None, partition_ids=None, volume_ids=None)
    for w in (custom, custom.astype(np.int64)):
        got = local_contrastive_loss(features, projection=projection, positive_weights=w, **kwargs)
        np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    got = local_contrastive_loss(
        features, projection=projection, positive_weights=custom > 0, **kwargs
    )
    expected_bool = ref.local_loss_reference(
        features,
        (custom > 0).astype(float),
        positions,
        negatives,
        region_size=3,
        projection=projection,
    )
    np.testing.assert_allclose(float(got), expected_bool, rtol=1e-10)


def test_local_contrastive_loss_default_positions_are_the_13_point_pattern():
    features, _, kwargs, _, _, _ = _case_inputs(ORACLE_CASES[0])
    explicit = local_contrastive_loss(features, **kwargs)
    kwargs.update(positions=None, negative_positions=None)
    assert float(local_contrastive_loss(features, **kwargs)) == float(explicit)


@pytest.mark.parametrize("region_size", [1, 3])
def test_original_local_pairing_reproduces_original_lr(region_size):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    batch_size, c = 3, 2
    features = rng.normal(size=(2 * batch_size, c, 12, 12))
    projection = rng.normal(size=(9 * c, 4)) if region_size == 3 else None
    positions, negatives = local_region_positions(12, region_size=region_size)
    weights, num_negatives, normalizer = original_local_pairing("random", batch_size)
    assert num_negatives == 5
    expected = ref.original_lr_reference(
        features,
        positions,
        negatives,
        batch_size=batch_size,
        region_size=region_size,
        projection=projection,
    )
    kwargs = {
        "image_ids": None,
        "region_size": region_size,
        "positions": positions,
        "negative_positions": negatives[:, :num_negatives],
    }
    got = local_contrastive_loss(
        features,
        projection=projection,
        positive_weights=weights,
        normalizer=normalizer,
        **kwargs,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    # the paper's L^R with interleaved image ids is the same number
    paper = local_contrastive_loss(
        features, projection=projection, **{**kwargs, "image_ids": np.repeat(np.arange(3), 2)}
    )
    np.testing.assert_allclose(float(paper), expected, rtol=1e-10)
    # gradient: torch weights given as NumPy are accepted
    f = torch.tensor(features, requires_grad=True)
    p = None if projection is None else torch.tensor(projection)
    local_contrastive_loss(
        f, projection=p, positive_weights=weights, normalizer=normalizer, **kwargs
    ).backward()
    f_ref = torch.tensor(features, requires_grad=True)
    ref.original_lr_reference(
        f_ref,
        positions,
        negatives,
        batch_size=batch_size,
        region_size=region_size,
        projection=p,
    ).backward()
    np.testing.assert_allclose(f.grad.numpy(), f_ref.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("region_size", "num_regions"), [(3, 13), (1, 9)])
def test_original_local_pairing_reproduces_original_ld(region_size, num_regions):
    rng = np.random.default_rng(6)
    c = 2
    features = rng.normal(size=(24, c, 12, 12))
    projection = rng.normal(size=(9 * c, 4)) if region_size == 3 else None
    positions, negatives = local_region_positions(
        12, region_size=region_size, num_regions=num_regions
    )
    weights, num_negatives, normalizer = original_local_pairing(
        "domain", 12, num_regions=num_regions
    )
    assert num_negatives == 4
    assert normalizer == 24 * num_regions
    expected = ref.original_ld_reference(
        features,
        positions,
        negatives,
        region_size=region_size,
        projection=projection,
        num_negatives=num_negatives,
    )
    got = local_contrastive_loss(
        features,
        image_ids=None,
        region_size=region_size,
        positions=positions,
        negative_positions=negatives[:, :num_negatives],
        projection=projection,
        positive_weights=weights,
        normalizer=normalizer,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_original_local_pairing_layouts():
    weights, _, normalizer = original_local_pairing("random", 10)
    assert weights.shape == (20, 20)
    assert normalizer == 13 * 20
    np.testing.assert_array_equal(weights, weights.T)
    assert weights.sum() == 20
    assert all(weights[2 * i, 2 * i + 1] == 1 for i in range(10))
    weights, _, _ = original_local_pairing("domain", 12)
    assert weights[12:].sum() == 0  # view-2 rows are never anchors
    for k in range(12):
        assert set(np.flatnonzero(weights[k])) == {12 + k, (k + 4) % 12, (k + 8) % 12}
        # partners share the partition k % 4 and come from the two other volumes
        assert {j % 4 for j in np.flatnonzero(weights[k])} == {k % 4}


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("other", 4), {}, ValueError, "strategy"),
        (("random", 0), {}, ValueError, "batch_size"),
        (("random", 2.0), {}, TypeError, "batch_size"),
        (("domain", 10), {}, ValueError, "batch_size"),
        (("random", 2), {"num_regions": 0}, ValueError, "num_regions"),
    ],
)
def test_original_local_pairing_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        original_local_pairing(*args, **kwargs)


def test_local_contrastive_loss_preserves_namespace_and_dtype(xp):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(4, 2, 10, 10)).astype(np.float32)
    ids = np.array([0, 1, 0, 1])
    features = xp.asarray(base)
    image_ids = xp.asarray(ids)
    loss = local_contrastive_loss(features, image_ids=image_ids)
    assert array_namespace(loss) is array_namespace(features)
    assert loss.dtype == xp.float32
    assert loss.ndim == 0
    expected = local_contrastive_loss(base.astype(np.float64), image_ids=ids)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    none = local_contrastive_loss(features, image_ids=image_ids, region_size=1,
                                  reduction="pairwise")
    assert tuple(none.shape) == (4, 4, 13)
    # float64 stays float64 and agrees with NumPy to round-off on every backend
    domain = local_contrastive_loss(
        xp.asarray(base.astype(np.float64)),
        image_ids=image_ids,
        strategy="domain",
        partition_ids=xp.asarray(np.array([0, 0, 0, 0])),
        volume_ids=xp.asarray(ids),
    )
    assert domain.dtype == xp.float64
    expected = local_contrastive_loss(
        base.astype(np.float64),
        image_ids=ids,
        strategy="domain",
        partition_ids=np.zeros(4, dtype=np.int64),
        volume_ids=ids,
    )
    np.testing.assert_allclose(float(domain), float(expected), rtol=1e-12)


def test_local_contrastive_loss_half_input_computes_in_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    base = rng.normal(size=(4, 3, 8, 8))
    ids = torch.tensor([0, 1, 0, 1])
    half = torch.tensor(base, dtype=torch.float16)
    loss = local_contrastive_loss(half, image_ids=ids)
    assert loss.dtype == torch.float32
    expected = local_contrastive_loss(half.double(), image_ids=ids)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_local_contrastive_loss_small_temperature_and_zero_regions_are_finite():
    rng = np.random.default_rng(9)
    features = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    features[0, :, :4, :4] = 0.0  # zero regions: cosine 0, no NaN
    ids = np.array([0, 1, 0, 1])
    for temperature in (0.005, 0.01):
        loss = local_contrastive_loss(features, image_ids=ids, temperature=temperature)
        assert np.isfinite(float(loss))
    torch = pytest.importorskip("torch")
    f = torch.tensor(features, requires_grad=True)
    local_contrastive_loss(f, image_ids=torch.tensor(ids), temperature=0.01).backward()
    assert torch.isfinite(f.grad).all()


def _bad(**overrides):
    kwargs = {"image_ids": np.array([0, 1, 0, 1])}
    kwargs.update(overrides)
    return kwargs


_F = np.zeros((4, 2, 12, 12)) + np.arange(12.0)
_POS, _NEG = local_region_positions(12)


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "match"),
    [
        (np.zeros((4, 12, 12)), _bad(), ValueError, "features"),
        (np.zeros((4, 2, 12, 12), dtype=np.int64), _bad(), TypeError, "features"),
        # map smaller than the default pattern needs
        (np.zeros((4, 2, 7, 7)), _bad(), ValueError, "map_size"),
        (np.zeros((4, 2, 4, 12)), _bad(region_size=1), ValueError, "map_size"),
        # K not in {1, 3}
        (_F, _bad(region_size=2), ValueError, "region_size"),
        (_F, _bad(region_size=True), TypeError, "region_size"),
        # positions out of bounds
        (
            _F,
            _bad(positions=[[10, 0]], negative_positions=[[[0, 0]]]),
            ValueError,
            "`positions` is out of bounds",
        ),
        (
            _F,
            _bad(positions=[[0, 0]], negative_positions=[[[0, 12]]], region_size=1),
            ValueError,
            "`negative_positions` is out of bounds",
        ),
        (_F, _bad(positions=[[-1, 0]], negative_positions=[[[0, 0]]]), ValueError, "positions"),
        # negative table shape mismatch
        (_F, _bad(positions=_POS, negative_positions=_NEG[:12]), ValueError, "negative_positions"),
        (
            _F,
            _bad(positions=_POS, negative_positions=_NEG[:, :, 0]),
            ValueError,
            "negative_positions",
        ),
        (
            _F,
            _bad(positions=_POS, negative_positions=_NEG[:, :0]),
            ValueError,
            "negative_positions",
        ),
        (_F, _bad(positions=_POS[:, 0], negative_positions=_NEG), ValueError, "positions"),
        (_F, _bad(positions=_POS), ValueError, "negative_positions"),
        (_F, _bad(negative_positions=_NEG), ValueError, "positions"),
        (_F, _bad(positions=_POS * 0.5, negative_positions=_NEG), TypeError, "positions"),
        # channels != projection input
        (_F, _bad(projection=np.zeros((9 * 3, 4))), ValueError, "projection"),
        (_F, _bad(projection=np.zeros((18, 4)), region_size=1), ValueError, "projection"),
        (_F, _bad(projection=np.zeros(18)), ValueError, "projection"),
        (_F, _bad(projection=np.zeros((18, 4), dtype=np.int64)), TypeError, "projection"),
        # metadata length != N
        (_F, _bad(image_ids=np.array([0, 1, 0])), ValueError, "image_ids"),
        (
            _F,
            _bad(
                strategy="domain",
                partition_ids=np.zeros(5, dtype=np.int64),
                volume_ids=np.zeros(4, dtype=np.int64),
            ),
            ValueError,
            "partition_ids",
        ),
        (
            _F,
            _bad(
                strategy="domain",
                partition_ids=np.zeros(4, dtype=np.int64),
                volume_ids=np.zeros(3, dtype=np.int64),
            ),
            ValueError,
            "volume_ids",
        ),
        (_F, _bad(image_ids=np.array([0.0, 1.0, 0.0, 1.0])), TypeError, "image_ids"),
        # "domain" without partition or volume ids
        (_F, _bad(strategy="domain"), ValueError, "partition_ids"),
        (
            _F,
            _bad(strategy="domain", partition_ids=np.zeros(4, dtype=np.int64)),
            ValueError,
            "volume_ids",
        ),
        (
            _F,
            _bad(strategy="domain", volume_ids=np.zeros(4, dtype=np.int64)),
            ValueError,
            "partition_ids",
        ),
        # explicit weights
        (_F, _bad(image_ids=None), ValueError, "image_ids"),
        (_F, _bad(positive_weights=np.ones((4, 3))), ValueError, "positive_weights"),
        (_F, _bad(positive_weights=np.zeros((4, 4))), ValueError, "positive_weights"),
        # options
        (_F, _bad(strategy="positional"), ValueError, "strategy"),
        (_F, _bad(reduction="max"), ValueError, "reduction"),
        (_F, _bad(temperature=0.0), ValueError, "temperature"),
        (_F, _bad(normalizer=-1.0), ValueError, "normalizer"),
        # no positive pair at all
        (_F, _bad(image_ids=np.arange(4)), ValueError, "image_ids"),
        (
            _F,
            _bad(
                image_ids=np.arange(4),
                strategy="domain",
                partition_ids=np.arange(4),
                volume_ids=np.zeros(4, dtype=np.int64),
            ),
            ValueError,
            "no positive pair",
        ),
    ],
)
def test_local_contrastive_loss_bad_input(features, kwargs, error, match):
    with pytest.raises(error, match=match):
        local_contrastive_loss(features, **kwargs)


def test_local_contrastive_loss_mixed_libraries_is_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="image_ids"):
        local_contrastive_loss(torch.zeros(4, 2, 12, 12), image_ids=np.array([0, 1, 0, 1]))
    with pytest.raises(TypeError, match="projection"):
        local_contrastive_loss(
            _F, image_ids=np.array([0, 1, 0, 1]), projection=torch.zeros(18, 4, dtype=torch.float64)
        )


def test_local_contrastive_loss_under_jax_jit_and_grad():
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    features, _, kwargs, _, _, _ = _case_inputs(ORACLE_CASES[7], seed=11)
    jax_kwargs = {key: jnp.asarray(v) if key.endswith("_ids") else v for key, v in kwargs.items()}
    fn = jax.jit(jax.value_and_grad(lambda f: local_contrastive_loss(f, **jax_kwargs)))
    value, grad = fn(jnp.asarray(features))
    f = torch.tensor(features, requires_grad=True)
    torch_kwargs = {
        key: torch.tensor(v) if key.endswith("_ids") else v for key, v in kwargs.items()
    }
    expected = local_contrastive_loss(f, **torch_kwargs)
    expected.backward()
    np.testing.assert_allclose(float(value), float(expected.detach()), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), f.grad.numpy(), rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------------------
# issue 16: two-view form, per-row reduction, degenerate batches, tensor temperature
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_local_two_views_equal_the_concatenated_batch(strategy):
    rng = np.random.default_rng(2)
    f0, f1 = rng.normal(size=(4, 2, 12, 12)), rng.normal(size=(4, 2, 12, 12))
    part, vol = np.array([0, 1, 0, 1]), np.array([3, 3, 4, 4])
    extra = {"partition_ids": part, "volume_ids": vol} if strategy == "domain" else {}
    two = local_contrastive_loss(f0, f1, strategy=strategy, region_size=1, **extra)
    tiled = {key: np.tile(v, 2) for key, v in extra.items()}
    ids = np.tile(np.arange(4), 2)
    features = np.concatenate([f0, f1])
    positions, negatives = local_region_positions(12, region_size=1)
    weights = ref.strategy_weights_reference(ids, tiled.get("partition_ids"),
                                             tiled.get("volume_ids"), strategy)
    expected = ref.local_loss_reference(features, weights, positions, negatives, region_size=1)
    np.testing.assert_allclose(float(two), expected, rtol=1e-10)


@pytest.mark.parametrize("case", [ORACLE_CASES[1], ORACLE_CASES[2], ORACLE_CASES[6]],
                         ids=["random-3views", "random-single", "domain"])
def test_local_reduction_none_is_one_value_per_anchor(case):
    features, projection, kwargs, weights, positions, negatives = _case_inputs(case, seed=4)
    rows = local_contrastive_loss(features, projection=projection, reduction="none", **kwargs)
    dense = ref.local_loss_reference(features, weights, positions, negatives,
                                     region_size=kwargs["region_size"], projection=projection,
                                     reduction="none")
    r = positions.shape[0]
    count = weights.sum(axis=1)
    assert rows.shape == (weights.shape[0],)
    for a in range(len(rows)):  # mean over (positive, region), 0 for a row without positive
        expected = dense[a].sum() / (r * count[a]) if count[a] else 0.0
        np.testing.assert_allclose(rows[a], expected, rtol=1e-10, atol=0)
    mean = local_contrastive_loss(features, projection=projection, **kwargs)
    np.testing.assert_allclose((count * rows).sum() / count.sum(), float(mean), rtol=1e-10)


@pytest.mark.parametrize(
    ("partition_ids", "volume_ids", "match"),
    [
        ([0, 1, 0, 2], [5, 5, 5, 5], r"`image_ids` 1 have `partition_ids` 1 and 2"),
        ([0, 1, 0, 1], [5, 6, 5, 5], r"share a volume.*`volume_ids` 5 and 6|`volume_ids` 6 and 5"),
    ],
)
def test_local_views_of_one_image_in_two_partitions_raise(partition_ids, volume_ids, match):
    f = np.random.default_rng(0).normal(size=(4, 2, 8, 8))
    args = {"image_ids": np.array([0, 1, 0, 1]), "partition_ids": np.array(partition_ids),
            "volume_ids": np.array(volume_ids), "strategy": "domain", "region_size": 1}
    with pytest.raises(ValueError, match=match):
        local_contrastive_loss(f, **args)
    assert np.isfinite(float(local_contrastive_loss(f, check_pairs=False, **args)))


def test_local_constant_maps_warn_but_identical_structured_maps_do_not():
    ids = np.array([0, 1, 0, 1])
    with pytest.warns(RuntimeWarning, match="`features` are identical"):
        local_contrastive_loss(np.ones((4, 2, 8, 8)), ids, region_size=1)
    structured = np.tile(np.random.default_rng(0).normal(size=(1, 2, 8, 8)), (4, 1, 1, 1))
    assert np.isfinite(float(local_contrastive_loss(structured, ids, region_size=1)))


def test_local_tensor_temperature_gets_its_gradient():
    torch = pytest.importorskip("torch")
    f = torch.tensor(np.random.default_rng(1).normal(size=(4, 2, 8, 8)))
    ids = torch.tensor([0, 1, 0, 1])
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = local_contrastive_loss(f, ids, region_size=1, temperature=tau)
    (g_tau,) = torch.autograd.grad(loss, tau)
    h = 1e-6
    up = float(local_contrastive_loss(f, ids, region_size=1, temperature=0.3 + h))
    down = float(local_contrastive_loss(f, ids, region_size=1, temperature=0.3 - h))
    np.testing.assert_allclose(float(loss.detach()), float(local_contrastive_loss(
        f, ids, region_size=1, temperature=0.3)), rtol=1e-12)
    np.testing.assert_allclose(float(g_tau), (up - down) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize(
    ("second", "extra", "error", "match"),
    [
        (np.ones((4, 2, 8, 9)), {}, ValueError, r"second view.*\(4, 2, 8, 8\).*\(4, 2, 8, 9\)"),
        (np.ones((4, 2, 8, 8), dtype=np.float32), {}, TypeError, r"one dtype"),
        (np.ones((4, 2, 8, 8)), {"strategy": "domain", "partition_ids": np.zeros(8, int),
                                 "volume_ids": np.zeros(4, int)}, ValueError,
         r"`partition_ids`.*\(4,\) with two views.*got shape \(8,\)"),
        (np.ones((4, 2, 8, 8)), {"check_pairs": "yes"}, TypeError, r"`check_pairs`.*'yes'"),
        (np.ones((4, 2, 8, 8)), {"temperature": np.array([0.1])}, ValueError,
         r"`temperature`.*0-D.*shape \(1,\)"),
    ],
)
def test_local_new_arguments_bad_input(second, extra, error, match):
    f0 = np.random.default_rng(0).normal(size=(4, 2, 8, 8))
    with pytest.raises(error, match=match):
        local_contrastive_loss(f0, second, region_size=1, **extra)
