"""original_global_loss and original_global_layout against loop references (REFERENCE.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.functional import (
    masked_contrastive_loss,
    original_global_layout,
    original_global_loss,
    original_global_pairing,
)
from contrastlocal.functional._original import _global_terms
from tests import _reference_original as ref

STRATEGIES = ("random", "domain_negatives", "domain")
BATCH_SIZES = (1, 2, 5, 8, 10, 12, 13, 40, 161, 200)


def _batch(strategy: str, b: int, s: int, *, seed: int, blank_value: float | None = 0.3):
    n = ref.rows_fed(strategy, b, s)
    z = np.random.default_rng(seed).normal(size=(n, 6))
    if strategy == "domain" and blank_value is not None:
        # the original's blank rows: all-zero images, hence one shared embedding
        for r, row in enumerate(ref.gd_stitched_rows(b, s)):
            if row is None:
                z[r] = blank_value
    return z


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("num_partitions", [3, 4, 6])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_original_global_loss_matches_the_loop_reference(strategy, num_partitions, batch_size):
    z = _batch(strategy, batch_size, num_partitions, seed=batch_size * 7 + num_partitions)
    terms, normalizer = ref.terms_for(strategy, batch_size, num_partitions)
    expected = ref.loss(z, terms, normalizer, 0.1)
    got = original_global_loss(z, strategy=strategy, batch_size=batch_size,
                               num_partitions=num_partitions, temperature=0.1)
    assert got.dtype == np.float64
    np.testing.assert_allclose(float(got), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize(("strategy", "batch_size", "num_partitions"), [
    ("domain", 12, 3), ("domain", 12, 4), ("domain", 12, 6), ("domain", 161, 4),
    ("domain", 7, 6), ("domain_negatives", 10, 4), ("domain_negatives", 13, 6), ("random", 9, 4),
])
def test_original_global_loss_terms_are_the_reference_terms(strategy, batch_size,
                                                            num_partitions):
    terms, normalizer = ref.terms_for(strategy, batch_size, num_partitions)
    table = _global_terms(strategy, batch_size, num_partitions)
    assert table.normalizer == normalizer
    assert table.explicit == (strategy != "random")
    got = sorted(
        (int(a), int(p), tuple(np.flatnonzero(table.unit_negatives[u]).tolist()))
        for a, p, u in zip(table.anchor, table.positive, table.unit, strict=True)
    )
    expected = sorted((a, p, tuple(d)) for a, p, d, _ in terms)
    assert got == expected
    assert all(int(table.unit_anchor[u]) == int(a) for a, u in zip(table.anchor, table.unit,
                                                                 strict=True))


def _group_unit(table, a):
    # the denominator of group a's own anchor i0 = a (units are four per group, i0 first)
    units = np.flatnonzero(table.unit_anchor == a)
    return int(units[units % 4 == 0][0])


def test_original_global_loss_s3_s6_worked_examples():
    # REFERENCE.md §1.3, B = 12: S = 3 has 216 terms over rows 0-52, S = 6 has 272 over 0-63
    t3 = _global_terms("domain", 12, 3)
    assert len(t3.anchor) == 216
    assert t3.unit_negatives.shape[1] == 53
    pairs3 = set(zip(t3.anchor.tolist(), t3.positive.tolist(), strict=True))
    assert (48, 1) in pairs3
    assert (50, 0) in pairs3
    assert sum(a % 3 != p % 3 for a, p in zip(t3.anchor, t3.positive, strict=True)) == 16
    u12 = _group_unit(t3, 12)
    assert not t3.unit_negatives[u12, 1]
    assert t3.unit_negatives[u12, [0, 3, 6, 9]].all()
    t6 = _global_terms("domain", 12, 6)
    assert len(t6.anchor) == 272
    assert t6.unit_negatives.shape[1] == 64
    u12 = _group_unit(t6, 12)
    assert t6.unit_negatives[u12, [0, 6]].all()
    assert not t6.unit_negatives[u12, [2, 8, 14]].any()


def test_original_global_loss_row_with_two_denominators():
    # the reason a per-anchor mask cannot express S = 3 / 6 or B > 160: some row anchors
    # terms of two groups with different denominator sets
    for s, b in ((3, 12), (6, 12), (4, 161)):
        t = _global_terms("domain", b, s)
        sets: dict[int, set[bytes]] = {}
        for a, u in zip(t.unit_anchor.tolist(), range(len(t.unit_anchor)), strict=True):
            sets.setdefault(a, set()).add(t.unit_negatives[u].tobytes())
        assert max(len(v) for v in sets.values()) > 1, (s, b)


@pytest.mark.parametrize(("strategy", "batch_size", "num_partitions"), [
    ("domain", 12, 4), ("domain", 10, 4), ("domain", 13, 4), ("domain", 40, 4),
    ("domain_negatives", 10, 4), ("domain_negatives", 12, 3), ("domain_negatives", 7, 6),
])
def test_original_global_loss_equals_the_pairing_where_the_pairing_applies(
    strategy, batch_size, num_partitions
):
    z = _batch(strategy, batch_size, num_partitions, seed=3)
    w, m, norm = original_global_pairing(strategy, batch_size, num_partitions)
    expected = masked_contrastive_loss(z, w, m, temperature=0.1, normalizer=norm)
    got = original_global_loss(z, strategy=strategy, batch_size=batch_size,
                               num_partitions=num_partitions)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-10)


def test_original_global_loss_zero_blank_rows_use_the_authors_epsilon():
    z = _batch("domain", 12, 4, seed=5, blank_value=0.0)
    terms, normalizer = ref.terms_for("domain", 12, 4)
    got = original_global_loss(z, strategy="domain", batch_size=12, temperature=0.5)
    np.testing.assert_allclose(float(got), ref.loss(z, terms, normalizer, 0.5), rtol=1e-10)


@pytest.mark.parametrize("batch_size", [1, 5, 8, 10, 12, 13, 40])
@pytest.mark.parametrize("num_partitions", [3, 4, 6])
def test_original_global_layout_is_the_stitched_batch(batch_size, num_partitions):
    layout = original_global_layout("domain", batch_size, num_partitions)
    rows = ref.gd_stitched_rows(batch_size, num_partitions)
    assert len(layout["blank"]) == len(rows)
    for r, row in enumerate(rows):
        if row is None:
            assert layout["blank"][r]
            assert layout["volume"][r] == layout["partition"][r] == -1
        else:
            assert not layout["blank"][r]
            got = (layout["set"][r], layout["volume"][r], layout["view"][r],
                   layout["partition"][r])
            assert tuple(int(v) for v in got) == row
    used = 4 * batch_size + 5 if num_partitions == 3 else len(rows)
    np.testing.assert_array_equal(layout["used"], np.arange(len(rows)) < used)
    # rows showing views of one slice share its image index, and only they do
    real = ~layout["blank"]
    key = np.stack([layout["set"], layout["volume"], layout["partition"]], axis=1)[real]
    image = layout["image"][real]
    same_key = (key[:, None, :] == key[None, :, :]).all(axis=2)
    np.testing.assert_array_equal(same_key, image[:, None] == image[None, :])


def test_original_global_layout_known_batches():
    # REFERENCE.md §1.3 table: real rows of the G^D batch
    for b, s, real in ((12, 4, 32), (10, 4, 32), (8, 4, 16), (40, 4, 144), (12, 3, 60),
                       (12, 6, 48)):
        layout = original_global_layout("domain", b, s)
        assert int((~layout["blank"]).sum()) == real
        assert not layout["blank"][:real].any()
    gdm = original_global_layout("domain_negatives", 10, 4)
    assert gdm["view"].tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert gdm["volume"][:10].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert gdm["partition"][:10].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    gr = original_global_layout("random", 3)
    assert gr["image"].tolist() == [0, 0, 1, 1, 2, 2]
    assert gr["view"].tolist() == [1, 2, 1, 2, 1, 2]


@pytest.mark.parametrize(("strategy", "batch_size", "num_partitions"), [
    ("domain", 5, 3), ("domain", 4, 6), ("domain", 13, 4), ("domain", 12, 4),
    ("domain_negatives", 10, 4), ("domain_negatives", 5, 3), ("random", 6, 4),
])
def test_original_global_loss_torch_gradient_matches_the_loop_reference(
    strategy, batch_size, num_partitions
):
    torch = pytest.importorskip("torch")
    z0 = _batch(strategy, batch_size, num_partitions, seed=11)
    z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    got = original_global_loss(z, strategy=strategy, batch_size=batch_size,
                               num_partitions=num_partitions, temperature=0.2)
    (g_got,) = torch.autograd.grad(got, z)
    zr = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    terms, normalizer = ref.terms_for(strategy, batch_size, num_partitions)
    expected = ref.loss(zr, terms, normalizer, 0.2)
    (g_ref,) = torch.autograd.grad(expected, zr)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.item(), expected.item(), rtol=1e-10)
    np.testing.assert_allclose(g_got.numpy(), g_ref.numpy(), rtol=1e-8, atol=1e-12)
    if strategy == "domain" and num_partitions == 3:  # rows 4B + 5 ... are never read
        assert torch.all(g_got[4 * batch_size + 5:] == 0)


def test_original_global_loss_torch_float32_stays_float32():
    torch = pytest.importorskip("torch")
    z = torch.randn(48, 8, generator=torch.Generator().manual_seed(0))
    out = original_global_loss(z, strategy="domain", batch_size=12)
    assert out.dtype == torch.float32
    assert out.shape == ()
    expected = original_global_loss(z.double().numpy(), strategy="domain", batch_size=12)
    np.testing.assert_allclose(out.item(), float(expected), rtol=1e-5)


def test_original_global_loss_jax_value_and_grad():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    z0 = _batch("domain", 12, 6, seed=2)
    expected = original_global_loss(z0, strategy="domain", batch_size=12, num_partitions=6)

    def f(z):
        return original_global_loss(z, strategy="domain", batch_size=12, num_partitions=6)

    value, grad = jax.value_and_grad(f)(jnp.asarray(z0))
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-10)
    torch = pytest.importorskip("torch")
    zt = torch.tensor(z0, requires_grad=True)
    (g_t,) = torch.autograd.grad(f(zt), zt)
    np.testing.assert_allclose(np.asarray(grad), g_t.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("kwargs", "rows", "error", "match"), [
    ({"strategy": "domain", "batch_size": 12}, 47, ValueError, r"4B = 48 rows.*got shape \(47"),
    ({"strategy": "domain", "batch_size": 12, "num_partitions": 3}, 53, ValueError,
     r"5B \+ 4 = 64 rows.*first 4B \+ 5 = 53"),
    ({"strategy": "domain", "batch_size": 12, "num_partitions": 6}, 60, ValueError,
     r"5B \+ 4 = 64 rows"),
    ({"strategy": "domain_negatives", "batch_size": 10}, 40, ValueError, r"3B = 30 rows"),
    ({"strategy": "random", "batch_size": 10}, 30, ValueError, r"2B = 20 rows"),
    ({"strategy": "domain_plus", "batch_size": 10}, 40, ValueError, "strategy"),
    ({"strategy": "domain", "batch_size": 10, "num_partitions": 5}, 40, ValueError,
     "num_partitions.*3, 4, 6.*got 5"),
    ({"strategy": "domain", "batch_size": 10, "num_partitions": 2}, 40, ValueError,
     "num_partitions"),
    ({"strategy": "domain", "batch_size": 0}, 0, ValueError, "batch_size"),
    ({"strategy": "domain", "batch_size": 10.0}, 40, TypeError, "batch_size"),
    ({"strategy": "domain", "batch_size": 10, "temperature": 0.0}, 40, ValueError,
     "temperature"),
])
def test_original_global_loss_bad_input(kwargs, rows, error, match):
    z = np.zeros((rows, 4))
    with pytest.raises(error, match=match):
        original_global_loss(z, **kwargs)


def test_original_global_loss_bad_embeddings():
    with pytest.raises(ValueError, match=r"embeddings.*2-D"):
        original_global_loss(np.zeros(48), strategy="domain", batch_size=12)
    with pytest.raises(TypeError, match=r"embeddings.*floating"):
        original_global_loss(np.zeros((48, 4), dtype=np.int64), strategy="domain",
                             batch_size=12)
    with pytest.raises(ValueError, match="num_partitions"):
        original_global_layout("domain", 12, 5)


@pytest.mark.parametrize(("strategy", "num_partitions"), [("domain", 3), ("domain_negatives", 4),
                                                          ("random", 4)])
def test_original_global_loss_array_api_strict(strategy, num_partitions):
    xps = pytest.importorskip("array_api_strict")
    z = _batch(strategy, 7, num_partitions, seed=4)
    got = original_global_loss(xps.asarray(z), strategy=strategy, batch_size=7,
                               num_partitions=num_partitions)
    terms, normalizer = ref.terms_for(strategy, 7, num_partitions)
    np.testing.assert_allclose(float(got), ref.loss(z, terms, normalizer, 0.1), rtol=1e-10)


def test_original_global_loss_gdminus_b10_worked_example_counts():
    # REFERENCE.md §1.2, B = 10, S = 4: of the 60 terms, 20 hold their positive and 20 their
    # anchor inside the denominator set
    t = _global_terms("domain_negatives", 10, 4)
    negatives = t.unit_negatives[t.unit]
    terms = np.arange(len(t.anchor))
    assert len(t.anchor) == 60
    assert int(negatives[terms, t.positive].sum()) == 20
    assert int(negatives[terms, t.anchor].sum()) == 20


def test_original_global_loss_b12_s4_worked_example():
    # REFERENCE.md §1.3: 192 terms divided by 48; group a = 40 (blank slot) pairs with slot 0
    t = _global_terms("domain", 12, 4)
    assert len(t.anchor) == 192
    assert t.normalizer == 48.0
    pairs = list(zip(t.anchor.tolist(), t.positive.tolist(), strict=True))
    assert pairs.count((0, 4)) == 2  # orig-aug of a slice counted twice per direction
    assert pairs.count((0, 8)) == 1
    assert (0, 12) not in pairs
    assert (40, 0) in pairs
    assert (44, 4) in pairs
    assert int(t.unit_negatives[_group_unit(t, 0)].sum()) == 36
