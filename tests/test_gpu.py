"""CUDA checks: the losses, the network, the augmentation and the training engine on a GPU.

Every test here is ``gpu``-marked: on a machine without CUDA they are skipped with the reason
stated (see ``tests/conftest.py``). Values on the GPU are compared with the CPU in float64, so the
CUDA code paths compute the same functions, not merely something finite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.data import augment as A  # noqa: E402, N812
from contrastlocal.functional import global_contrastive_loss  # noqa: E402
from contrastlocal.models import UNet  # noqa: E402
from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss  # noqa: E402
from contrastlocal.training import (  # noqa: E402
    evaluate,
    finetune,
    pretrain_global,
    pretrain_local,
)

from .training._helpers import tiny_config, volumes  # noqa: E402

pytestmark = pytest.mark.gpu

VOLUMES, PARTITIONS = 10, 4


@pytest.fixture(autouse=True)
def _exact(exact_float32: None) -> None:
    """Full float32 matrix/convolution arithmetic (no TF32) while a test compares with the CPU."""


def _global_batch(seed: int, d: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stage-1 layout: 10 volumes x 4 partitions x 2 views = 80 rows."""
    g = torch.Generator().manual_seed(seed)
    n = VOLUMES * PARTITIONS
    z = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    image = torch.arange(n).repeat(2)
    partition = (torch.arange(n) % PARTITIONS).repeat(2)
    return z, image, partition


