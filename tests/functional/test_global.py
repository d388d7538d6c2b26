"""global_contrastive_loss, global_pairing, original_global_pairing: oracles, baselines, errors."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace, device

from contrastlocal.functional import (
    global_contrastive_loss,
    global_pairing,
    masked_contrastive_loss,
    original_global_pairing,
)
from tests import _reference as ref
from tests import to_numpy

STRATEGIES = ["random", "domain_negatives", "domain"]
TEMPERATURES = [0.05, 0.1, 0.5, 1.0]


def make_layout(images, views, seed=0):
    """Rows for `images` = [(volume, partition), ...] with `views` views each, shuffled."""
    image_ids = np.repeat(np.arange(len(images)), views)
    partition_ids = np.repeat(np.array([p for _, p in images]), views)
    order = np.random.default_rng(seed).permutation(len(image_ids))
    # relabel images so ids are not 0..M-1 in order either
    return (image_ids[order] * 7 + 3).astype(np.int64), partition_ids[order].astype(np.int32)


LAYOUTS = {
    # volume 0 has all four partitions, volume 1 two, volume 2 one: uneven volumes
    "uneven": make_layout([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (2, 1)], 2, seed=1),
    # partition 3 absent everywhere, partition 1 only in one volume
    "missing_partition": make_layout([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0)], 2, seed=2),
    "three_views": make_layout([(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)], 3, seed=3),
    "single_volume": make_layout([(0, 0), (0, 1), (0, 2), (0, 3)], 2, seed=4),
}


def _embeddings(n, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_global_contrastive_loss_matches_oracle(layout, strategy, temperature):
    torch = pytest.importorskip("torch")
    image_ids, partition_ids = LAYOUTS[layout]
    z = _embeddings(len(image_ids), seed=len(layout))
    expected, grad = ref.global_loss_and_grad(z, image_ids, partition_ids, strategy, temperature)
    kwargs = {"strategy": strategy, "temperature": temperature}
    # NumPy float64 value
    value = global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids, **kwargs)
    np.testing.assert_allclose(float(value), expected, rtol=1e-10)
    # torch autograd, float64 then float32
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        zt = torch.tensor(z, dtype=dtype, requires_grad=True)
        loss = global_contrastive_loss(zt, image_ids=torch.tensor(image_ids),
                                       partition_ids=torch.tensor(partition_ids), **kwargs)
        loss.backward()
        assert loss.dtype == dtype
        np.testing.assert_allclose(float(loss.detach()), expected, rtol=rtol)
        np.testing.assert_allclose(zt.grad.double().numpy(), grad, rtol=rtol,
                                   atol=rtol * np.abs(grad).max())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_global_contrastive_loss_reductions_match_oracle(strategy):
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = _embeddings(len(image_ids), seed=9)
    kwargs = {"image_ids": image_ids, "partition_ids": partition_ids, "strategy": strategy,
              "temperature": 0.2}
    terms = global_contrastive_loss(z, reduction="pairwise", **kwargs)
    np.testing.assert_allclose(
        terms, ref.global_loss(z, image_ids, partition_ids, strategy, 0.2, "none"), rtol=1e-10,
        atol=0)
    np.testing.assert_allclose(
        float(global_contrastive_loss(z, reduction="sum", **kwargs)),
        ref.global_loss(z, image_ids, partition_ids, strategy, 0.2, "sum"), rtol=1e-10)


def test_global_contrastive_loss_jax_grad_matches_oracle():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    image_ids, partition_ids = LAYOUTS["three_views"]
    z = _embeddings(len(image_ids), seed=5)
    for strategy in STRATEGIES:
        expected, grad = ref.global_loss_and_grad(z, image_ids, partition_ids, strategy, 0.1)

        def f(x, strategy=strategy):
            return global_contrastive_loss(x, image_ids=jnp.asarray(image_ids),
                                           partition_ids=jnp.asarray(partition_ids),
                                           strategy=strategy)

        value, g = jax.value_and_grad(f)(jnp.asarray(z))
        np.testing.assert_allclose(float(value), expected, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(g), grad, rtol=1e-10, atol=1e-13)


def test_global_contrastive_loss_backends_agree(xp):
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = _embeddings(len(image_ids), seed=11)
    for strategy in STRATEGIES:
        expected = global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids,
                                           strategy=strategy, reduction="pairwise")
        out = global_contrastive_loss(
            xp.asarray(z), image_ids=xp.asarray(image_ids),
            partition_ids=xp.asarray(partition_ids), strategy=strategy, reduction="pairwise")
        assert array_namespace(out) is array_namespace(xp.asarray(z))
        assert device(out) == device(xp.asarray(z))
        assert out.dtype == xp.float64
        np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-10, atol=0)


def nt_xent_textbook(z, temperature):
    """SimCLR's NT-Xent on 2M rows where rows i and i + M are the two views of image i."""
    zh = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = zh @ zh.T / temperature
    m2 = z.shape[0]
    m = m2 // 2
    losses = []
    for i in range(m2):
        j = (i + m) % m2
        others = np.exp(np.delete(s[i], i))
        losses.append(-np.log(np.exp(s[i, j]) / others.sum()))
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_global_contrastive_loss_random_two_views_is_nt_xent(temperature):
    z = _embeddings(12, seed=3)
    image_ids = np.concatenate([np.arange(6), np.arange(6)])
    got = global_contrastive_loss(z, image_ids=image_ids, strategy="random",
                                  temperature=temperature)
    np.testing.assert_allclose(float(got), nt_xent_textbook(z, temperature), rtol=1e-10)


