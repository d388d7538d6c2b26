"""Tests of the projection heads, stage networks, hand-over and freezing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.models import (  # noqa: E402
    GlobalPretrainNetwork,
    GlobalProjectionHead,
    LocalPretrainNetwork,
    LocalProjectionHead,
    UNet,
    decoder_block_keys,
    encoder_keys,
    freeze_encoder,
    transfer_decoder,
    transfer_encoder,
    unfreeze_encoder,
)

from ._reference import local_head_train_mode  # noqa: E402

SIZE = 64  # smallest size the default UNet takes twice over (2 ** 5 = 32)
TENSORS_PER_CONV = 7  # weight, bias, BN gamma, beta, running mean, running var, batch count


def _unet(seed: int, **kwargs: object) -> UNet:
    torch.manual_seed(seed)
    return UNet(**kwargs)  # type: ignore[arg-type]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _randomise_buffers(module: torch.nn.Module, seed: int, *, parameters: bool = False) -> None:
    """Random running statistics (and, with `parameters`, random values for every parameter)."""
    gen = torch.Generator().manual_seed(seed)
    if parameters:
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(seed)


# ------------------------------------------------------------------------------- heads
@pytest.mark.parametrize(("size", "in_features"), [(192, 4608), (160, 3200)])
def test_global_pretrain_network_flattened_size(size, in_features):
    net = GlobalPretrainNetwork(UNet(), image_size=size)
    assert net.projection_head.in_features == in_features
    head_params = sum(p.numel() for p in net.projection_head.parameters())
    assert head_params == in_features * 1024 + 1024 * 128
    wide = GlobalPretrainNetwork(UNet(), image_size=size, hidden_features=3200)
    assert sum(p.numel() for p in wide.projection_head.parameters()) == (
        in_features * 3200 + 3200 * 128
    )


def test_global_projection_head_matches_equation():
    torch.manual_seed(0)
    head = GlobalProjectionHead(2 * 3 * 3, hidden_features=7, out_features=5).double()
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    w1 = head.hidden.weight.detach().numpy()
    w2 = head.out.weight.detach().numpy()
    flat = x.reshape(4, -1).numpy()
    expected = np.maximum(flat @ w1.T, 0.0) @ w2.T
    np.testing.assert_allclose(head(x).detach().numpy(), expected, rtol=1e-12)
    assert head.hidden.bias is None
    assert head.out.bias is None


def test_global_projection_head_rejects_wrong_size():
    head = GlobalProjectionHead(10)
    with pytest.raises(ValueError, match="in_features = 10"):
        head(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="hidden_features"):
        GlobalProjectionHead(10, hidden_features=0)


def test_local_projection_head_matches_equation():
    torch.manual_seed(0)
    head = LocalProjectionHead(3, out_channels=2).double().train()
    with torch.no_grad():
        head.conv1.norm.weight.uniform_(0.5, 1.5)
        head.conv1.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    expected = local_head_train_mode(
        x.numpy(),
        head.conv1.conv.weight.detach().numpy()[:, :, 0, 0],
        head.conv1.norm.weight.detach().numpy(),
        head.conv1.norm.bias.detach().numpy(),
        head.conv2.conv.weight.detach().numpy()[:, :, 0, 0],
        eps=1e-3,
    )
    np.testing.assert_allclose(head(x).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    # two 1x1 convs without bias, BN gamma/beta on the first
    assert sum(p.numel() for p in head.parameters()) == 3 * 3 + 2 * 3 + 3 * 2


def test_local_projection_head_default_keeps_channels():
    head = LocalProjectionHead(64)
    assert sum(p.numel() for p in head.parameters()) == 64 * 64 + 2 * 64 + 64 * 64
    assert head.conv1.conv.bias is None
    assert head.conv2.conv.bias is None


# ------------------------------------------------------------------------ stage networks
def test_global_pretrain_network_forward_uses_encoder_only():
    torch.manual_seed(0)
    net = GlobalPretrainNetwork(UNet(), image_size=SIZE, out_features=16)
    x = torch.randn(3, 1, SIZE, SIZE)
    out = net(x)
    assert tuple(out.shape) == (3, 16)
    bottleneck, _ = net.backbone.encode(x)
    torch.testing.assert_close(out, net.projection_head(bottleneck))
    out.sum().backward()
    assert all(p.grad is not None for p in net.backbone.encoder_levels.parameters())
    assert all(p.grad is None for p in net.backbone.decoder_blocks.parameters())
    assert all(p.grad is None for p in net.backbone.head.parameters())


def test_global_pretrain_network_rejects_other_sizes():
    net = GlobalPretrainNetwork(UNet(), image_size=SIZE)
    with pytest.raises(ValueError, match=r"image_size = \(64, 64\)"):
        net(torch.zeros(1, 1, 96, 96))
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 1, 50, 50))
    with pytest.raises(ValueError, match="image_size"):
        GlobalPretrainNetwork(UNet(), image_size=100)
    with pytest.raises(TypeError, match="backbone"):
        GlobalPretrainNetwork(torch.nn.Linear(2, 2), image_size=SIZE)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 4, 5])
def test_local_pretrain_network_shapes(num_blocks):
    torch.manual_seed(0)
    net = LocalPretrainNetwork(UNet(), num_decoder_blocks=num_blocks)
    channels = (128, 128, 64, 32, 16)[num_blocks - 1]
    side = SIZE // (16, 8, 4, 2, 1)[num_blocks - 1]
    out = net(torch.randn(2, 1, SIZE, SIZE))
    assert tuple(out.shape) == (2, channels, side, side)
    assert net.feature_shape(SIZE) == (channels, side, side)
    side192 = 192 // (16, 8, 4, 2, 1)[num_blocks - 1]
    assert net.feature_shape(192) == (channels, side192, side192)


def test_local_pretrain_network_forward_is_g2_of_decoder_block():
    torch.manual_seed(0)
    net = LocalPretrainNetwork(UNet(), num_decoder_blocks=2, out_channels=8).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    bottleneck, skips = net.backbone.encode(x)
    expected = net.projection_head(net.backbone.decode(bottleneck, skips, num_blocks=2))
    torch.testing.assert_close(net(x), expected)
    assert net(x).shape[1] == 8
    net.train()
    net(x).sum().backward()
    blocks = net.backbone.decoder_blocks
    assert all(p.grad is not None for p in blocks[0].parameters())
    assert all(p.grad is not None for p in blocks[1].parameters())
    assert all(p.grad is None for b in blocks[2:] for p in b.parameters())


@pytest.mark.parametrize("num_blocks", [0, 6])
def test_local_pretrain_network_rejects_num_blocks(num_blocks):
    with pytest.raises(ValueError, match="num_decoder_blocks"):
        LocalPretrainNetwork(UNet(), num_decoder_blocks=num_blocks)


# ------------------------------------------------------------------------------ hand-over
def test_encoder_and_decoder_block_keys():
    net = LocalPretrainNetwork(UNet())
    keys = encoder_keys(net)
    assert len(keys) == 6 * 2 * TENSORS_PER_CONV
    assert all(k.startswith("backbone.encoder_levels.") for k in keys)
    assert len(decoder_block_keys(net, 1)) == 3 * TENSORS_PER_CONV
    assert len(decoder_block_keys(net, 5)) == 2 * TENSORS_PER_CONV
    assert all(k.startswith("decoder_blocks.2.") for k in decoder_block_keys(UNet(), 3))
    with pytest.raises(ValueError, match="block"):
        decoder_block_keys(net, 6)
    with pytest.raises(TypeError, match="network"):
        encoder_keys(torch.nn.Linear(2, 2))


def _assert_copied_exactly(source_state, before, after, copied, source_prefix, target_prefix):
    for key, value in after.items():
        if key in copied:
            src_key = source_prefix + key[len(target_prefix) :]
            assert torch.equal(value, source_state[src_key]), key
            assert not torch.equal(value, before[key]) or key.endswith("num_batches_tracked"), key
        else:
            assert torch.equal(value, before[key]), key


def test_transfer_encoder_global_to_local_copies_exactly_the_encoder():
    source = GlobalPretrainNetwork(_unet(1), image_size=SIZE)
    _randomise_buffers(source, seed=3, parameters=True)
    target = LocalPretrainNetwork(_unet(2), num_decoder_blocks=3)
    source_before = _snapshot(source)
    before = _snapshot(target)
    copied = transfer_encoder(source, target)
    expected = {k for k in before if k.startswith("backbone.encoder_levels.")}
    assert set(copied) == expected
    assert len(copied) == 6 * 2 * TENSORS_PER_CONV
    _assert_copied_exactly(
        source.state_dict(), before, target.state_dict(), set(copied), "backbone.", "backbone."
    )
    for key, value in source.state_dict().items():
        assert torch.equal(value, source_before[key])


def test_transfer_encoder_without_buffers_copies_trainable_tensors_only():
    source = _unet(1)
    _randomise_buffers(source, seed=4, parameters=True)
    target = _unet(2)
    before = _snapshot(target)
    copied = transfer_encoder(source, target, include_buffers=False)
    assert set(copied) == {
        k for k, _ in target.named_parameters() if k.startswith("encoder_levels.")
    }
    assert len(copied) == 6 * 2 * 4
    _assert_copied_exactly(source.state_dict(), before, target.state_dict(), set(copied), "", "")


@pytest.mark.parametrize("num_blocks", [1, 3, 5])
def test_transfer_decoder_local_to_unet_copies_encoder_and_l_blocks(num_blocks):
    source = LocalPretrainNetwork(_unet(1), num_decoder_blocks=num_blocks)
    _randomise_buffers(source, seed=5, parameters=True)
    target = _unet(2, out_channels=4)
    before = _snapshot(target)
    copied = transfer_decoder(source, target)
    prefixes = ("encoder_levels.", *(f"decoder_blocks.{b}." for b in range(num_blocks)))
    assert set(copied) == {k for k in before if k.startswith(prefixes)}
    blocks = [3] * min(num_blocks, 4) + [2] * (num_blocks == 5)
    assert len(copied) == (12 + sum(blocks)) * TENSORS_PER_CONV
    _assert_copied_exactly(source.state_dict(), before, target.state_dict(), set(copied),
                           "backbone.", "")
    assert not any(k.startswith("head.") for k in copied)


def test_transfer_decoder_rejects_untrained_blocks_and_missing_count():
    source = LocalPretrainNetwork(_unet(1), num_decoder_blocks=2)
    with pytest.raises(ValueError, match="at most the 2 decoder blocks"):
        transfer_decoder(source, UNet(), num_blocks=3)
    with pytest.raises(ValueError, match="num_blocks"):
        transfer_decoder(UNet(), UNet())
    with pytest.raises(ValueError, match="num_blocks"):
        transfer_decoder(UNet(), UNet(), num_blocks=6)
    # an explicit count from a plain UNet is fine
    assert len(transfer_decoder(UNet(), UNet(), num_blocks=5)) == (12 + 14) * TENSORS_PER_CONV


def test_transfer_rejects_different_architectures():
    with pytest.raises(ValueError, match="architectures differ"):
        transfer_encoder(UNet(), UNet(channels=(16, 32, 64, 128, 128, 64)))
    with pytest.raises(ValueError, match="architectures differ"):
        transfer_encoder(UNet(), UNet(channels=(16, 32, 64, 128, 128)))
    with pytest.raises(ValueError, match="architectures differ"):
        transfer_encoder(UNet(in_channels=2), UNet(in_channels=1))
    with pytest.raises(TypeError, match="target"):
        transfer_encoder(UNet(), torch.nn.Linear(2, 2))
    # a different number of classes only changes the head: encoder and decoder transfer fine
    assert transfer_decoder(UNet(out_channels=4), UNet(out_channels=8), num_blocks=5)


def test_transfer_looks_through_compile_wrapper():
    source = _unet(1)
    target = _unet(2)
    compiled = torch.compile(target)  # no compilation happens until it is called
    copied = transfer_encoder(source, compiled)
    assert copied[0] == "encoder_levels.0.conv1.conv.weight"
    assert torch.equal(target.encoder_levels[5].conv2.conv.weight,
                       source.encoder_levels[5].conv2.conv.weight)


def test_three_stage_hand_over_chain():
    stage1 = GlobalPretrainNetwork(_unet(1), image_size=SIZE)
    stage2 = LocalPretrainNetwork(_unet(2), num_decoder_blocks=3)
    stage3 = _unet(3, out_channels=4)
    fresh3 = _snapshot(stage3)
    transfer_encoder(stage1, stage2)
    transfer_decoder(stage2, stage3)
    s1, s2, s3 = stage1.state_dict(), stage2.state_dict(), stage3.state_dict()
    for key in s3:
        if key.startswith("encoder_levels."):
            assert torch.equal(s3[key], s1["backbone." + key]), key
        elif key.startswith(("decoder_blocks.0.", "decoder_blocks.1.", "decoder_blocks.2.")):
            assert torch.equal(s3[key], s2["backbone." + key]), key
        else:
            assert torch.equal(s3[key], fresh3[key]), key


# ------------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("batchnorm", ["batch_stats", "frozen_stats"])
def test_freeze_encoder_params_get_no_grad_and_do_not_change(batchnorm):
    net = LocalPretrainNetwork(_unet(0), num_decoder_blocks=3).train()
    frozen = freeze_encoder(net, batchnorm=batchnorm)
    assert set(frozen) == {
        k for k, _ in net.named_parameters() if k.startswith("backbone.encoder_levels.")
    }
    assert len(frozen) == 6 * 2 * 4
    before = _snapshot(net)
    # an optimiser over *all* parameters: frozen ones still must not move
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(2):
        torch.manual_seed(step)
        optimiser.zero_grad()
        net(torch.randn(4, 1, SIZE, SIZE)).square().mean().backward()
        optimiser.step()
    params = dict(net.named_parameters())
    for key in frozen:
        assert params[key].grad is None, key
        assert torch.equal(params[key].detach(), before[key]), key
    trained = [k for k, p in params.items() if p.requires_grad and p.grad is not None]
    assert {k.split(".")[1] for k in trained} == {"decoder_blocks", "conv1", "conv2"}
    assert all(not torch.equal(params[k].detach(), before[k]) for k in trained)


def test_freeze_encoder_batch_stats_keeps_normalising_with_batch_statistics():
    net = LocalPretrainNetwork(_unet(0)).train()
    freeze_encoder(net, batchnorm="batch_stats")
    bn = net.backbone.encoder_levels[0].conv1.norm
    assert bn.training
    running = bn.running_mean.clone()
    x = torch.randn(4, 1, SIZE, SIZE)
    with torch.no_grad():
        alone, _ = net.backbone.encode(x[:1])
        batch, _ = net.backbone.encode(x)
    assert not torch.equal(bn.running_mean, running)  # still updated, as in training mode
    assert not torch.allclose(alone[0], batch[0])  # depends on the other rows


def test_freeze_encoder_frozen_stats_uses_running_statistics_after_train():
    net = LocalPretrainNetwork(_unet(0))
    _randomise_buffers(net, seed=7)
    freeze_encoder(net, batchnorm="frozen_stats")
    net.train()
    unet = net.backbone
    assert not any(m.training for m in unet.encoder_levels.modules())
    assert all(m.training for m in unet.decoder_blocks.modules())
    assert net.projection_head.training
    state = _snapshot(unet.encoder_levels)
    x = torch.randn(4, 1, SIZE, SIZE)
    with torch.no_grad():
        alone, _ = unet.encode(x[:1])
        batch, _ = unet.encode(x)
        unet.eval()
        evaluated, _ = unet.encode(x)
    torch.testing.assert_close(alone[0], batch[0])  # per-sample: running statistics
    torch.testing.assert_close(batch, evaluated)
    for key, value in unet.encoder_levels.state_dict().items():
        assert torch.equal(value, state[key]), key
    unet.train()
    assert not unet.encoder_levels.training


def test_unfreeze_encoder_restores_training():
    net = LocalPretrainNetwork(_unet(0))
    freeze_encoder(net, batchnorm="frozen_stats")
    names = unfreeze_encoder(net)
    assert len(names) == 48
    net.train()
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())


def test_freeze_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batchnorm"):
        freeze_encoder(UNet(), batchnorm="eval")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="network"):
        freeze_encoder(torch.nn.Linear(2, 2))


def test_stage_networks_channels_last_and_autocast():
    torch.manual_seed(0)
    net = LocalPretrainNetwork(UNet(), num_decoder_blocks=3).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, SIZE, SIZE).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16
    assert tuple(out.shape) == (2, 64, 16, 16)
    out.float().sum().backward()
    assert all(p.grad is not None for p in net.projection_head.parameters())