@pytest.mark.parametrize("strategy", ["random", "domain_negatives", "domain"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_global_loss_on_cuda_equals_cpu_float64(strategy, reduction):
    z, image, partition = _global_batch(1)
    loss = GlobalContrastiveLoss(strategy=strategy, temperature=0.1, reduction=reduction)
    z64 = z.clone().requires_grad_(True)
    ref = loss(z64, image, partition)
    ref.backward()
    z32 = z.float().cuda().requires_grad_(True)
    got = loss(z32, image.cuda(), partition.cuda())
    got.backward()
    assert got.device.type == "cuda"
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double().cpu(), ref.detach(), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(z32.grad.double().cpu(), z64.grad, rtol=1e-3, atol=1e-6)


def test_global_loss_on_cuda_functional_none_equals_cpu():
    z, image, partition = _global_batch(2, d=16)
    ref = global_contrastive_loss(z, image_ids=image, partition_ids=partition,
                                  strategy="domain", reduction="none")
    got = global_contrastive_loss(z.cuda(), image_ids=image.cuda(), partition_ids=partition.cuda(),
                                  strategy="domain", reduction="none")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_global_loss_under_cuda_autocast_is_float32_and_close(dtype):
    z, image, partition = _global_batch(3)
    loss = GlobalContrastiveLoss(strategy="domain")
    ref = loss(z, image, partition)
    x = z.float().cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=dtype):
        got = loss(x.to(dtype), image.cuda(), partition.cuda())
    got.backward()
    assert got.dtype == torch.float32
    assert torch.isfinite(x.grad).all()
    # the embeddings themselves were rounded to dtype: a loose but meaningful bound
    assert abs(got.item() - ref.item()) < 2e-2 * abs(ref.item())


@pytest.mark.parametrize("strategy", ["random", "domain"])
def test_local_loss_on_cuda_equals_cpu_float64(strategy):
    g = torch.Generator().manual_seed(4)
    n = 3 * PARTITIONS  # the original L^D batch: 3 volumes x 4 partitions, two views
    feats = torch.randn(2 * n, 8, 24, 24, generator=g, dtype=torch.float64)
    image = torch.arange(n).repeat(2)
    partition = (torch.arange(n) % PARTITIONS).repeat(2)
    volume = (torch.arange(n) // PARTITIONS).repeat(2)
    loss = LocalContrastiveLoss(strategy=strategy, in_channels=8, projection_dim=16).double()
    f64 = feats.clone().requires_grad_(True)
    ref = loss(f64, image, partition, volume)
    ref.backward()
    ref_wgrad = next(loss.parameters()).grad.clone()
    loss.zero_grad()
    loss_cuda = loss.float().cuda()
    f32 = feats.float().cuda().requires_grad_(True)
    got = loss_cuda(f32, image.cuda(), partition.cuda(), volume.cuda())
    got.backward()
    torch.testing.assert_close(got.double().cpu(), ref.detach(), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(f32.grad.double().cpu(), f64.grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(
        next(loss_cuda.parameters()).grad.double().cpu(), ref_wgrad, rtol=1e-3, atol=1e-6
    )


def test_unet_on_cuda_equals_cpu_and_runs_in_bf16_channels_last():
    torch.manual_seed(0)
    net = UNet(channels=(8, 16, 32, 32)).eval()
    x = torch.randn(4, 1, 64, 64)
    ref = net(x)
    net_cuda = net.cuda()
    got = net_cuda(x.cuda())
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-4)

    net_cuda.train().to(memory_format=torch.channels_last)
    xc = x.cuda().to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net_cuda(xc)
    out.float().square().mean().backward()
    assert out.shape == (4, 4, 64, 64)
    assert all(torch.isfinite(p.grad).all() for p in net_cuda.parameters() if p.grad is not None)


def test_augmentations_on_cuda_keep_device_dtype_and_match_cpu():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 48, 48, generator=gen)
    rgb = torch.rand(6, 3, 48, 96, generator=gen)
    lab = torch.randint(0, 4, (6, 48, 48), generator=gen)
    onehot = torch.nn.functional.one_hot(lab, 4).permute(0, 3, 1, 2).float()
    cases = {
        "global_views": lambda dev, g: A.global_views(x.to(dev), g),
        "intensity_views": lambda dev, g: A.intensity_views(x.to(dev), g),
        "color_jitter": lambda dev, g: A.color_jitter(rgb.to(dev), g),
        "random_crop": lambda dev, g: A.random_crop(rgb.to(dev), None, g, size=(32, 64))[0],
        "mixup": lambda dev, g: A.mixup(x.to(dev), onehot.to(dev), g)[0],
    }
    for name, fn in cases.items():
        cpu = fn("cpu", torch.Generator().manual_seed(7))
        gpu = fn("cuda", torch.Generator().manual_seed(7))
        assert gpu.device.type == "cuda", name
        assert gpu.dtype == cpu.dtype == torch.float32, name
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4, msg=name)
    img, out_lab = A.geometric_augment(x.cuda(), lab.cuda(), torch.Generator().manual_seed(8))
    assert img.device.type == out_lab.device.type == "cuda"
    assert set(out_lab.unique().tolist()) <= set(lab.unique().tolist())
    batch = {"images": x.cuda(), "image_ids": torch.arange(6).cuda(),
             "volume_ids": torch.zeros(6, dtype=torch.long).cuda(),
             "partition_ids": (torch.arange(6) % 3).cuda()}
    views = A.two_views(batch, torch.Generator().manual_seed(9))
    assert views["images"].shape == (12, 1, 48, 48)
    assert all(v.device.type == "cuda" for v in views.values())


def test_mixup_with_a_cuda_generator_does_not_synchronise():
    gen = torch.Generator(device="cuda").manual_seed(4)
    x = torch.rand(8, 1, 32, 32, device="cuda")
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (8, 32, 32), device="cuda"), 3)
    onehot = onehot.permute(0, 3, 1, 2).float()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        xm, ym = A.mixup(x, onehot, gen, alpha=0.2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(ym.sum(dim=1), torch.ones(8, 32, 32, device="cuda"))
    assert xm.device.type == "cuda"


def _on_cuda(net: torch.nn.Module) -> bool:
    return all(p.device.type == "cuda" for p in net.parameters())


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_three_stages_on_cuda(tmp_path, amp):
    cfg = tiny_config(runtime={"device": "cuda", "amp": amp, "progress": False})
    data = volumes()
    g = pretrain_global(data["pretrain"], cfg, out=tmp_path / "global")
    assert _on_cuda(g.network)
    loc = pretrain_local(data["pretrain"], cfg, encoder=g.network, out=tmp_path / "local")
    ft = finetune(data["train"], data["val"], cfg, init=loc.network, out=tmp_path / "ft")
    for res in (g, loc, ft):
        assert res.history
        assert all(math.isfinite(r["loss"]) for r in res.history if "loss" in r)
    assert (tmp_path / "ft" / "final.pt").exists()
    # the checkpoint written on the GPU resumes (as a finished stage) on the GPU
    again = finetune(data["train"], data["val"], cfg, init=loc.network, out=tmp_path / "ft")
    for key, value in ft.network.state_dict().items():
        torch.testing.assert_close(again.network.state_dict()[key], value, rtol=0, atol=0)


def test_evaluate_on_cuda_equals_cpu():
    cfg = tiny_config(runtime={"device": "cpu", "progress": False})
    data = volumes()
    net = finetune(data["train"], data["val"], cfg).network.eval()
    cpu = evaluate(net, data["test"], num_classes=4, compute_hd95=False)
    gpu = evaluate(net.cuda(), data["test"], num_classes=4, device="cuda", compute_hd95=False)
    np.testing.assert_allclose(gpu.mean_dice, cpu.mean_dice, rtol=0, atol=1e-3)


@pytest.mark.parametrize("ids_on", ["cuda", "cpu"])
def test_losses_step_without_host_synchronisation(ids_on):
    """Forward and backward of both losses under set_sync_debug_mode("error") (no .item())."""
    z, image, partition = _global_batch(4)
    volume = torch.arange(image.shape[0]) // PARTITIONS % VOLUMES
    global_loss = GlobalContrastiveLoss(strategy="domain")
    local_loss = LocalContrastiveLoss("domain", in_channels=4).cuda()
    features = torch.randn(image.shape[0], 4, 16, 16, device="cuda", requires_grad=True)
    x = z.float().cuda().requires_grad_(True)
    ids = [t.to(ids_on) for t in (image, partition, volume)]

    def step() -> None:
        loss = global_loss(x, ids[0], ids[1]) + local_loss(features, *ids)
        loss.backward()

    step()  # first call: lazy CUDA initialisation, caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
