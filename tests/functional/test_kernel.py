"""masked_contrastive_loss: oracle equality, reductions, dtypes, numerics, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace, device

from contrastlocal.functional import masked_contrastive_loss
from tests import _reference as ref


def _random_pairing(n: int, seed: int):
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 3, size=(n, n)) * (rng.random((n, n)) < 0.3)
    weights[0, 1] = 2  # at least one pair
    mask = rng.random((n, n)) < 0.6
    return weights.astype(np.float64), mask


def _triples(weights, mask):
    n = weights.shape[0]
    triples, w = [], []
    for a in range(n):
        for p in range(n):
            if weights[a, p] != 0:
                triples.append((a, p, [k for k in range(n) if mask[a, k]]))
                w.append(float(weights[a, p]))
    return triples, w


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("normalizer", [None, 7.5])
def test_masked_contrastive_loss_matches_oracle_float64(temperature, normalizer):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    z = rng.normal(size=(9, 5))
    weights, mask = _random_pairing(9, 2)
    triples, w = _triples(weights, mask)
    expected, grad = ref.pairing_loss_and_grad(z, triples, temperature, normalizer, w)
    got = masked_contrastive_loss(z, weights, mask, temperature=temperature, normalizer=normalizer)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    zt = torch.tensor(z, requires_grad=True)
    loss = masked_contrastive_loss(zt, torch.tensor(weights), torch.tensor(mask),
                                   temperature=temperature, normalizer=normalizer)
    loss.backward()
    np.testing.assert_allclose(zt.grad.numpy(), grad, rtol=1e-10, atol=1e-13)


def test_masked_contrastive_loss_reductions_are_consistent():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 4))
    weights, mask = _random_pairing(7, 4)
    none = masked_contrastive_loss(z, weights, mask, reduction="none")
    assert none.shape == (7, 7)
    assert np.all(none[weights == 0] == 0)
    assert np.all(none[weights != 0] > 0)
    np.testing.assert_allclose(float(masked_contrastive_loss(z, weights, mask, reduction="sum")),
                               none.sum(), rtol=1e-12)
    np.testing.assert_allclose(float(masked_contrastive_loss(z, weights, mask)),
                               none.sum() / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        float(masked_contrastive_loss(z, weights, mask, normalizer=3.0, reduction="mean")),
        none.sum() / 3.0, rtol=1e-12)


def test_masked_contrastive_loss_bool_int_float_weights_agree():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 3))
    pos = rng.random((6, 6)) < 0.4
    pos[0, 1] = True
    mask = ~pos
    values = [float(masked_contrastive_loss(z, w, mask))
              for w in (pos, pos.astype(np.int64), pos.astype(np.float32))]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


def test_masked_contrastive_loss_no_negatives_term_is_zero():
    z = np.eye(3)
    weights = np.zeros((3, 3))
    weights[0, 1] = 1.0
    out = masked_contrastive_loss(z, weights, np.zeros((3, 3), dtype=bool), reduction="none")
    assert np.all(np.isfinite(out))
    assert abs(float(out[0, 1])) < 1e-300


def test_masked_contrastive_loss_preserves_namespace_device_and_dtype(xp):
    rng = np.random.default_rng(6)
    z64 = rng.normal(size=(6, 3))
    weights, mask = _random_pairing(6, 7)
    expected = float(masked_contrastive_loss(z64, weights, mask))
    for dtype, rtol in ((xp.float64, 1e-10), (xp.float32, 1e-5)):
        z = xp.asarray(z64, dtype=dtype)
        out = masked_contrastive_loss(z, xp.asarray(weights), xp.asarray(mask))
        assert array_namespace(out) is array_namespace(z)
        assert device(out) == device(z)
        assert out.dtype == dtype
        assert out.shape == ()
        np.testing.assert_allclose(float(out), expected, rtol=rtol)


def test_masked_contrastive_loss_half_input_computes_in_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    z = rng.normal(size=(6, 3)).astype(np.float32)
    weights, mask = _random_pairing(6, 9)
    for half in (torch.float16, torch.bfloat16):
        zh = torch.tensor(z).to(half)
        out = masked_contrastive_loss(zh, torch.tensor(weights), torch.tensor(mask))
        assert out.dtype == torch.float32
        expected = masked_contrastive_loss(zh.to(torch.float32), torch.tensor(weights),
                                           torch.tensor(mask))
        assert float(out) == pytest.approx(float(expected), rel=1e-6)


def test_masked_contrastive_loss_small_temperature_does_not_overflow():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    z = torch.tensor(rng.normal(size=(8, 4)), dtype=torch.float32, requires_grad=True)
    weights, mask = _random_pairing(8, 11)
    loss = masked_contrastive_loss(z, torch.tensor(weights), torch.tensor(mask), temperature=0.01)
    loss.backward()
    triples, w = _triples(weights, mask)
    expected, grad = ref.pairing_loss_and_grad(z.detach().double().numpy(), triples, 0.01, None, w)
    assert torch.isfinite(loss)
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-4)
    np.testing.assert_allclose(z.grad.numpy(), grad, rtol=1e-3, atol=1e-3 * np.abs(grad).max())


def test_masked_contrastive_loss_zero_row_is_finite():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    z = torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float32)
    z[2] = 0.0
    z.requires_grad_(True)
    weights, mask = _random_pairing(6, 13)
    weights[2, 0] = weights[0, 2] = 1.0
    loss = masked_contrastive_loss(z, torch.tensor(weights), torch.tensor(mask))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(torch.isfinite(z.grad))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embeddings": np.zeros((2, 3, 4))}, ValueError, "embeddings"),
        ({"embeddings": np.zeros((4, 3), dtype=np.int64)}, TypeError, "embeddings"),
        ({"positive_weights": np.ones((4, 3))}, ValueError, "positive_weights"),
        ({"positive_weights": np.ones((4,))}, ValueError, "positive_weights"),
        ({"positive_weights": np.ones((4, 4), dtype=np.complex128)}, TypeError,
         "positive_weights"),
        ({"negative_mask": np.ones((4, 4))}, TypeError, "negative_mask"),
        ({"negative_mask": np.ones((3, 4), dtype=bool)}, ValueError, "negative_mask"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"temperature": "0.1"}, TypeError, "temperature"),
        ({"normalizer": 0.0}, ValueError, "normalizer"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"positive_weights": np.zeros((4, 4))}, ValueError, "no positive pair"),
    ],
)
def test_masked_contrastive_loss_bad_input(kwargs, error, match):
    args = {"embeddings": np.ones((4, 3)), "positive_weights": np.eye(4)[::-1].copy(),
            "negative_mask": np.ones((4, 4), dtype=bool)}
    args.update(kwargs)
    emb, w, m = args.pop("embeddings"), args.pop("positive_weights"), args.pop("negative_mask")
    with pytest.raises(error, match=match):
        masked_contrastive_loss(emb, w, m, **args)


def test_masked_contrastive_loss_mixed_libraries_is_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="negative_mask"):
        masked_contrastive_loss(torch.ones(4, 3), torch.eye(4), np.ones((4, 4), dtype=bool))


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize(("reduction", "normalizer"), [("mean", None), ("mean", 4.0),
                                                       ("sum", None)])
@pytest.mark.parametrize("weight_kind", ["bool", "float"])
def test_masked_contrastive_loss_torch_fused_path_equals_array_api_path(
    dtype_name, reduction, normalizer, weight_kind
):
    torch = pytest.importorskip("torch")
    from array_api_compat import array_namespace as namespace

    from contrastlocal.functional._kernel import _masked_contrastive_impl

    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(21)
    weights, mask = _random_pairing(10, 22)
    weights[3] = 0.0  # an anchor without positives
    mask[4] = False  # an anchor without negatives
    mask[5, 5] = True  # the anchor in its own denominator
    w = torch.tensor(weights != 0) if weight_kind == "bool" else torch.tensor(weights)
    z0 = rng.normal(size=(10, 6))
    z0[7] = 0.0  # an all-zero row
    grads, values = [], []
    for fast in (True, False):
        z = torch.tensor(z0, dtype=dtype, requires_grad=True)
        out = _masked_contrastive_impl(z, w, torch.tensor(mask), temperature=0.07,
                                       normalizer=normalizer, reduction=reduction,
                                       xp=namespace(z), use_fast_path=fast)
        (out * 1.7).backward()
        values.append(out.detach())
        grads.append(z.grad)
        assert out.dtype == dtype
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(values[0], values[1], rtol=rtol, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=rtol,
                               atol=rtol * float(grads[1].abs().max()))


def test_masked_contrastive_loss_torch_fused_path_gradcheck():
    torch = pytest.importorskip("torch")
    weights, mask = _random_pairing(7, 23)
    z = torch.tensor(np.random.default_rng(24).normal(size=(7, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: masked_contrastive_loss(x, torch.tensor(weights), torch.tensor(mask),
                                          temperature=0.3), (z,))
