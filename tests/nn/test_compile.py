"""torch.compile (fullgraph, first call, zero graph breaks) and torch.func over the losses.

Each compile test builds a fresh module and uses a map size no other test uses, so the first
call of that shape happens inside the trace (no eager warm-up).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.functional import global_contrastive_loss, local_contrastive_loss  # noqa: E402
from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss  # noqa: E402

pytestmark = pytest.mark.slow

IMAGE = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
PARTITION = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
VOLUME = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])


def _graph_breaks(fn, *args):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    return explanation.graph_break_count, explanation.break_reasons


def _compiled_matches_eager(fn, *args):
    """fullgraph compile on the first call: same value and same gradients as eager."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    eager = fn(*args)
    grads = torch.autograd.grad(eager, leaves)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager")(*args)
    cgrads = torch.autograd.grad(compiled, leaves)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-7)
    for g, c in zip(grads, cgrads, strict=True):
        torch.testing.assert_close(c, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
def test_global_module_compiles_fullgraph_on_first_call(strategy):
    z = torch.randn(8, 16, requires_grad=True)
    module = GlobalContrastiveLoss(strategy=strategy)
    breaks, reasons = _graph_breaks(module, z, IMAGE, PARTITION)
    assert breaks == 0, reasons
    _compiled_matches_eager(GlobalContrastiveLoss(strategy=strategy), z, IMAGE, PARTITION)


def test_global_module_two_views_compiles_fullgraph():
    z0, z1 = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    module = GlobalContrastiveLoss(strategy="random")
    breaks, reasons = _graph_breaks(module, z0, z1)
    assert breaks == 0, reasons
    _compiled_matches_eager(GlobalContrastiveLoss(strategy="random"), z0, z1)


@pytest.mark.parametrize(("strategy", "size"), [("random", 19), ("domain", 21)])
def test_local_module_compiles_fullgraph_on_first_call(strategy, size):
    torch.manual_seed(0)
    features = torch.randn(8, 3, size, size, requires_grad=True)
    module = LocalContrastiveLoss(strategy, in_channels=3)
    breaks, reasons = _graph_breaks(module, features, IMAGE, PARTITION, VOLUME)
    assert breaks == 0, reasons
    fresh = LocalContrastiveLoss(strategy, in_channels=3)
    _compiled_matches_eager(fresh, features, IMAGE, PARTITION, VOLUME)


def test_local_module_with_given_positions_compiles_fullgraph():
    features = torch.randn(4, 2, 10, 10, requires_grad=True)
    module = LocalContrastiveLoss(region_size=1, positions=[[0, 0], [5, 5]],
                                  negative_positions=[[[1, 1], [2, 2]], [[6, 6], [9, 9]]])
    breaks, reasons = _graph_breaks(module, features, IMAGE[:4] % 2)
    assert breaks == 0, reasons


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_global_loss_torch_func_grad_and_vmap(strategy):
    b = torch.randn(3, 8, 6, dtype=torch.float64)

    def loss(z):
        return global_contrastive_loss(z, IMAGE, PARTITION, strategy=strategy)

    grads = torch.func.vmap(torch.func.grad(loss))(b)
    values = torch.func.vmap(loss)(b)
    for i in range(b.shape[0]):
        zi = b[i].clone().requires_grad_(True)
        value = loss(zi)
        (expected,) = torch.autograd.grad(value, zi)
        torch.testing.assert_close(values[i], value.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[i], expected, rtol=1e-10, atol=1e-12)


def test_local_loss_torch_func_grad_and_vmap():
    b = torch.randn(2, 4, 2, 8, 8, dtype=torch.float64)
    ids = torch.tensor([0, 1, 0, 1])

    def loss(f):
        return local_contrastive_loss(f, ids, region_size=1)

    grads = torch.func.vmap(torch.func.grad(loss))(b)
    values = torch.func.vmap(loss)(b)
    for i in range(b.shape[0]):
        fi = b[i].clone().requires_grad_(True)
        value = loss(fi)
        (expected,) = torch.autograd.grad(value, fi)
        torch.testing.assert_close(values[i], value.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[i], expected, rtol=1e-10, atol=1e-12)


def test_two_view_vmap_matches_loop():
    z = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    values = torch.func.vmap(lambda v: global_contrastive_loss(v[0], v[1], strategy="random"))(z)
    expected = [float(global_contrastive_loss(z[i, 0], z[i, 1], strategy="random"))
                for i in range(3)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-12)


def test_functional_losses_compile_fullgraph_on_first_call():
    z = torch.randn(8, 6, requires_grad=True)
    features = torch.randn(8, 2, 23, 23, requires_grad=True)  # a size no other test uses

    def global_fn(x):
        return global_contrastive_loss(x, IMAGE, PARTITION, strategy="domain_negatives")

    def local_fn(x):
        return local_contrastive_loss(x, IMAGE, PARTITION, VOLUME, strategy="domain",
                                      region_size=1, reduction="none")

    for fn, x in ((global_fn, z), (local_fn, features)):
        breaks, reasons = _graph_breaks(fn, x)
        assert breaks == 0, reasons
    _compiled_matches_eager(global_fn, z)
    _compiled_matches_eager(lambda x: local_fn(x).sum(), features)
