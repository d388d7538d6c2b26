"""Hypothesis properties of the local contrastive loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrastlocal.functional import (
    extract_regions,
    local_contrastive_loss,
    local_region_positions,
)


@st.composite
def batches(draw, min_size=None):
    """A batch of feature maps with pixel-aligned views and consistent metadata."""
    region_size = draw(st.sampled_from([1, 3]))
    num_regions = draw(st.sampled_from([9, 13]))
    low = min_size or (8 if region_size == 3 else 5)
    size = draw(st.integers(low, low + 5))
    channels = draw(st.integers(1, 3))
    num_images = draw(st.integers(1, 3))
    num_views = draw(st.integers(2, 3))
    strategy = draw(st.sampled_from(["random", "domain"]))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.01, 100.0))
    temperature = draw(st.sampled_from([0.05, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(seed)
    volumes = rng.integers(0, 2, size=num_images)
    partitions = rng.integers(0, 2, size=num_images)
    image_ids = np.tile(np.arange(num_images), num_views)
    features = scale * rng.normal(size=(image_ids.size, channels, size, size))
    return {
        "features": features,
        "image_ids": image_ids,
        "partition_ids": partitions[image_ids],
        "volume_ids": volumes[image_ids],
        "strategy": strategy,
        "region_size": region_size,
        "num_regions": num_regions,
        "temperature": temperature,
        "rng": rng,
    }


def _loss(batch, reduction="mean", **overrides):
    b = {**batch, **overrides}
    positions, negatives = local_region_positions(
        b["features"].shape[-1], region_size=b["region_size"], num_regions=b["num_regions"]
    )
    return local_contrastive_loss(
        b["features"],
        image_ids=b["image_ids"],
        partition_ids=b["partition_ids"],
        volume_ids=b["volume_ids"],
        strategy=b["strategy"],
        region_size=b["region_size"],
        positions=b.get("positions", positions),
        negative_positions=b.get("negative_positions", negatives),
        temperature=b["temperature"],
        reduction=reduction,
    )


@given(batches())
def test_local_contrastive_loss_is_finite_nonnegative_and_bounded(batch):
    terms = _loss(batch, reduction="pairwise")
    j = 5
    # each term is log(1 + Σ e^{s_neg - s_pos}) with 2J negatives and |s| <= 1/τ
    bound = math.log1p(2 * j * math.exp(2.0 / batch["temperature"]))
    assert np.all(np.isfinite(terms))
    assert np.all(terms >= 0)
    assert np.all(terms <= bound * (1 + 1e-12))
    mean = float(_loss(batch))
    assert np.isfinite(mean)
    assert 0 <= mean <= bound * (1 + 1e-12)


@given(batches())
def test_local_contrastive_loss_is_invariant_to_row_permutation(batch):
    perm = batch["rng"].permutation(batch["image_ids"].size)
    permuted = {
        **batch,
        **{
            key: batch[key][perm]
            for key in ("features", "image_ids", "partition_ids", "volume_ids")
        },
    }
    terms = _loss(batch, reduction="pairwise")
    np.testing.assert_allclose(
        _loss(permuted, reduction="pairwise"), terms[perm][:, perm], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(float(_loss(permuted)), float(_loss(batch)), rtol=1e-12)


@given(batches())
def test_local_contrastive_loss_is_invariant_to_relabelling(batch):
    relabelled = {
        **batch,
        "image_ids": 1000 - 7 * batch["image_ids"],
        "partition_ids": 3 * batch["partition_ids"] + 11,
        "volume_ids": -5 - batch["volume_ids"],
    }
    np.testing.assert_array_equal(
        _loss(relabelled, reduction="pairwise"), _loss(batch, reduction="pairwise")
    )


@given(batches(), st.floats(0.01, 100.0))
def test_local_contrastive_loss_is_invariant_to_positive_rescaling(batch, factor):
    rescaled = {**batch, "features": factor * batch["features"]}
    np.testing.assert_allclose(float(_loss(rescaled)), float(_loss(batch)), rtol=1e-9)


@given(batches(), st.integers(0, 6), st.integers(0, 6))
def test_local_contrastive_loss_translating_positions_with_the_maps_changes_nothing(batch, dx, dy):
    f = batch["features"]
    n, c, h, w = f.shape
    canvas = batch["rng"].normal(size=(n, c, h + 6, w + 6))  # unrelated values around
    canvas[:, :, dx : dx + h, dy : dy + w] = f
    positions, negatives = local_region_positions(
        h, region_size=batch["region_size"], num_regions=batch["num_regions"]
    )
    shift = np.array([dx, dy])
    moved = _loss(
        batch,
        reduction="pairwise",
        features=canvas,
        positions=positions + shift,
        negative_positions=negatives + shift,
    )
    np.testing.assert_allclose(moved, _loss(batch, reduction="pairwise"), rtol=1e-12, atol=1e-12)


@given(batches())
def test_local_contrastive_loss_identical_views_k1_have_maximal_positive_similarity(batch):
    f = batch["features"]
    n_images = int(batch["image_ids"].max()) + 1
    same = np.concatenate([f[:n_images]] * (f.shape[0] // n_images))  # every view identical
    batch = {**batch, "features": same, "region_size": 1, "strategy": "random"}
    tau = batch["temperature"]
    terms = _loss(batch, reduction="pairwise")
    positions, negatives = local_region_positions(
        f.shape[-1], region_size=1, num_regions=batch["num_regions"]
    )
    u = extract_regions(same, positions, region_size=1)
    v = extract_regions(same, negatives.reshape(-1, 2), region_size=1)
    v = v.reshape(same.shape[0], positions.shape[0], 5, -1)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    s_own = np.einsum("nrd,nrjd->nrj", u, v) / tau  # (N, R, J)
    # s(u_ar, u_pr) = 1/τ, the largest cosine similarity, and p's negatives equal a's
    expected = np.log1p(2.0 * np.exp(s_own - 1.0 / tau).sum(-1))  # (N, R)
    for a in range(same.shape[0]):
        for p in range(same.shape[0]):
            if a != p and batch["image_ids"][a] == batch["image_ids"][p]:
                np.testing.assert_allclose(terms[a, p], expected[a], rtol=1e-10, atol=1e-12)
            else:
                assert np.all(terms[a, p] == 0)


@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
@given(batch=batches())
def test_local_contrastive_loss_backends_agree(name, batch):
    module = pytest.importorskip(name)
    expected = _loss(batch, reduction="pairwise")
    convert = {
        key: module.asarray(batch[key])
        for key in ("features", "image_ids", "partition_ids", "volume_ids")
    }
    got = _loss({**batch, **convert}, reduction="pairwise")
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@given(batches())
def test_local_contrastive_loss_rows_weighted_by_positives_give_the_mean(batch):
    rows = _loss(batch, reduction="none")
    terms = _loss(batch, reduction="pairwise")
    count = (terms.sum(axis=-1) != 0).sum(axis=1)  # positives of each anchor (0/1 weights)
    assert rows.shape == (terms.shape[0],)
    assert np.all(rows[count == 0] == 0)
    mean = float(_loss(batch))
    assert float((count * rows).sum() / count.sum()) == pytest.approx(mean, rel=1e-9)