def test_global_contrastive_loss_matches_pytorch_metric_learning():
    torch = pytest.importorskip("torch")
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = torch.tensor(_embeddings(len(image_ids), seed=13))
    img, part = torch.tensor(image_ids), torch.tensor(partition_ids)
    pml = losses.NTXentLoss(temperature=0.1)
    # "domain": labels = partition ids
    ours = global_contrastive_loss(z, image_ids=img, partition_ids=part, strategy="domain")
    np.testing.assert_allclose(float(ours), float(pml(z, part)), rtol=1e-6)
    # "random": labels = image ids
    ours = global_contrastive_loss(z, image_ids=img, strategy="random")
    np.testing.assert_allclose(float(ours), float(pml(z, img)), rtol=1e-6)
    # "domain_negatives": an explicit indices tuple (a1, p, a2, n)
    pos, neg = global_pairing(img, part, strategy="domain_negatives")
    a1, p = torch.nonzero(pos, as_tuple=True)
    a2, n = torch.nonzero(neg, as_tuple=True)
    ours = global_contrastive_loss(z, image_ids=img, partition_ids=part,
                                   strategy="domain_negatives")
    theirs = pml(z, indices_tuple=(a1, p, a2, n))
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)


def test_global_pairing_masks_follow_the_strategy_table():
    image_ids = np.array([0, 1, 2, 0, 1, 2])
    partition_ids = np.array([0, 0, 1, 0, 0, 1])
    pos, neg = global_pairing(image_ids, partition_ids, strategy="domain")
    assert pos.dtype == bool
    assert neg.dtype == bool
    np.testing.assert_array_equal(pos[0], [0, 1, 0, 1, 1, 0])  # all other partition-0 rows
    np.testing.assert_array_equal(neg[0], [0, 0, 1, 0, 0, 1])
    pos, neg = global_pairing(image_ids, partition_ids, strategy="domain_negatives")
    np.testing.assert_array_equal(pos[0], [0, 0, 0, 1, 0, 0])  # only its own second view
    np.testing.assert_array_equal(neg[0], [0, 0, 1, 0, 0, 1])  # row 1 is neither
    pos, neg = global_pairing(image_ids, strategy="random")
    np.testing.assert_array_equal(pos[0], [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(neg[0], [0, 1, 1, 0, 1, 1])
    # the masks through the kernel give the loss itself
    z = _embeddings(6, seed=2)
    for strategy in STRATEGIES:
        pos, neg = global_pairing(image_ids, partition_ids, strategy=strategy)
        np.testing.assert_allclose(
            float(masked_contrastive_loss(z, pos, neg)),
            float(global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids,
                                          strategy=strategy)), rtol=1e-12)


# ---- the original code's pairing ------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 4, 8, 10, 12, 13])
@pytest.mark.parametrize("num_partitions", [3, 4, 5])
def test_original_global_pairing_domain_negatives_matches_index_arithmetic(batch_size,
                                                                          num_partitions):
    weights, mask, normalizer = original_global_pairing("domain_negatives", batch_size,
                                                        num_partitions)
    triples, expected_norm = ref.original_gdminus_terms(batch_size, num_partitions)
    assert normalizer == expected_norm
    assert weights.shape == mask.shape == (3 * batch_size, 3 * batch_size)
    assert weights.sum() == len(triples)
    z = _embeddings(3 * batch_size, d=4, seed=batch_size)
    expected = ref.original_loss(z, triples, expected_norm, 0.1)
    got = masked_contrastive_loss(z, weights, mask, temperature=0.1, normalizer=normalizer)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 8, 10, 12, 16])
