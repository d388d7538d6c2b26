"""Tests of the reference UNet: shapes, parameter counts, padding, init, errors, backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.models import UNet  # noqa: E402

from ._reference import count_conv_parameters, reference_unet_layers, tf_same_conv2d  # noqa: E402

# REFERENCE.md §2.1: l -> (C_l, map size at 192, map size at 160)
DECODER_TABLE = {
    1: (128, 12, 10),
    2: (128, 24, 20),
    3: (64, 48, 40),
    4: (32, 96, 80),
    5: (16, 192, 160),
}


def _small(**kwargs: object) -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=1, out_channels=3, channels=(4, 8, 8), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def encoded() -> dict[int, tuple[UNet, torch.Tensor, list[torch.Tensor]]]:
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=4)
    out = {}
    with torch.no_grad():
        for size in (192, 160):
            bottleneck, skips = net.encode(torch.randn(1, 1, size, size))
            out[size] = (net, bottleneck, skips)
    return out


@pytest.mark.parametrize("size", [192, 160])
def test_unet_encoder_shapes(encoded, size):
    _, bottleneck, skips = encoded[size]
    assert tuple(bottleneck.shape) == (1, 128, size // 32, size // 32)
    levels = zip((16, 32, 64, 128, 128), (1, 2, 4, 8, 16), strict=True)
    assert [tuple(s.shape) for s in skips] == [(1, c, size // f, size // f) for c, f in levels]


@pytest.mark.parametrize("size", [192, 160])
@pytest.mark.parametrize("num_blocks", [1, 2, 3, 4, 5])
def test_unet_decoder_shapes_match_reference_table(encoded, size, num_blocks):
    net, bottleneck, skips = encoded[size]
    channels, at192, at160 = DECODER_TABLE[num_blocks]
    side = at192 if size == 192 else at160
    with torch.no_grad():
        out = net.decode(bottleneck, skips, num_blocks=num_blocks)
    assert tuple(out.shape) == (1, channels, side, side)
    assert net.decoder_block_channels(num_blocks) == channels
    assert size // net.decoder_block_factor(num_blocks) == side
    assert net.decoder_feature_shape(num_blocks, size) == (channels, side, side)


def test_unet_decode_return_features_lists_every_block(encoded):
    net, bottleneck, skips = encoded[160]
    with torch.no_grad():
        out, features = net.decode(bottleneck, skips, num_blocks=4, return_features=True)
        full = net.decode(bottleneck, skips)
        last, all_features = net.decode(bottleneck, skips, return_features=True)
    assert len(features) == 4
    assert torch.equal(features[-1], out)
    for block, feat in enumerate(features, start=1):
        assert feat.shape[1] == DECODER_TABLE[block][0]
        assert feat.shape[-1] == DECODER_TABLE[block][2]
    assert len(all_features) == 5
    assert torch.equal(last, full)
    assert tuple(full.shape) == (1, 16, 160, 160)


@pytest.mark.parametrize(("size", "classes"), [(192, 4), (160, 8)])
def test_unet_logits_shape(size, classes):
    net = UNet(in_channels=1, out_channels=classes)
    with torch.no_grad():
        assert tuple(net(torch.randn(1, 1, size, size)).shape) == (1, classes, size, size)


@pytest.mark.parametrize(("name", "classes"), [("ACDC", 4), ("MMWHS", 8)])
def test_unet_parameter_count_equals_original(name, classes):
    net = UNet(in_channels=1, out_channels=classes)
    expected = count_conv_parameters(reference_unet_layers(classes))
    assert sum(p.numel() for p in net.parameters()) == expected, name
    assert all(p.requires_grad for p in net.parameters())
    # the encoder alone is the stage-1 trunk
    encoder_expected = count_conv_parameters(reference_unet_layers(classes)[:12])
    assert sum(p.numel() for p in net.encoder_levels.parameters()) == encoder_expected


def test_unet_parameter_count_without_norm_and_other_widths():
    net = UNet(in_channels=2, out_channels=3, channels=(8, 16, 16), norm=None)
    layers = [
        ("e1a", 3, 2, 8, True, False), ("e1b", 3, 8, 8, True, False),
        ("e2a", 3, 8, 16, True, False), ("e2b", 3, 16, 16, True, False),
        ("e3a", 3, 16, 16, True, False), ("e3b", 3, 16, 16, True, False),
        ("d1u", 2, 16, 16, True, False), ("d1a", 3, 32, 16, True, False),
        ("d1b", 3, 16, 16, True, False),
        ("d2u", 2, 16, 8, True, False), ("d2a", 3, 16, 8, True, False),
        ("h1", 3, 8, 8, True, False), ("h2", 3, 8, 8, True, False),
        ("fin", 3, 8, 3, False, False),
    ]
    assert sum(p.numel() for p in net.parameters()) == count_conv_parameters(layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_unet_up_conv_same_padding_is_bottom_right():
    torch.manual_seed(1)
    net = _small(norm=None)
    block = net.decoder_blocks[0]
    conv = block.up_conv.conv
    assert conv.kernel_size == (2, 2)
    x = torch.randn(1, conv.in_channels, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        got = block.up_conv.double()(x)[0].numpy()
    expected = tf_same_conv2d(
        x[0].numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy()
    )
    np.testing.assert_allclose(np.maximum(expected, 0.0), got, rtol=1e-12, atol=1e-12)
    # a single impulse at the top-left only reaches output (0, 0): nothing is padded before
    impulse = torch.zeros(1, conv.in_channels, 4, 4, dtype=torch.float64)
    impulse[0, :, 0, 0] = 1.0
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        response = block.up_conv(impulse)[0, 0]
    assert response[0, 0] == conv.in_channels
    assert torch.count_nonzero(response) == 1


def test_unet_3x3_conv_same_padding_matches_reference():
    torch.manual_seed(2)
    net = _small(norm=None)
    layer = net.encoder_levels[0].conv1
    layer.double()
    x = torch.randn(1, 1, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)[0].numpy()
    conv = layer.conv
    expected = np.maximum(
        tf_same_conv2d(x[0].numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy()),
        0.0,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_unet_he_normal_init_and_zero_biases():
    torch.manual_seed(3)
    net = UNet()
    conv = net.decoder_blocks[0].conv1.conv  # 3x3, 256 -> 128: 294912 weights
    fan_in = 3 * 3 * 256
    std = conv.weight.detach().double().std().item()
    assert abs(std / math.sqrt(2.0 / fan_in) - 1.0) < 0.02
    mean = conv.weight.detach().double().mean().item()
    assert abs(mean) < 4 * std / math.sqrt(conv.weight.numel())
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1)
            assert torch.all(module.bias == 0)
    # unlike the original, equally shaped kernels do not start identical
    level6 = net.encoder_levels[5]
    assert not torch.equal(level6.conv1.conv.weight, level6.conv2.conv.weight)
    assert net.head.out_conv.conv.bias is None


def test_unet_batchnorm_settings_default_to_original():
    bn = UNet().encoder_levels[0].conv1.norm
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert bn.eps == pytest.approx(1e-3)
    assert bn.momentum == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 2, 32, 32), "in_channels = 1"),
        ((1, 32, 32), "4-D"),
        ((1, 1, 32, 32, 1), "4-D"),
        ((1, 1, 2, 2), "multiples of 4"),
        ((1, 1, 30, 32), "multiples of 4"),
        ((1, 1, 32, 6), r"got shape \(1, 1, 32, 6\)"),
    ],
)
def test_unet_rejects_bad_inputs(shape, match):
    net = _small()
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_unet_default_rejects_size_not_divisible_by_32():
    net = UNet()
    with pytest.raises(ValueError, match=r"multiples of 32.*got shape \(1, 1, 200, 200\)"):
        net.encode(torch.zeros(1, 1, 200, 200))
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 1, 16, 16))


def test_unet_rejects_non_tensor():
    with pytest.raises(TypeError, match="`x`"):
        _small()(np.zeros((1, 1, 8, 8), dtype=np.float32))


@pytest.mark.parametrize("num_blocks", [0, 6, -1])
def test_unet_rejects_num_blocks_out_of_range(encoded, num_blocks):
    net, bottleneck, skips = encoded[160]
    with pytest.raises(ValueError, match=r"`num_blocks` must be in \[1, 5\]"):
        net.decode(bottleneck, skips, num_blocks=num_blocks)
    with pytest.raises(ValueError, match="num_blocks"):
        net.decoder_block_channels(num_blocks)


def test_unet_decode_rejects_wrong_skips(encoded):
    net, bottleneck, skips = encoded[160]
    with pytest.raises(ValueError, match="skips"):
        net.decode(bottleneck, skips[:3], num_blocks=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": (8,)}, "channels"),
        ({"channels": (8, 0)}, "channels"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"upsample_mode": "trilinear"}, "upsample_mode"),
        ({"norm": "layer"}, "norm"),
        ({"act": "tanh"}, "act"),
        ({"dropout": 1.0}, "dropout"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_unet_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_unet_check_image_size():
    net = UNet()
    assert net.check_image_size(192) == (192, 192)
    assert net.check_image_size((160, 192)) == (160, 192)
    with pytest.raises(ValueError, match="image_size"):
        net.check_image_size(100)
    with pytest.raises(ValueError, match="image_size"):
        net.check_image_size((192, 192, 192))


def test_unet_3d_shapes():
    torch.manual_seed(0)
    net = UNet(1, 2, channels=(4, 8, 8), spatial_dims=3, upsample_mode="trilinear")
    x = torch.randn(2, 1, 8, 8, 4)
    bottleneck, skips = net.encode(x)
    assert tuple(bottleneck.shape) == (2, 8, 2, 2, 1)
    assert tuple(net.decode(bottleneck, skips, num_blocks=1).shape) == (2, 8, 4, 4, 2)
    assert tuple(net(x).shape) == (2, 2, 8, 8, 4)
    with pytest.raises(ValueError, match="5-D"):
        net(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": "instance"}, {"norm": "none"}, {"act": "leakyrelu"}, {"upsample_mode": "bilinear"},
     {"dropout": 0.2}, {"up_kernel_size": 3}],
)
def test_unet_options_run(kwargs):
    net = _small(**kwargs)
    out = net(torch.randn(2, 1, 8, 12))
    assert tuple(out.shape) == (2, 3, 8, 12)
    assert torch.isfinite(out).all()
    if "dropout" in kwargs:
        assert any(isinstance(m, torch.nn.Dropout) for m in net.modules())


@pytest.mark.parametrize(("mode", "nearest"), [("nearest", True), ("bilinear", False)])
def test_unet_decoder_upsamples_by_two_with_mode(mode, nearest):
    net = _small(upsample_mode=mode)
    block = net.decoder_blocks[0]
    seen = []
    block.up_conv.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    x = torch.rand(1, 8, 2, 3)
    block(x, torch.rand(1, 8, 4, 6))
    repeated = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert tuple(seen[0].shape) == (1, 8, 4, 6)
    assert torch.equal(seen[0], repeated) is nearest


@pytest.mark.parametrize("training", [True, False])
def test_unet_channels_last_matches_contiguous(training):
    net = _small().train(training)
    x = torch.randn(2, 1, 16, 16)
    expected = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_unet_autocast_bfloat16_cpu():
    net = _small().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    corr = torch.corrcoef(torch.stack([out.float().flatten(), reference.flatten()]))[0, 1]
    assert corr > 0.99


def test_unet_backward_reaches_every_parameter():
    net = _small()
    net(torch.randn(2, 1, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.slow
def test_unet_torch_compile_matches_eager():
    torch._dynamo.reset()
    net = _small().eval()
    x = torch.randn(2, 1, 8, 8)
    # aot_eager: full-graph capture and AOT autograd without the (slow) C++ code generation
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-5)
    net.train()
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
