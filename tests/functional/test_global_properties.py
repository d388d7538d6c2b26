"""Hypothesis properties of global_contrastive_loss (finite, bounded, invariances, backends)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastlocal.functional import global_contrastive_loss
from tests.functional.test_global import nt_xent_textbook

STRATEGIES = ["random", "domain_negatives", "domain"]


@st.composite
def batches(draw):
    """A batch with at least one positive pair and two partitions (so negatives) for every strategy.

    (A batch with one partition has no negative under G^D and G^{D-} and raises; tested in
    test_global.py.)
    """
    num_images = draw(st.integers(2, 6))
    views = draw(st.integers(2, 3))
    partitions = draw(st.lists(st.integers(0, 3), min_size=num_images, max_size=num_images))
    if len(set(partitions)) == 1:
        partitions[-1] = partitions[0] + 1
    n = num_images * views
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    image_ids = np.repeat(np.arange(num_images), views)[order]
    partition_ids = np.repeat(np.array(partitions), views)[order]
    z = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    temperature = draw(st.sampled_from([0.05, 0.1, 0.5, 1.0]))
    strategy = draw(st.sampled_from(STRATEGIES))
    return z, image_ids, partition_ids, temperature, strategy, rng


def _loss(z, image_ids, partition_ids, temperature, strategy, **kwargs):
    return float(global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids,
                                         temperature=temperature, strategy=strategy, **kwargs))


@given(batches())
def test_global_contrastive_loss_finite_nonnegative_bounded(batch):
    z, image_ids, partition_ids, temperature, strategy, _ = batch
    value = _loss(z, image_ids, partition_ids, temperature, strategy)
    assert math.isfinite(value)
    assert value >= 0.0
    assert value <= math.log(len(z) - 1) + 2.0 / temperature + 1e-9


@given(batches())
def test_global_contrastive_loss_invariant_to_positive_row_scaling(batch):
    z, image_ids, partition_ids, temperature, strategy, rng = batch
    scale = rng.uniform(0.1, 10.0, size=(len(z), 1))
    a = _loss(z, image_ids, partition_ids, temperature, strategy)
    b = _loss(z * scale, image_ids, partition_ids, temperature, strategy)
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12)


@given(batches())
def test_global_contrastive_loss_invariant_to_row_permutation(batch):
    z, image_ids, partition_ids, temperature, strategy, rng = batch
    perm = rng.permutation(len(z))
    a = _loss(z, image_ids, partition_ids, temperature, strategy)
    b = _loss(z[perm], image_ids[perm], partition_ids[perm], temperature, strategy)
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    terms = global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids,
                                    temperature=temperature, strategy=strategy,
                                    reduction="pairwise")
    permuted = global_contrastive_loss(z[perm], image_ids=image_ids[perm],
                                       partition_ids=partition_ids[perm],
                                       temperature=temperature, strategy=strategy,
                                       reduction="pairwise")
    np.testing.assert_allclose(permuted, terms[np.ix_(perm, perm)], rtol=1e-9, atol=1e-12)


@given(batches())
def test_global_contrastive_loss_invariant_to_relabelling(batch):
    z, image_ids, partition_ids, temperature, strategy, rng = batch
    image_map = rng.permutation(1000)[: image_ids.max() + 1] - 500
    partition_map = rng.permutation(50)[: partition_ids.max() + 1] * 3
    a = _loss(z, image_ids, partition_ids, temperature, strategy)
    b = _loss(z, image_map[image_ids], partition_map[partition_ids], temperature, strategy)
    assert b == a


@settings(max_examples=8)
@given(batches())
def test_global_contrastive_loss_backends_agree_with_numpy(batch):
    z, image_ids, partition_ids, temperature, strategy, _ = batch
    expected = _loss(z, image_ids, partition_ids, temperature, strategy)
    from tests.conftest import XP_BACKENDS

    for name in ("array_api_strict", "array_api_strict_strictest", "torch", "jax.numpy"):
        xp = XP_BACKENDS[name]()
        try:
            out = global_contrastive_loss(
                xp.asarray(z), image_ids=xp.asarray(image_ids),
                partition_ids=xp.asarray(partition_ids), temperature=temperature,
                strategy=strategy)
            assert float(out) == pytest.approx(expected, rel=1e-10, abs=1e-12), name
        finally:
            if name.startswith("array_api_strict"):
                import array_api_strict

                array_api_strict.reset_array_api_strict_flags()


@given(st.integers(2, 8), st.integers(1, 6), st.sampled_from([0.05, 0.1, 0.5, 1.0]),
       st.integers(0, 2**32 - 1))
def test_global_contrastive_loss_random_two_views_is_textbook_nt_xent(m, d, temperature, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * m, d))
    image_ids = np.concatenate([np.arange(m), np.arange(m)])
    got = float(global_contrastive_loss(z, image_ids=image_ids, strategy="random",
                                        temperature=temperature))
    assert got == pytest.approx(nt_xent_textbook(z, temperature), rel=1e-10)


@given(batches())
def test_global_contrastive_loss_rows_weighted_by_positives_give_the_mean(batch):
    from contrastlocal.functional import global_pairing

    z, image_ids, partition_ids, temperature, strategy, _ = batch
    rows = global_contrastive_loss(z, image_ids=image_ids, partition_ids=partition_ids,
                                   temperature=temperature, strategy=strategy, reduction="none")
    count = global_pairing(image_ids, partition_ids, strategy=strategy)[0].sum(axis=1)
    assert rows.shape == (len(z),)
    assert np.all(rows[count == 0] == 0)
    mean = _loss(z, image_ids, partition_ids, temperature, strategy)
    assert float((count * rows).sum() / count.sum()) == pytest.approx(mean, rel=1e-10, abs=1e-12)