def test_original_global_pairing_domain_matches_index_arithmetic(batch_size):
    weights, mask, normalizer = original_global_pairing("domain", batch_size)
    triples, expected_norm, rows = ref.original_gd_terms(batch_size, 4)
    assert normalizer == expected_norm
    assert weights.shape == (rows, rows)
    assert weights.sum() == len(triples)
    if batch_size % 2 == 0:  # whole slots: 8 terms per (slot, partition)
        assert len(triples) == 16 * batch_size
    z = _embeddings(rows, d=4, seed=batch_size)
    z[rows // 2:] = 0.0  # the original's blank rows (all-zero images give equal embeddings)
    z[rows // 2:, 0] = 1.0
    expected = ref.original_loss(z, triples, expected_norm, 0.1)
    got = masked_contrastive_loss(z, weights, mask, temperature=0.1, normalizer=normalizer)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_original_global_pairing_domain_b12_matches_the_worked_example():
    weights, mask, normalizer = original_global_pairing("domain", 12)
    assert normalizer == 48.0
    assert int(weights.sum()) == 192
    # a = 0 group and a = 40 (blank slot) wrap onto slot 0
    assert weights[0, 4] == weights[4, 0] == 2  # orig-aug of a slice counted twice
    assert weights[0, 8] == weights[8, 0] == weights[4, 12] == 1
    assert weights[0, 12] == 0  # orig(g) - aug(g+1) never a pair
    assert weights[0, 16] == 0  # slots two apart never paired
    assert weights[40, 0] == weights[44, 4] == 1
    assert mask[0].sum() == 36
    assert not mask[0, ::4].any()
    # at S = 4, B = 12 the denominators are exactly "other partitions"
    partition = np.arange(48) % 4
    np.testing.assert_array_equal(mask, partition[:, None] != partition[None, :])


def test_original_global_pairing_domain_negatives_b12_is_the_intended_rule():
    weights, mask, normalizer = original_global_pairing("domain_negatives", 12)
    assert normalizer == 36.0
    image = np.arange(36) % 12
    partition = image % 4
    np.testing.assert_array_equal(mask, partition[:, None] != partition[None, :])
    np.testing.assert_array_equal(weights != 0, (image[:, None] == image[None, :])
                                  & ~np.eye(36, dtype=bool))


def test_original_global_pairing_domain_negatives_b10_keeps_the_positive_in_denominator():
    _, mask, _ = original_global_pairing("domain_negatives", 10)
    # REFERENCE.md §1.2 worked example: k = 0 excludes 0, 4, ..., 28 and keeps 10, 14, 18
    np.testing.assert_array_equal(np.flatnonzero(~mask[0]), np.arange(0, 30, 4))
    assert mask[0, 10]
    assert mask[10, 10]  # the anchor i2 = 10 is in its own denominator


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("domain", 12, 3), ValueError, "num_partitions"),
        (("domain", 12, 6), ValueError, "num_partitions"),
        (("domain", 161), ValueError, "batch_size"),
        (("domain", 0), ValueError, "batch_size"),
        (("domain", 12.0), TypeError, "batch_size"),
        (("random", 12), ValueError, "strategy"),
        (("domain_negatives", 12, 0), ValueError, "num_partitions"),
    ],
)
def test_original_global_pairing_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        original_global_pairing(*args)


