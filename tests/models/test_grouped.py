"""GroupedUNet: K UNets in one grouped network compute exactly what the K networks compute alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from contrastlocal.models import GroupedUNet, UNet, freeze_encoder  # noqa: E402

CHANNELS = (4, 8, 8)


def _nets(k: int, seed: int = 0, **kw: object) -> list[UNet]:
    torch.manual_seed(seed)
    nets = [UNet(1, 3, channels=CHANNELS, **kw).double() for _ in range(k)]  # type: ignore[arg-type]
    # distinct, non-trivial BN affine parameters and running statistics per network
    g = torch.Generator().manual_seed(seed + 1)
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.InstanceNorm2d) and m.affine:
                with torch.no_grad():
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
    return nets


def _inputs(k: int, batch: int = 3, size: int = 16, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, size, size, generator=g, dtype=torch.float64) for _ in range(k)]


def _targets(k: int, batch: int = 3, size: int = 16, seed: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 3, (batch, size, size), generator=g) for _ in range(k)]


def _assert_state_equal(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol: float
) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tol)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_forward_equals_each_unet(mode, k):
    nets = _nets(k)
    grouped = GroupedUNet.from_unets(nets)
    for net in nets:
        net.train(mode == "train")
    grouped.train(mode == "train")
    xs = _inputs(k)
    got = grouped.split(grouped(grouped.stack(xs)))
    for net, x, y in zip(nets, xs, got, strict=True):
        torch.testing.assert_close(y, net(x), rtol=1e-12, atol=1e-12)
    # running statistics after one training forward each
    if mode == "train":
        for k_, net in enumerate(nets):
            _assert_state_equal(grouped.state_dict_of(k_), net.state_dict(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [{"norm": "instance"}, {"norm": "none"}, {"act": "leakyrelu", "upsample_mode": "bilinear"},
     {"kernel_size": 5, "up_kernel_size": 3}],
)
def test_forward_equals_each_unet_other_settings(options):
    nets = _nets(2, **options)
    grouped = GroupedUNet.from_unets(nets)
    xs = _inputs(2)
    got = grouped.split(grouped(grouped.stack(xs)))
    for net, x, y in zip(nets, xs, got, strict=True):
        torch.testing.assert_close(y, net(x), rtol=1e-12, atol=1e-12)


def test_forward_3d():
    torch.manual_seed(0)
    nets = [UNet(1, 2, channels=(2, 4), spatial_dims=3).double() for _ in range(2)]
    grouped = GroupedUNet.from_unets(nets)
    xs = [torch.randn(2, 1, 8, 8, 4, dtype=torch.float64) for _ in range(2)]
    got = grouped.split(grouped(grouped.stack(xs)))
    for net, x, y in zip(nets, xs, got, strict=True):
        torch.testing.assert_close(y, net(x), rtol=1e-12, atol=1e-12)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, labels)


def test_gradients_equal():
    nets = _nets(3)
    grouped = GroupedUNet.from_unets(nets)
    xs, ys = _inputs(3), _targets(3)
    outs = grouped.split(grouped(grouped.stack(xs)))
    sum(_loss(o, y) for o, y in zip(outs, ys, strict=True)).backward()  # type: ignore[union-attr]
    for net, x, y in zip(nets, xs, ys, strict=True):
        _loss(net(x), y).backward()
    for k, net in enumerate(nets):
        grads = {n: p.grad for n, p in net.named_parameters()}
        for name, p in grouped.named_parameters():
            torch.testing.assert_close(
                p.grad.chunk(3, 0)[k], grads[name], rtol=1e-10, atol=1e-12, msg=name
            )


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_training_steps_equal_separate_runs(optimizer):
    k, steps = 3, 4
    nets = _nets(k, seed=2)
    grouped = GroupedUNet.from_unets(nets)
    make = {
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    }[optimizer]
    opt_g = make(grouped.parameters())
    opts = [make(net.parameters()) for net in nets]
    for step in range(steps):
        xs, ys = _inputs(k, seed=10 + step), _targets(k, seed=20 + step)
        opt_g.zero_grad()
        outs = grouped.split(grouped(grouped.stack(xs)))
        sum(_loss(o, y) for o, y in zip(outs, ys, strict=True)).backward()  # type: ignore[union-attr]
        opt_g.step()
        for net, opt, x, y in zip(nets, opts, xs, ys, strict=True):
            opt.zero_grad()
            _loss(net(x), y).backward()
            opt.step()
    for i, net in enumerate(nets):
        # weights, BN running statistics and counters
        _assert_state_equal(grouped.state_dict_of(i), net.state_dict(), rtol=1e-9, atol=1e-11)
        assert int(grouped.state_dict_of(i)["encoder_levels.0.conv1.norm.num_batches_tracked"]) == 4


def test_mean_of_losses_is_not_the_separate_runs():
    """Condition (3): with a mean over the K losses Adam's updates differ (the eps term)."""
    nets = _nets(2, seed=3)
    grouped = GroupedUNet.from_unets(nets)
    opt_g = torch.optim.Adam(grouped.parameters(), lr=1e-2, eps=1e-3)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2, eps=1e-3) for n in nets]
    xs, ys = _inputs(2), _targets(2)
    outs = grouped.split(grouped(grouped.stack(xs)))
    (sum(_loss(o, y) for o, y in zip(outs, ys, strict=True)) / 2).backward()  # type: ignore[operator]
    opt_g.step()
    for net, opt, x, y in zip(nets, opts, xs, ys, strict=True):
        _loss(net(x), y).backward()
        opt.step()
    a = grouped.state_dict_of(0)["head.out_conv.conv.weight"]
    assert not torch.allclose(a, nets[0].state_dict()["head.out_conv.conv.weight"], atol=1e-9)


