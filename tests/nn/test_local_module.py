"""LocalContrastiveLoss: module == functional, projection, position caching, settings, errors."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal import LocalContrastiveLoss as RootLocalContrastiveLoss  # noqa: E402
from contrastlocal.functional import local_contrastive_loss, local_region_positions  # noqa: E402
from contrastlocal.nn import LocalContrastiveLoss  # noqa: E402
from tests import _reference_local as ref  # noqa: E402

IMAGE = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
PARTITION = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
VOLUME = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])


def _features(c=3, size=12, dtype=torch.float32, seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64).to(dtype)


def test_local_contrastive_loss_module_is_reachable_from_the_root():
    assert RootLocalContrastiveLoss is LocalContrastiveLoss


@pytest.mark.parametrize("strategy", ["random", "domain"])
@pytest.mark.parametrize("region_size", [1, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_local_contrastive_loss_module_equals_functional(strategy, region_size, reduction):
    f = _features()
    module = LocalContrastiveLoss(
        strategy, region_size=region_size, in_channels=3, temperature=0.2, reduction=reduction
    )
    expected = local_contrastive_loss(
        f,
        image_ids=IMAGE,
        partition_ids=PARTITION,
        volume_ids=VOLUME,
        strategy=strategy,
        region_size=region_size,
        projection=module.projection,
        temperature=0.2,
        reduction=reduction,
    )
    got = module(f, IMAGE, PARTITION, VOLUME)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if region_size == 1:
        assert module.projection is None
        assert list(module.parameters()) == []


def test_local_contrastive_loss_module_matches_loop_oracle_with_its_projection():
    f = _features(dtype=torch.float64, size=16)
    module = LocalContrastiveLoss("domain", in_channels=3, projection_dim=6).double()
    positions, negatives = local_region_positions(16)
    weights = ref.strategy_weights_reference(
        IMAGE.tolist(), PARTITION.tolist(), VOLUME.tolist(), "domain"
    )
    f_ref = f.clone().requires_grad_(True)
    w_ref = module.projection.detach().clone().requires_grad_(True)
    expected = ref.local_loss_reference(
        f_ref, weights, positions, negatives, region_size=3, projection=w_ref
    )
    expected.backward()
    f_got = f.clone().requires_grad_(True)
    got = module(f_got, IMAGE, PARTITION, VOLUME)
    got.backward()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(f_got.grad, f_ref.grad, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(module.projection.grad, w_ref.grad, rtol=1e-10, atol=1e-13)


def test_local_contrastive_loss_module_projection_is_glorot_uniform_without_bias():
    torch.manual_seed(0)
    module = LocalContrastiveLoss(in_channels=64)
    weight = module.projection.detach()
    assert weight.shape == (9 * 64, 128)
    assert [name for name, _ in module.named_parameters()] == ["projection"]
    bound = math.sqrt(6.0 / (9 * 64 + 128))
    assert float(weight.abs().max()) <= bound
    # uniform on [-b, b]: std b / sqrt(3), mean 0 (73 728 draws)
    assert abs(float(weight.std()) - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(float(weight.mean())) < 0.01 * bound


def test_local_contrastive_loss_module_without_projection():
    f = _features()
    module = LocalContrastiveLoss(use_projection=False)
    assert module.projection is None
    expected = local_contrastive_loss(f, image_ids=IMAGE, region_size=3)
    torch.testing.assert_close(module(f, IMAGE), expected, rtol=0, atol=0)


def test_local_contrastive_loss_module_builds_its_projection_at_the_first_call():
    f = _features(c=5)
    module = LocalContrastiveLoss(projection_dim=7)
    assert module.in_channels is None
    loss = module(f, IMAGE)
    assert module.in_channels == 5
    assert module.projection.shape == (45, 7)
    assert isinstance(module.projection, torch.nn.Parameter)
    expected = local_contrastive_loss(f, image_ids=IMAGE, projection=module.projection)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    loss.backward()
    assert module.projection.grad.shape == (45, 7)


def test_local_contrastive_loss_module_state_dict_round_trip_also_when_lazy():
    module = LocalContrastiveLoss(in_channels=2, projection_dim=4)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    lazy = LocalContrastiveLoss(projection_dim=4)
    lazy.load_state_dict(state)
    assert lazy.in_channels == 2
    torch.testing.assert_close(lazy.projection, module.projection, rtol=0, atol=0)
    f = _features(c=2)
    torch.testing.assert_close(lazy(f, IMAGE), module(f, IMAGE), rtol=0, atol=0)


def test_local_contrastive_loss_module_caches_positions_per_map_size():
    module = LocalContrastiveLoss(region_size=1, num_regions=9)
    for size in (12, 24, 12):
        f = _features(size=size)
        expected = local_contrastive_loss(
            f,
            image_ids=IMAGE,
            region_size=1,
            positions=local_region_positions(size, region_size=1, num_regions=9)[0],
            negative_positions=local_region_positions(size, region_size=1, num_regions=9)[1],
        )
        torch.testing.assert_close(module(f, IMAGE), expected, rtol=0, atol=0)
    # the tables are a pure function of the map size; their gather plans are cached by key
    from contrastlocal.functional._local import _PLANS
    from contrastlocal.functional._regions import _default_keys

    for size in (12, 24):
        assert (*_default_keys(size, size, 1, 9), size, 1) in _PLANS
    positions, negatives = module.region_tables((12, 12))
    assert positions.shape == (9, 2)
    assert negatives.shape == (9, 5, 2)
    assert (
        module(
            _features(size=12),
            IMAGE,
        ).shape
        == ()
    )  # cached path
    assert module.region_tables((12, 12))[0] is positions


def test_local_contrastive_loss_module_explicit_positions():
    positions = np.array([[0, 0], [4, 5]])
    negatives = np.array([[[2, 2], [6, 0]], [[0, 6], [7, 7]]])
    module = LocalContrastiveLoss(region_size=1, positions=positions, negative_positions=negatives)
    f = _features(size=10)
    expected = local_contrastive_loss(
        f, image_ids=IMAGE, region_size=1, positions=positions, negative_positions=negatives
    )
    torch.testing.assert_close(module(f, IMAGE), expected, rtol=0, atol=0)
    assert "negative_positions=(2, 2, 2)" in repr(module)
    with pytest.raises(ValueError, match="positions"):
        module(_features(size=5), IMAGE)  # (7, 7) does not fit 5x5 maps


def test_local_contrastive_loss_module_half_precision_and_autocast():
    f = _features(dtype=torch.bfloat16)
    module = LocalContrastiveLoss(in_channels=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(f, IMAGE)
    assert loss.dtype == torch.float32
    expected = local_contrastive_loss(f.float(), image_ids=IMAGE, projection=module.projection)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_local_contrastive_loss_module_repr():
    module = LocalContrastiveLoss("domain", region_size=1, temperature=0.5, reduction="sum")
    assert repr(module) == (
        "LocalContrastiveLoss(strategy='domain', region_size=1, num_regions=13, "
        "temperature=0.5, reduction='sum')"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "global"}, ValueError, "strategy"),
        ({"region_size": 2}, ValueError, "region_size"),
        ({"num_regions": 12}, ValueError, "num_regions"),
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"in_channels": 3.0}, TypeError, "in_channels"),
        ({"projection_dim": 0}, ValueError, "projection_dim"),
        ({"use_projection": 1}, TypeError, "use_projection"),
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"reduction": "max"}, ValueError, "reduction"),
        ({"positions": [[0, 0]]}, ValueError, "negative_positions"),
        ({"negative_positions": [[[0, 0]]]}, ValueError, "positions"),
        ({"positions": [[0, 0]], "negative_positions": [[0, 0]]}, ValueError, "negative_positions"),
        (
            {"positions": [[0, 0], [1, 1]], "negative_positions": [[[0, 0]]]},
            ValueError,
            "negative_positions",
        ),
    ],
)
def test_local_contrastive_loss_module_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalContrastiveLoss(**kwargs)


def test_local_contrastive_loss_module_bad_input():
    module = LocalContrastiveLoss(in_channels=3)
    with pytest.raises(ValueError, match="in_channels"):
        module(_features(c=4), IMAGE)
    with pytest.raises(ValueError, match="image_ids"):
        module(_features(), IMAGE[:5])
    with pytest.raises(ValueError, match="partition_ids"):
        LocalContrastiveLoss("domain", in_channels=3)(_features(), IMAGE)
    with pytest.raises(ValueError, match="map_size"):
        module(_features(size=7), IMAGE)
    with pytest.raises(ValueError, match="features"):
        LocalContrastiveLoss()(torch.zeros(8, 3, 12), IMAGE)


@pytest.mark.parametrize("reduction", ["mean", "none", "pairwise"])
def test_local_module_two_views_equal_the_function(reduction):
    torch.manual_seed(0)
    module = LocalContrastiveLoss("domain", in_channels=3, reduction=reduction)
    f = _features(dtype=torch.float64)
    f0, f1 = f[:4], f[4:]
    part, vol = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    got = module(f0, f1, part, vol)
    expected = local_contrastive_loss(f0, f1, part, vol, strategy="domain",
                                      projection=module.projection, reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    concatenated = module(f, IMAGE, part.repeat(2), vol.repeat(2))
    torch.testing.assert_close(got, concatenated, rtol=1e-12, atol=1e-12)


def test_local_module_learnable_temperature_and_check_pairs():
    tau = torch.nn.Parameter(torch.tensor(0.3))
    module = LocalContrastiveLoss(region_size=1, temperature=tau, check_pairs=False)
    assert "temperature" in dict(module.named_parameters())
    module(_features(), IMAGE).backward()
    assert tau.grad is not None
    assert torch.isfinite(tau.grad)
    with pytest.raises(TypeError, match=r"`check_pairs` must be a bool; got 0"):
        LocalContrastiveLoss(check_pairs=0)