# ---- bad input ------------------------------------------------------------------------------


def _good():
    return {"embeddings": np.ones((4, 3)), "image_ids": np.array([0, 1, 0, 1]),
            "partition_ids": np.array([0, 1, 0, 1])}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"embeddings": np.ones((4, 3, 1))}, ValueError, r"`embeddings`.*got shape \(4, 3, 1\)"),
        ({"embeddings": np.ones(4)}, ValueError, "`embeddings`"),
        ({"image_ids": np.array([0, 1, 0])}, ValueError, r"`image_ids`.*got shape \(3,\)"),
        ({"partition_ids": np.array([0, 1, 0, 1, 1])}, ValueError, "`partition_ids`"),
        ({"image_ids": np.array([[0, 1, 0, 1]])}, ValueError, "`image_ids`"),
        ({"image_ids": np.array([0.0, 1.0, 0.0, 1.0])}, TypeError, r"`image_ids`.*float64"),
        ({"partition_ids": np.array([0.0, 1.0, 0.0, 1.0])}, TypeError, "`partition_ids`"),
        ({"temperature": 0.0}, ValueError, r"`temperature`.*got 0\.0"),
        ({"temperature": -0.1}, ValueError, "`temperature`"),
        ({"temperature": float("inf")}, ValueError, "`temperature`"),
        ({"temperature": float("nan")}, ValueError, "`temperature`"),
        ({"strategy": "simclr"}, ValueError, r"`strategy`.*'simclr'"),
        ({"reduction": "avg"}, ValueError, r"`reduction`.*'avg'"),
        ({"partition_ids": None, "strategy": "domain"}, ValueError, "`partition_ids`.*None"),
        ({"partition_ids": None, "strategy": "domain_negatives"}, ValueError, "`partition_ids`"),
        ({"image_ids": np.array([0, 1, 2, 3]), "strategy": "random"}, ValueError,
         "no positive pair.*`image_ids`"),
        ({"image_ids": np.array([0, 1, 2, 3]), "strategy": "domain_negatives"}, ValueError,
         "no positive pair"),
        ({"partition_ids": np.array([0, 1, 2, 3]), "strategy": "domain"}, ValueError,
         "no positive pair.*`partition_ids`"),
    ],
)
def test_global_contrastive_loss_bad_input(change, error, match):
    args = _good()
    args.update(change)
    emb = args.pop("embeddings")
    with pytest.raises(error, match=match):
        global_contrastive_loss(emb, **args)


def test_global_contrastive_loss_two_libraries_is_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`image_ids`.*numpy.*torch|`image_ids`.*torch.*numpy"):
        global_contrastive_loss(torch.ones(4, 3), image_ids=np.array([0, 1, 0, 1]),
                                partition_ids=torch.tensor([0, 1, 0, 1]))


def test_global_pairing_bad_input():
    with pytest.raises(ValueError, match="partition_ids"):
        global_pairing(np.array([0, 1]), strategy="domain")
    with pytest.raises(TypeError, match="image_ids"):
        global_pairing(np.array([0.5, 1.0]), np.array([0, 1]))


# ------------------------------------------------------------------------------------------
# issue 16: two-view form, per-row reduction, degenerate batches, tensor temperature
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_global_two_views_equal_the_concatenated_batch(strategy):
    rng = np.random.default_rng(21)
    z0, z1 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    part = np.array([0, 1, 0, 2, 1])
    two = global_contrastive_loss(z0, z1, partition_ids=part, strategy=strategy, temperature=0.3)
    ids = np.tile(np.arange(5), 2)
    expected = ref.global_loss(np.concatenate([z0, z1]), ids, np.tile(part, 2), strategy, 0.3)
    np.testing.assert_allclose(float(two), expected, rtol=1e-12)
    positional = global_contrastive_loss(np.concatenate([z0, z1]), ids, np.tile(part, 2),
                                         strategy=strategy, temperature=0.3)
    np.testing.assert_allclose(float(positional), expected, rtol=1e-12)