def test_round_trip_exact():
    nets = _nets(3)
    for i, net in enumerate(nets):  # distinct counters survive the round trip
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.num_batches_tracked.fill_(7 * i)
    grouped = GroupedUNet.from_unets(nets)
    back = grouped.to_unets()
    for a, b in zip(nets, back, strict=True):
        _assert_state_equal(a.state_dict(), b.state_dict(), rtol=0, atol=0)
        assert type(b) is UNet
    one = grouped.unet(1)
    _assert_state_equal(one.state_dict(), nets[1].state_dict(), rtol=0, atol=0)
    # load_unet writes one group back in place
    grouped.load_unet(0, nets[2])
    _assert_state_equal(grouped.state_dict_of(0), nets[2].state_dict(), rtol=0, atol=0)
    _assert_state_equal(grouped.state_dict_of(1), nets[1].state_dict(), rtol=0, atol=0)


def test_state_dict_of_is_a_copy():
    nets = _nets(2)
    grouped = GroupedUNet.from_unets(nets)
    state = grouped.state_dict_of(0)
    state["head.out_conv.conv.weight"].zero_()
    assert grouped.state_dict_of(0)["head.out_conv.conv.weight"].abs().sum() > 0


def test_channels_last_float32():
    torch.manual_seed(0)
    nets = [UNet(1, 3, channels=CHANNELS) for _ in range(2)]
    grouped = GroupedUNet.from_unets(nets).to(memory_format=torch.channels_last)
    xs = [torch.randn(2, 1, 16, 16) for _ in range(2)]
    x = grouped.stack(xs).contiguous(memory_format=torch.channels_last)
    got = grouped.split(grouped(x))
    for net, xi, y in zip(nets, xs, got, strict=True):
        torch.testing.assert_close(y, net(xi), rtol=1e-4, atol=1e-5)


def test_bad_input():
    nets = _nets(2)
    grouped = GroupedUNet.from_unets(nets)
    with pytest.raises(ValueError, match="2 channels"):
        grouped(torch.randn(1, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="multiples of 4"):
        grouped(torch.randn(1, 2, 18, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 tensors"):
        grouped.stack([torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="`k`"):
        grouped.state_dict_of(2)
    with pytest.raises(ValueError, match="at least one"):
        GroupedUNet.from_unets([])
    with pytest.raises(TypeError, match="unets\\[1\\]"):
        GroupedUNet.from_unets([nets[0], torch.nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="channels"):
        GroupedUNet.from_unets([nets[0], UNet(1, 3, channels=(4, 8, 16)).double()])
    with pytest.raises(ValueError, match="dropout"):
        GroupedUNet.from_unets([UNet(1, 3, channels=CHANNELS, dropout=0.1)])
    frozen = UNet(1, 3, channels=CHANNELS)
    freeze_encoder(frozen, batchnorm="frozen_stats")
    with pytest.raises(ValueError, match="stats-frozen"):
        GroupedUNet.from_unets([frozen])
    with pytest.raises(ValueError, match="groups"):
        GroupedUNet(0, channels=CHANNELS)
