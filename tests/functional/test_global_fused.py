"""The torch fused path of the global loss against the array-API path, on hard layouts.

For torch tensors with ``reduction="mean"``/``"sum"`` the global loss runs a fused kernel; with
``reduction="none"`` it runs the framework-agnostic kernel. Both must agree in value and gradient,
including all-zero rows, batches without negatives and tiny temperatures.
"""

from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.functional import global_contrastive_loss, global_pairing

torch = pytest.importorskip("torch")

STRATEGIES = ("random", "domain_negatives", "domain")


def _layout(rng: np.random.Generator, n_images: int, views: int, parts: int):
    image = np.tile(np.arange(n_images), views)
    partition = np.tile(rng.integers(0, parts, n_images), views)
    return image, partition


def _both(z, image, partition, strategy, tau):
    zf = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    fused = global_contrastive_loss(
        zf, image_ids=torch.tensor(image), partition_ids=torch.tensor(partition),
        strategy=strategy, temperature=tau, check_pairs=False,
    )
    (gf,) = torch.autograd.grad(fused, zf)
    za = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    terms = global_contrastive_loss(
        za, image_ids=torch.tensor(image), partition_ids=torch.tensor(partition),
        strategy=strategy, temperature=tau, reduction="pairwise", check_pairs=False,
    )
    pos, _ = global_pairing(image, partition, strategy=strategy)
    agnostic = terms.sum() / float(pos.sum())
    (ga,) = torch.autograd.grad(agnostic, za)
    return fused.detach(), gf, agnostic.detach(), ga


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_global_fused_matches_agnostic(strategy: str, tau: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image, partition = _layout(rng, n_images=6 + seed, views=2 + seed % 2, parts=3)
    z = rng.normal(size=(image.size, 5))
    z[0] = 0.0  # an all-zero row
    z[1] = z[2] * 3.0 + 1e-9  # near-collinear rows
    fused, gf, agnostic, ga = _both(z, image, partition, strategy, tau)
    assert np.isfinite(float(fused))
    assert torch.isfinite(gf).all()
    np.testing.assert_allclose(float(fused), float(agnostic), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gf.numpy(), ga.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("strategy", ["domain_negatives", "domain"])
def test_global_fused_single_partition_has_no_negatives(strategy: str) -> None:
    rng = np.random.default_rng(7)
    image = np.tile(np.arange(5), 2)
    partition = np.zeros(10, dtype=np.int64)  # every row in one partition: no negatives at all
    z = rng.normal(size=(10, 4))
    fused, gf, agnostic, ga = _both(z, image, partition, strategy, 0.1)
    # with no negatives every term is -log(e^s / e^s) = 0
    assert abs(float(fused)) < 1e-12
    np.testing.assert_allclose(float(fused), float(agnostic), atol=1e-12)
    assert torch.isfinite(gf).all()
    np.testing.assert_allclose(gf.numpy(), ga.numpy(), atol=1e-10)


def _fused_pair(n: int = 12):
    """Both fused Functions on one G^R layout (image id = row mod n/2), with the same value."""
    from contrastlocal.functional._torch_kernel import (
        fused_global_loss,
        fused_masked_contrastive_sum,
    )

    ids = torch.arange(n) % (n // 2)
    same = ids[:, None] == ids[None, :]
    positives = same & ~torch.eye(n, dtype=torch.bool)
    divisor = torch.tensor(float(n), dtype=torch.float64)

    def global_sum(z):
        return fused_global_loss(z, ids, None, temperature=0.2, reduction="mean",
                                 no_pair_message="no pair")

    def masked_sum(z):
        return fused_masked_contrastive_sum(z, positives, ~same, inv_temperature=5.0,
                                            divisor=divisor, eps=1e-30)

    return global_sum, masked_sum


@pytest.mark.parametrize("which", [0, 1], ids=["global", "masked"])
def test_fused_functions_under_torch_func_grad_and_vmap(which: int) -> None:
    fn = _fused_pair()[which]
    z = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z.requires_grad_(True)
    (expected,) = torch.autograd.grad(fn(z), z)
    torch.testing.assert_close(torch.func.grad(fn)(z.detach()), expected, rtol=1e-12, atol=0)
    batch = torch.randn(3, 12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(torch.func.vmap(fn)(batch), torch.stack([fn(b) for b in batch]),
                               rtol=1e-12, atol=0)
    grads = torch.func.vmap(torch.func.grad(fn))(batch)
    for b, g in zip(batch, grads, strict=True):
        torch.testing.assert_close(g, torch.func.grad(fn)(b), rtol=1e-12, atol=0)


@pytest.mark.parametrize("which", [0, 1], ids=["global", "masked"])
def test_fused_functions_compile_fullgraph_without_graph_breaks(which: int) -> None:
    fn = _fused_pair()[which]
    z = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch._dynamo.explain(fn)(z).graph_break_count == 0
    torch._dynamo.reset()
    zc = z.clone().requires_grad_(True)
    out = torch.compile(fn, fullgraph=True)(zc)
    out.backward()
    ze = z.clone().requires_grad_(True)
    expected = fn(ze)
    expected.backward()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(zc.grad, ze.grad, rtol=1e-10, atol=1e-14)


def test_fused_paths_refuse_double_backward() -> None:
    # the analytic backwards are first order: a second derivative is an error, never wrong
    from contrastlocal.functional import local_contrastive_loss

    z = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    ids = torch.arange(8) % 4
    (g,) = torch.autograd.grad(global_contrastive_loss(z, image_ids=ids, strategy="random"), z,
                               create_graph=True)
    with pytest.raises(RuntimeError, match=r"does not require grad|once"):
        g.sum().backward()
    f = torch.randn(4, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(local_contrastive_loss(f, image_ids=torch.arange(4) % 2,
                                                      region_size=1), f, create_graph=True)
    with pytest.raises(RuntimeError, match=r"does not require grad|once"):
        g.sum().backward()


def _assert_no_pair_values(z, ids, strategy: str) -> None:  # type: ignore[no-untyped-def]
    """A batch without a positive pair: refused; unchecked, "mean" NaN and "sum" 0 (zero grad)."""
    with pytest.raises(ValueError, match="no positive pair"):
        global_contrastive_loss(z, **ids, strategy=strategy)
    mean = global_contrastive_loss(z, **ids, strategy=strategy, check_pairs=False)
    (d_mean,) = torch.autograd.grad(mean, z)
    assert torch.isnan(mean)
    assert torch.isnan(d_mean).all()
    total = global_contrastive_loss(z, **ids, strategy=strategy, reduction="sum",
                                    check_pairs=False)
    (d_total,) = torch.autograd.grad(total, z)
    assert float(total.detach()) == 0.0
    assert not d_total.any()


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_fused_no_positive_pair_without_check_pairs(strategy: str) -> None:
    # check_pairs=False switches every check off, the fused kernel's own included: a batch
    # without a positive pair gives 0/0 = NaN for "mean" and an empty sum, 0 with a zero
    # gradient, for "sum" -- the values of the array-API path (NumPy) on the same batch
    gen = torch.Generator().manual_seed(21)
    z = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = {"image_ids": torch.arange(4), "partition_ids": torch.arange(4)}
    host = {k: v.numpy() for k, v in ids.items()}
    _assert_no_pair_values(z, ids, strategy)
    with np.errstate(invalid="ignore"):
        reference = global_contrastive_loss(z.detach().numpy(), **host, strategy=strategy,
                                            check_pairs=False)
    assert np.isnan(reference)
    assert float(global_contrastive_loss(z.detach().numpy(), **host, strategy=strategy,
                                         reduction="sum", check_pairs=False)) == 0.0



# --- the id-based kernel's branches: fixed shift or row maximum (by τ), row blocks (by N) ---


def _kernel():
    from contrastlocal.functional import _torch_kernel

    return _torch_kernel


@pytest.fixture
def small_blocks(monkeypatch):
    """Row blocks of 5 rows for N = 23 (the last one has 3): the blocked path at small N."""
    monkeypatch.setattr(_kernel(), "_CPU_BLOCK_ROWS", 5)
    assert _kernel()._block_rows(23, torch.device("cpu")) == 5
    return monkeypatch


def test_global_block_rows_depend_on_n_and_device_type_only():
    block_rows, cpu, cuda = _kernel()._block_rows, torch.device("cpu"), torch.device("cuda", 1)
    assert [block_rows(n, cpu) for n in (80, 512, 1024, 1025, 8192)] == [80, 512, 1024, 256, 256]
    assert [block_rows(n, cuda) for n in (80, 16384, 16385, 32768)] == [80, 16384, 8192, 8192]


def _fused_and_agnostic(z, image, partition, strategy, reduction, tau, dtype=torch.float64):
    """(value, gradient) of the fused path and of the array-API path (pairwise terms, autograd)."""
    zf = torch.tensor(z, dtype=dtype, requires_grad=True)
    ids = {"image_ids": torch.tensor(image), "partition_ids": torch.tensor(partition)}
    fused = global_contrastive_loss(zf, **ids, strategy=strategy, reduction=reduction,
                                    temperature=tau, check_pairs=False)
    (gf,) = torch.autograd.grad(fused, zf)
    za = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    terms = global_contrastive_loss(za, **ids, strategy=strategy, temperature=tau,
                                    reduction="pairwise", check_pairs=False)
    pos, _ = global_pairing(image, partition, strategy=strategy)
    agnostic = terms.sum() / (float(pos.sum()) if reduction == "mean" else 1.0)
    (ga,) = torch.autograd.grad(agnostic, za)
    return (type(fused.grad_fn).__name__, float(fused.detach()), gf.double().numpy(),
            float(agnostic.detach()), ga.numpy())


def _layout23(seed: int = 11):
    rng = np.random.default_rng(seed)
    image, partition = _layout(rng, n_images=9, views=3, parts=3)
    z = rng.normal(size=(23, 6))
    z[4] = 0.0  # an all-zero row, the last of the first block
    z[5] = z[6] * 2.0  # collinear rows, both in the second block
    z[9] = z[10] * 3.0  # ... and across the boundary of the second and third blocks
    return z, image[:23], partition[:23]  # N = 23: not a multiple of the block


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_global_fused_blocked_matches_one_block_and_agnostic(small_blocks, strategy, reduction):
    z, image, partition = _layout23()
    name, value, grad, agnostic, grad_agnostic = _fused_and_agnostic(
        z, image, partition, strategy, reduction, 0.2)
    assert name == "_GlobalContrastiveSumBackward"
    np.testing.assert_allclose(value, agnostic, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, grad_agnostic, rtol=1e-8, atol=1e-10)
    small_blocks.setattr(_kernel(), "_CPU_BLOCK_ROWS", 1 << 30)  # one block
    _, one, grad_one, _, _ = _fused_and_agnostic(z, image, partition, strategy, reduction, 0.2)
    np.testing.assert_allclose(value, one, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, grad_one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["domain_negatives", "domain"])
def test_global_fused_blocked_rows_without_negatives(small_blocks, strategy):
    # one partition: no row has a negative; every term is log(1 + 0) = 0 with a zero gradient
    z, image, _ = _layout23()
    name, value, grad, agnostic, grad_agnostic = _fused_and_agnostic(
        z, image, np.zeros(23, dtype=np.int64), strategy, "mean", 0.1)
    assert name == "_GlobalContrastiveSumBackward"
    assert value == 0.0
    assert agnostic == 0.0
    assert np.isfinite(grad).all()
    assert not grad.any()
    np.testing.assert_allclose(grad, grad_agnostic, atol=1e-12)


@pytest.mark.parametrize(("dtype", "tau", "path"), [
    (torch.float32, 0.04, "_GlobalContrastiveSumBackward"),  # 1/τ = 25 ≤ 30: fixed shift
    (torch.float32, 0.02, "_ContrastiveSumBackward"),  # 50 > 30: row maximum
    (torch.float64, 0.004, "_GlobalContrastiveSumBackward"),  # 250 ≤ 300
    (torch.float64, 0.002, "_ContrastiveSumBackward"),  # 500 > 300
])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_global_fused_path_chosen_by_temperature(dtype, tau, path, strategy):
    rng = np.random.default_rng(5)
    image, partition = _layout(rng, n_images=8, views=2, parts=3)
    z = rng.normal(size=(image.size, 7))
    z[3] = z[11]  # equal rows: the largest logits, 1/τ, at a positive and a negative
    name, value, grad, agnostic, grad_agnostic = _fused_and_agnostic(
        z, image, partition, strategy, "mean", tau, dtype)
    assert name == path
    assert np.isfinite(value)
    assert np.isfinite(grad).all()
    rtol = 1e-10 if dtype == torch.float64 else 2e-4  # float32 logits up to 1/τ = 25
    np.testing.assert_allclose(value, agnostic, rtol=rtol)
    np.testing.assert_allclose(grad, grad_agnostic, rtol=rtol,
                               atol=rtol * np.abs(grad_agnostic).max())


def test_global_fused_ids_beyond_float32():
    # ids that float32 cannot tell apart (2^40 + k) are still distinct groups: the kernel ranks
    # the ids before it builds its masks
    z, image, partition = _layout23()
    base = np.int64(2) ** 40
    expected = _fused_and_agnostic(z, image, partition, "domain_negatives", "mean", 0.2)
    got = _fused_and_agnostic(z, image + base, partition - base, "domain_negatives", "mean", 0.2)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_fused_no_positive_pair_without_check_pairs_blocked(small_blocks, strategy):
    # as test_fused_no_positive_pair_without_check_pairs, through row blocks
    z = torch.randn(23, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                    requires_grad=True)
    ids = {"image_ids": torch.arange(23), "partition_ids": torch.arange(23)}
    _assert_no_pair_values(z, ids, strategy)


def test_fused_blocked_under_torch_func_and_compile(small_blocks):
    # the blocked path also traces: torch.func.grad and vmap, torch.compile without breaks
    ids = torch.arange(23) % 9

    def fn(z):
        return global_contrastive_loss(z, ids, strategy="random", temperature=0.2,
                                       check_pairs=False)

    gen = torch.Generator().manual_seed(8)
    z = torch.randn(23, 5, dtype=torch.float64, generator=gen)
    zr = z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(fn(zr), zr)
    torch.testing.assert_close(torch.func.grad(fn)(z), expected, rtol=1e-12, atol=0)
    batch = torch.randn(2, 23, 5, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(fn))(batch),
                               torch.stack([torch.func.grad(fn)(b) for b in batch]),
                               rtol=1e-12, atol=0)
    assert torch._dynamo.explain(fn)(z).graph_break_count == 0
    torch._dynamo.reset()
    zc = z.clone().requires_grad_(True)
    torch.compile(fn, fullgraph=True)(zc).backward()
    torch.testing.assert_close(zc.grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("blocked", [False, True])
def test_global_fused_value_without_gradient(monkeypatch, blocked):
    # the kernel computes the gradient in its forward only when one is needed: without it (no
    # grad mode, an input that needs none) the value is the same
    if blocked:
        monkeypatch.setattr(_kernel(), "_CPU_BLOCK_ROWS", 5)
    z, image, partition = _layout23()
    zt = torch.tensor(z, requires_grad=True)
    ids = {"image_ids": torch.tensor(image), "partition_ids": torch.tensor(partition)}
    with_grad = global_contrastive_loss(zt, **ids, strategy="domain_negatives")
    with torch.no_grad():
        no_grad = global_contrastive_loss(zt, **ids, strategy="domain_negatives")
    plain = global_contrastive_loss(zt.detach(), **ids, strategy="domain_negatives")
    assert not no_grad.requires_grad
    assert not plain.requires_grad
    assert float(no_grad) == float(plain) == float(with_grad.detach())


def _loss_and_grad(z: np.ndarray, image, partition, strategy: str):
    zt = torch.tensor(z, requires_grad=True)
    loss = global_contrastive_loss(zt, image_ids=torch.tensor(image),
                                   partition_ids=torch.tensor(partition), strategy=strategy)
    (grad,) = torch.autograd.grad(loss, zt)
    return loss.detach(), grad


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reused_cpu_buffers_leave_no_trace(strategy):
    """The one-block CPU kernel reuses its (N, N) buffers between calls: results never alias them.

    Calls with other inputs, another N and another dtype in between, and calls from several
    threads at once, give what a lone first call gives (to the bit), and earlier results are not
    overwritten by later calls.
    """
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    image, partition = _layout(rng, 20, 2, 3)
    z1 = rng.normal(size=(40, 8)).astype(np.float32)
    z2 = rng.normal(size=(40, 8)).astype(np.float32)
    first = _loss_and_grad(z1, image, partition, strategy)
    kept = (first[0].clone(), first[1].clone())
    other = _loss_and_grad(z2, image, partition, strategy)
    image30, partition30 = _layout(rng, 15, 2, 3)
    _loss_and_grad(z1[:30].astype(np.float64), image30, partition30, strategy)
    again = _loss_and_grad(z1, image, partition, strategy)
    for a, b in zip(first, kept, strict=True):
        assert torch.equal(a, b)  # not overwritten by the later calls
    for a, b in zip(again, kept, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(other[1], kept[1])
    inputs = [z1, z2] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda z: _loss_and_grad(z, image, partition, strategy), inputs))
    for z, (loss, grad) in zip(inputs, results, strict=True):
        ref = kept if z is z1 else other
        assert torch.equal(loss, ref[0])
        assert torch.equal(grad, ref[1])