def test_global_domain_needs_no_image_ids():
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = _embeddings(len(image_ids), seed=4)
    with_ids = global_contrastive_loss(z, image_ids, partition_ids, strategy="domain")
    without = global_contrastive_loss(z, partition_ids=partition_ids, strategy="domain")
    assert float(without) == float(with_ids)


@pytest.mark.parametrize("layout", ["uneven", "three_views", "missing_partition"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_global_reduction_none_is_one_value_per_anchor(strategy, layout):
    image_ids, partition_ids = LAYOUTS[layout]
    z = _embeddings(len(image_ids), seed=5)
    kwargs = {"image_ids": image_ids, "partition_ids": partition_ids, "strategy": strategy,
              "temperature": 0.2}
    rows = global_contrastive_loss(z, reduction="none", **kwargs)
    pairwise = ref.global_loss(z, image_ids, partition_ids, strategy, 0.2, "none")
    positives, _ = global_pairing(image_ids, partition_ids, strategy=strategy)
    count = positives.sum(axis=1)
    assert rows.shape == (len(z),)
    for a in range(len(z)):  # the anchor's mean over its positives, 0 without one
        expected = pairwise[a].sum() / count[a] if count[a] else 0.0
        np.testing.assert_allclose(rows[a], expected, rtol=1e-12, atol=0)
    mean = global_contrastive_loss(z, reduction="mean", **kwargs)
    np.testing.assert_allclose((count * rows).sum() / count.sum(), float(mean), rtol=1e-12)


def test_global_reduction_none_two_views_plain_mean_is_the_loss():
    rng = np.random.default_rng(3)
    z0, z1 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    rows = global_contrastive_loss(z0, z1, strategy="random", reduction="none")
    assert rows.shape == (12,)
    np.testing.assert_allclose(rows.mean(), float(global_contrastive_loss(z0, z1,
                                                                          strategy="random")),
                               rtol=1e-12)


def test_global_reduction_none_torch_gradient_matches_mean():
    torch = pytest.importorskip("torch")
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = torch.tensor(_embeddings(len(image_ids), seed=8), requires_grad=True)
    ids = (torch.tensor(image_ids), torch.tensor(partition_ids))
    rows = global_contrastive_loss(z, *ids, reduction="none")
    count = torch.tensor(global_pairing(image_ids, partition_ids)[0].sum(axis=1))
    (g_rows,) = torch.autograd.grad((count * rows).sum() / count.sum(), z)
    (g_mean,) = torch.autograd.grad(global_contrastive_loss(z, *ids), z)
    torch.testing.assert_close(g_rows, g_mean, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("image_ids", "partition_ids", "strategy", "match"),
    [
        # one partition: G^D and G^{D-} have no negative at all (used to give 0 silently)
        ([0, 1, 0, 1], [2, 2, 2, 2], "domain", r"no negative.*`partition_ids` 2"),
        ([0, 1, 0, 1], [2, 2, 2, 2], "domain_negatives", r"no negative"),
        # one image: G^R has no negative
        ([4, 4, 4], [0, 1, 0], "random", r"no negative.*`image_ids` 4"),
        # the views of image 1 in two partitions
        ([0, 1, 0, 1], [0, 1, 0, 2], "domain", r"image_ids` 1 have `partition_ids` 1 and 2"),
        ([0, 1, 0, 1], [0, 1, 0, 2], "domain_negatives", r"share a partition"),
    ],
)
def test_global_degenerate_batches_raise(image_ids, partition_ids, strategy, match):
    z = _embeddings(len(image_ids), seed=1)
    args = {"image_ids": np.array(image_ids), "partition_ids": np.array(partition_ids),
            "strategy": strategy}
    with pytest.raises(ValueError, match=match):
        global_contrastive_loss(z, **args)
    # check_pairs=False computes without looking (the training stages' sampler guarantees pairs)
    assert np.isfinite(float(global_contrastive_loss(z, check_pairs=False, **args)))


def test_global_degenerate_checks_on_cpu_torch_ids():
    torch = pytest.importorskip("torch")
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="no negative"):
        global_contrastive_loss(z, torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 1, 1]))


