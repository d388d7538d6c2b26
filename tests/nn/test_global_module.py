"""GlobalContrastiveLoss: module == functional, settings validated, autocast safety, numerics."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.functional import global_contrastive_loss
from tests import _reference as ref

torch = pytest.importorskip("torch")

from contrastlocal import GlobalContrastiveLoss as RootGlobalContrastiveLoss  # noqa: E402
from contrastlocal.nn import GlobalContrastiveLoss  # noqa: E402

IMAGE = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
PARTITION = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])


def _z(dtype=torch.float32, seed=0, d=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, d, generator=g, dtype=torch.float64).to(dtype)


def test_global_contrastive_loss_module_is_reachable_from_the_root():
    assert RootGlobalContrastiveLoss is GlobalContrastiveLoss


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_global_contrastive_loss_module_equals_functional(strategy, reduction):
    z = _z()
    module = GlobalContrastiveLoss(strategy=strategy, temperature=0.2, reduction=reduction)
    expected = global_contrastive_loss(z, image_ids=IMAGE, partition_ids=PARTITION,
                                       strategy=strategy, temperature=0.2, reduction=reduction)
    torch.testing.assert_close(module(z, IMAGE, PARTITION), expected, rtol=0, atol=0)


def test_global_contrastive_loss_module_gradcheck_float64():
    z = _z(torch.float64).requires_grad_(True)
    module = GlobalContrastiveLoss(strategy="domain", temperature=0.5)
    assert torch.autograd.gradcheck(lambda x: module(x, IMAGE, PARTITION), (z,))


def test_global_contrastive_loss_module_repr_shows_settings():
    text = repr(GlobalContrastiveLoss("random", temperature=0.5, reduction="sum"))
    assert text == "GlobalContrastiveLoss(strategy='random', temperature=0.5, reduction='sum')"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "simclr"}, ValueError, "strategy"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": None}, TypeError, "temperature"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"gather_distributed": 1}, TypeError, "gather_distributed"),
    ],
)
def test_global_contrastive_loss_module_validates_in_init(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss(**kwargs)


def test_global_contrastive_loss_module_gather_without_process_group_is_single_process():
    assert not torch.distributed.is_initialized()
    module = GlobalContrastiveLoss(gather_distributed=True)
    z = _z()
    torch.testing.assert_close(module(z, IMAGE, PARTITION),
                               GlobalContrastiveLoss()(z, IMAGE, PARTITION), rtol=0, atol=0)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_global_contrastive_loss_module_under_autocast_computes_in_float32(half):
    layer = torch.nn.Linear(8, 8).double()
    x = _z(torch.float64)
    module = GlobalContrastiveLoss(strategy="domain")
    with torch.autocast(device_type="cpu", dtype=half):
        z = layer.float()(x.float())
        assert z.dtype == half
        loss = module(z, IMAGE, PARTITION)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    # the value is the float32 loss of the half-precision embeddings, not a half-precision loss
    expected, _ = ref.global_loss_and_grad(z.detach().double().numpy(), IMAGE.numpy(),
                                           PARTITION.numpy(), "domain", 0.1)
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-5)


def test_global_contrastive_loss_module_small_temperature_is_finite():
    z = _z(torch.float32, seed=3).requires_grad_(True)
    module = GlobalContrastiveLoss(strategy="domain", temperature=0.01)
    loss = module(z, IMAGE, PARTITION)
    loss.backward()
    expected, grad = ref.global_loss_and_grad(z.detach().double().numpy(), IMAGE.numpy(),
                                              PARTITION.numpy(), "domain", 0.01)
    assert torch.isfinite(loss)
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-4)
    np.testing.assert_allclose(z.grad.numpy(), grad, rtol=1e-3, atol=1e-3 * np.abs(grad).max())


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
def test_global_contrastive_loss_module_zero_row_is_finite(strategy):
    z = _z(torch.float32, seed=4)
    z[3] = 0.0
    z.requires_grad_(True)
    loss = GlobalContrastiveLoss(strategy=strategy)(z, IMAGE, PARTITION)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()


def test_global_contrastive_loss_module_bad_forward_input():
    module = GlobalContrastiveLoss("domain")
    with pytest.raises(ValueError, match="partition_ids"):
        module(_z(), IMAGE)
    with pytest.raises(TypeError, match="image_ids"):
        module(_z(), IMAGE.float(), PARTITION)


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "pairwise"])
def test_global_module_two_views_equal_the_function(strategy, reduction):
    z = _z(torch.float64)
    z0, z1 = z[:6], z[6:]
    module = GlobalContrastiveLoss(strategy=strategy, reduction=reduction)
    got = module(z0, z1, partition_ids=PARTITION[:6])
    expected = global_contrastive_loss(z0, z1, partition_ids=PARTITION[:6], strategy=strategy,
                                       reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # and the concatenated form with the module's positional ids
    torch.testing.assert_close(got, module(z, IMAGE, PARTITION), rtol=1e-12, atol=1e-12)


def test_global_module_learnable_temperature():
    tau = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
    module = GlobalContrastiveLoss(temperature=tau)
    assert [name for name, _ in module.named_parameters()] == ["temperature"]
    assert "temperature=tensor(0.2)" in repr(module)
    z = _z(torch.float64).requires_grad_(True)
    loss = module(z, IMAGE, PARTITION)
    loss.backward()
    assert tau.grad is not None
    assert torch.isfinite(tau.grad)
    expected = GlobalContrastiveLoss(temperature=0.2)(z.detach(), IMAGE, PARTITION)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=0)
    buffered = GlobalContrastiveLoss(temperature=torch.tensor(0.2))
    assert "temperature" in dict(buffered.named_buffers())


def test_global_module_check_pairs_switch():
    single = torch.zeros(12, dtype=torch.int64)  # one partition: no negative under G^D
    with pytest.raises(ValueError, match="no negative"):
        GlobalContrastiveLoss()(_z(), IMAGE, single)
    value = GlobalContrastiveLoss(check_pairs=False)(_z(), IMAGE, single)
    assert torch.isfinite(value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": torch.tensor([0.1, 0.2])}, ValueError, r"`temperature`.*shape \(2,\)"),
        ({"temperature": torch.tensor(1)}, TypeError, r"`temperature`.*torch.int64"),
        ({"temperature": torch.tensor(-1.0)}, ValueError, r"`temperature`.*-1\.0"),
        ({"check_pairs": None}, TypeError, r"`check_pairs` must be a bool; got None"),
        ({"reduction": "pairwise", "gather_distributed": True}, ValueError,
         r"`reduction`.*got reduction='pairwise'"),
    ],
)
def test_global_module_new_arguments_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss(**kwargs)
