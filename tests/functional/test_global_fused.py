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


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_fused_no_positive_pair_without_check_pairs(strategy: str) -> None:
    # check_pairs=False switches every check off, the fused kernel's own included: a batch
    # without a positive pair gives 0/0 = NaN for "mean" and an empty sum, 0 with a zero
    # gradient, for "sum" -- the values of the array-API path (NumPy) on the same batch
    gen = torch.Generator().manual_seed(21)
    z = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = {"image_ids": torch.arange(4), "partition_ids": torch.arange(4)}
    host = {k: v.numpy() for k, v in ids.items()}
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
    with np.errstate(invalid="ignore"):
        reference = global_contrastive_loss(z.detach().numpy(), **host, strategy=strategy,
                                            check_pairs=False)
    assert np.isnan(reference)
    assert float(global_contrastive_loss(z.detach().numpy(), **host, strategy=strategy,
                                         reduction="sum", check_pairs=False)) == 0.0