def test_global_identical_embeddings_warn():
    with pytest.warns(RuntimeWarning, match="`embeddings` are identical"):
        global_contrastive_loss(np.ones((4, 3)), np.array([0, 1, 0, 1]),
                                np.array([0, 1, 0, 1]))


def test_global_device_ids_are_never_read():
    torch = pytest.importorskip("torch")
    from contrastlocal._validation import host_values

    assert host_values(torch.zeros(3, device="meta")) is None
    assert host_values(torch.zeros(3)) is not None
    assert host_values(np.zeros(3)) is not None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_global_tensor_temperature_value_and_gradient(strategy):
    torch = pytest.importorskip("torch")
    image_ids, partition_ids = LAYOUTS["uneven"]
    z = torch.tensor(_embeddings(len(image_ids), seed=2), requires_grad=True)
    ids = (torch.tensor(image_ids), torch.tensor(partition_ids))
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    loss = global_contrastive_loss(z, *ids, strategy=strategy, temperature=tau)
    fixed = global_contrastive_loss(z, *ids, strategy=strategy, temperature=0.2)
    torch.testing.assert_close(loss, fixed, rtol=1e-12, atol=0)
    g_tau, g_z = torch.autograd.grad(loss, (tau, z))
    (g_fixed,) = torch.autograd.grad(fixed, z)
    torch.testing.assert_close(g_z, g_fixed, rtol=1e-10, atol=1e-12)
    h = 1e-6  # central difference in τ
    up = ref.global_loss(z.detach().numpy(), image_ids, partition_ids, strategy, 0.2 + h)
    down = ref.global_loss(z.detach().numpy(), image_ids, partition_ids, strategy, 0.2 - h)
    np.testing.assert_allclose(float(g_tau), (up - down) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"temperature": np.array([0.1, 0.2])}, ValueError,
         r"`temperature`.*0-D.*shape \(2,\)"),
        ({"temperature": np.array(1)}, TypeError, r"`temperature`.*dtype int"),
        ({"temperature": np.array(-0.5)}, ValueError, r"`temperature`.*-0\.5"),
        ({"temperature": "0.1"}, TypeError, r"`temperature`.*0-D.*got '0\.1'"),
        ({"check_pairs": 1}, TypeError, r"`check_pairs` must be a bool; got 1"),
        ({"reduction": "per_row"}, ValueError, r"`reduction`.*'pairwise'.*'per_row'"),
        ({"image_ids": None, "strategy": "random"}, ValueError, r"`image_ids`.*required.*None"),
    ],
)
def test_global_new_arguments_bad_input(change, error, match):
    args = _good()
    args.update(change)
    emb = args.pop("embeddings")
    with pytest.raises(error, match=match):
        global_contrastive_loss(emb, **args)


@pytest.mark.parametrize(
    ("second", "partition", "error", "match"),
    [
        (np.ones((3, 3)), None, ValueError, r"second view.*\(4, 3\); got shape \(3, 3\)"),
        (np.ones((4, 3), dtype=np.float32), None, TypeError, r"one dtype.*float64.*float32"),
        (np.ones((4, 3)), np.array([0, 1, 0, 1, 0, 1, 0, 1]), ValueError,
         r"`partition_ids`.*\(4,\) with two views.*got shape \(8,\)"),
        (np.ones((4, 3)), np.array([0.0, 1.0, 0.0, 1.0]), TypeError,
         r"`partition_ids`.*integer.*float64"),
    ],
)
def test_global_two_views_bad_input(second, partition, error, match):
    with pytest.raises(error, match=match):
        global_contrastive_loss(np.arange(12.0).reshape(4, 3), second, partition_ids=partition,
                                strategy="domain" if partition is not None else "random")


def test_global_numpy_scalar_temperature_is_a_number():
    z = _embeddings(4, seed=6)
    args = {"image_ids": np.array([0, 1, 0, 1]), "strategy": "random"}
    expected = float(global_contrastive_loss(z, temperature=0.25, **args))
    assert float(global_contrastive_loss(z, temperature=np.float32(0.25), **args)) == expected
    with pytest.raises(ValueError, match=r"`temperature`.*got -1"):
        global_contrastive_loss(z, temperature=np.int64(-1), **args)
