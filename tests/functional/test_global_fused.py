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
