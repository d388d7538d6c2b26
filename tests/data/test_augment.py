"""Tests of contrastlocal.data.augment: oracles, properties, identity at zero strength, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from contrastlocal.data import augment as A  # noqa: E402, N812
from tests._reference_augment import (  # noqa: E402
    crop_resize_reference,
    intensity_reference,
    warp_reference,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 4, c: int = 1, h: int = 20, w: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


# ------------------------------------------------------------------ deterministic kernels
def test_adjust_intensity_matches_reference() -> None:
    x = _images(3, 2, 6, 7)
    shift = torch.tensor([0.2, -0.1, 0.0])
    factor = torch.tensor([1.3, 0.7, 1.0])
    for clip in [(0.0, 1.5), None]:
        out = A.adjust_intensity(x, shift, factor, clip=clip)
        for i in range(3):
            ref = intensity_reference(x[i].numpy(), float(shift[i]), float(factor[i]), clip)
            np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(12, 12), (9, 14)])
def test_warp_matches_reference(h: int, w: int) -> None:
    x = _images(3, 2, h, w).double()
    g = _gen(1)
    ang = torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    theta = torch.zeros(3, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.cos(ang) * 0.9
    theta[:, 0, 1] = -torch.sin(ang) * 0.8
    theta[:, 1, 0] = torch.sin(ang) * 1.1
    theta[:, 1, 1] = torch.cos(ang)
    theta[:, :, 2] = torch.rand(3, 2, generator=g, dtype=torch.float64) * 0.4 - 0.2
    disp = torch.randn(3, 2, h, w, generator=g, dtype=torch.float64) * 1.5
    for d in (None, disp):
        out = A.warp(x, theta, d)
        for i in range(3):
            ref = warp_reference(
                x[i].numpy(), theta[i].numpy(), None if d is None else d[i].numpy()
            )
            np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-9, atol=1e-9)


def test_crop_resize_matches_reference() -> None:
    x = _images(3, 1, 24, 18).double()
    corners = torch.tensor([[0.0, 0.0], [0.1, 0.35], [0.4, 0.45]], dtype=torch.float64)
    out = A.crop_resize(x, corners, 0.5)
    for i in range(3):
        ref = crop_resize_reference(x[i].numpy(), tuple(corners[i].tolist()), 0.5)
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ random views
def test_global_views_crop_and_intensity_ranges() -> None:
    # a ramp in x: bilinear interpolation of a linear function is exact, so each output row
    # reveals the crop's x position and scale; intensity off to read the geometry only
    n, s = 64, 48
    ramp = torch.arange(s, dtype=torch.float64).expand(n, 1, s, s).clone()
    out = A.global_views(ramp, _gen(2), brightness=0.0, contrast=0.0, clip=None)
    f = 100 / 192
    slope = out[:, 0, s // 2, 2] - out[:, 0, s // 2, 1]
    torch.testing.assert_close(slope, torch.full((n,), f, dtype=torch.float64))
    x0 = out[:, 0, s // 2, 0] - 0.5 * f + 0.5  # left crop edge in pixels
    assert float(x0.min()) >= 10 / 192 * s - 1e-9
    assert float(x0.max()) <= 69 / 192 * s + 1e-9
    assert float(x0.std()) > 1.0  # corners vary per image
    # intensity only: y = c x + d + (1 - c) mean(x); recover c, d per image
    x = _images(n, 1, 16, 16, seed=3).double()
    y = A.global_views(x, _gen(4), crop_fraction=1.0, corner_range=(0.0, 0.0), clip=None)
    xc = x - x.mean(dim=(1, 2, 3), keepdim=True)
    c = (y * xc).sum(dim=(1, 2, 3)) / (xc * xc).sum(dim=(1, 2, 3))
    d = y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    torch.testing.assert_close(
        y,
        c.reshape(n, 1, 1, 1) * xc + (x + d.reshape(n, 1, 1, 1)).mean(dim=(1, 2, 3), keepdim=True),
    )
    assert float(c.min()) >= 0.7 - 1e-9
    assert float(c.max()) <= 1.3 + 1e-9
    assert float(d.abs().max()) <= 0.3 + 1e-9
    # independent per image, and not the original's correlated c = 1 + d
    assert float(c.std()) > 0.1
    assert float(d.std()) > 0.1
    assert float((c - 1 - d).abs().max()) > 0.1


def test_global_views_clip() -> None:
    x = _images(16, 1, 16, 16) * 3 - 1
    y = A.global_views(x, _gen())
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.5


def test_intensity_views_pixel_aligned() -> None:
    # every view is a per-image affine map of the input: y = a x + b exactly at every pixel
    x = _images(5, 1, 16, 16).double()
    out = A.two_views({"images": x, "image_ids": torch.arange(5)}, _gen(5), kind="local", clip=None)
    for view in (out["images"][:5], out["images"][5:]):
        for i in range(5):
            a, b = np.polyfit(x[i].flatten().numpy(), view[i].flatten().numpy(), 1)
            np.testing.assert_allclose(view[i].numpy(), a * x[i].numpy() + b, atol=1e-10)
    assert not torch.equal(out["images"][:5], out["images"][5:])


@pytest.mark.parametrize(
    "call",
    [
        lambda x, g: A.global_views(
            x,
            g,
            crop_fraction=1.0,
            corner_range=(0.0, 0.0),
            brightness=0.0,
            contrast=0.0,
            clip=None,
        ),
        lambda x, g: A.intensity_views(x, g, brightness=0.0, contrast=0.0, clip=None),
        lambda x, g: A.geometric_augment(
            x,
            None,
            g,
            rotation_degrees=0.0,
            scale_range=(1.0, 1.0),
            flip=False,
            rotation_step_degrees=0.0,
            elastic_sigma=0.0,
        )[0],
        lambda x, g: A.mixup(x, x, g, alpha=0.0)[0],
        lambda x, g: A.color_jitter(x, g, brightness=0.0, contrast=0.0, saturation=0.0, clip=None),
        lambda x, g: A.random_crop(x, None, g, size=(x.shape[2], x.shape[3]))[0],
    ],
)
def test_zero_strength_is_identity(call) -> None:
    x = _images(3, 3, 10, 12) * 2 - 0.5
    out = call(x, _gen())
    assert torch.equal(out, x)


# ------------------------------------------------------------------ geometric
def _pixel_matrices(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    d = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64))
    return d @ theta[:, :, :2].double() @ torch.linalg.inv(d)


def test_geometric_params_options() -> None:
    h, w = 16, 24
    theta, disp = A.geometric_params(400, h, w, _gen(6), elastic_sigma=0.0, dtype=torch.float64)
    assert disp is None
    torch.testing.assert_close(theta[:, :, 2], torch.zeros(400, 2, dtype=torch.float64))
    m = _pixel_matrices(theta, h, w)
    counts = dict.fromkeys(["identity", "rotation", "zoom", "flip", "step"], 0)
    for a in m:
        det = float(torch.linalg.det(a))
        if torch.allclose(a, torch.eye(2, dtype=torch.float64)):
            counts["identity"] += 1
        elif det < 0:
            assert torch.allclose(a, torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64)))
            counts["flip"] += 1
        elif float(a[0, 0]) > 0 and abs(float(a[0, 1])) < 1e-12 and abs(float(a[1, 0])) < 1e-12:
            s = 1 / float(a[0, 0])
            assert torch.isclose(a[0, 0], a[1, 1])
            assert 0.95 - 1e-9 <= s <= 1.05 + 1e-9
            counts["zoom"] += 1
        else:
            assert abs(det - 1) < 1e-9  # a rotation
            ang = math.degrees(math.atan2(float(a[1, 0]), float(a[0, 0])))
            if abs(ang) <= 15 + 1e-9:
                counts["rotation"] += 1
            else:
                k = ang / 45
                assert abs(k - round(k)) < 1e-9
                counts["step"] += 1
    # 1/5 each (flip only half of its 1/5; k-step hits identity 1/8 and |angle| <= 15 never else)
    assert counts["flip"] > 15
    assert counts["zoom"] > 40
    assert counts["rotation"] > 40
    assert counts["step"] > 40
    assert counts["identity"] > 80


def test_geometric_params_elastic_field() -> None:
    _, disp = A.geometric_params(200, 32, 32, _gen(7), elastic_sigma=5.0)
    assert disp is not None
    assert disp.shape == (200, 2, 32, 32)
    assert 2.5 < float(disp.std()) < 6.0  # coarse N(0, 5^2) control points, upsampled
    # smooth: neighbouring pixels move almost together
    assert float((disp[..., 1:] - disp[..., :-1]).abs().max()) < 5.0
    _, tail = A.geometric_params(20, 16, 16, _gen(8), elastic_tail=True)
    moved = tail.flatten(1).abs().amax(dim=1) > 0
    n0 = int(torch.argmax(moved.to(torch.int64)))
    assert 1 <= n0 <= 18
    assert bool(moved[n0:].all())
    assert not bool(moved[:n0].any())


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.sampled_from([(32, 32), (24, 40)]))
def test_geometric_labels_keep_label_set_and_align(seed: int, hw: tuple[int, int]) -> None:
    h, w = hw
    g = _gen(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2).to(torch.int64)
    labels = torch.stack([blob * 3, blob * 5 + (xx > w // 2).to(torch.int64)])
    images = labels[:, None].to(torch.float32)
    xa, ya = A.geometric_augment(images, labels, g)
    assert ya.dtype == labels.dtype
    assert ya.shape == labels.shape
    for i in range(2):
        assert set(ya[i].unique().tolist()) <= set(labels[i].unique().tolist()) | {0}
    # the image (= label map) and the labels went through the same grid
    agree = (xa[:, 0].round().to(torch.int64) == ya).double().mean()
    assert float(agree) > 0.9


def test_geometric_same_grid_as_params_and_warp() -> None:
    x = _images(4, 2, 16, 16)
    lab = torch.randint(0, 4, (4, 16, 16), generator=_gen(9))
    xa, ya = A.geometric_augment(x, lab, _gen(10))
    theta, disp = A.geometric_params(4, 16, 16, _gen(10))
    torch.testing.assert_close(xa, A.warp(x, theta, disp))
    ref = A.warp(lab[:, None].float(), theta, disp, mode="nearest")[:, 0].round().long()
    assert torch.equal(ya, ref)


def test_geometric_onehot_mode() -> None:
    lab = torch.randint(0, 3, (3, 16, 16), generator=_gen(11))
    x = _images(3, 1, 16, 16)
    _, soft = A.geometric_augment(x, lab, _gen(12), label_mode="onehot", num_classes=3)
    assert soft.shape == (3, 3, 16, 16)
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(3, 16, 16))
    assert float(soft.min()) >= -1e-6


# ------------------------------------------------------------------ mixup, RGB
def test_mixup_convex_combination() -> None:
    x = _images(6, 1, 8, 8)
    lab = torch.nn.functional.one_hot(torch.randint(0, 3, (6, 8, 8), generator=_gen()), 3)
    lab = lab.permute(0, 3, 1, 2).float()
    xm, ym = A.mixup(x, lab, _gen(13), alpha=0.4)
    torch.testing.assert_close(ym.sum(dim=1), torch.ones(6, 8, 8))
    # each mixed image is lam * x_i + (1 - lam) * x_j for some j, with the same lam as labels
    for i in range(6):
        ok = False
        for j in range(6):
            d = x[i] - x[j]
            if float(d.abs().max()) < 1e-6:
                ok = ok or torch.allclose(xm[i], x[i])
                continue
            lam = float(((xm[i] - x[j]) * d).sum() / (d * d).sum())
            if torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5):
                ok = ok or (
                    0 <= lam <= 1
                    and torch.allclose(ym[i], lam * lab[i] + (1 - lam) * lab[j], atol=1e-5)
                )
        assert ok


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.4, 1.0, 3.0])
def test_mixup_device_beta_draws_follow_beta(alpha: float) -> None:
    # the accelerator path of mixup draws Beta(alpha, alpha) with torch ops only; its law is
    # checked here with a CPU generator (Kolmogorov-Smirnov against scipy's Beta CDF, fixed seed)
    from scipy import stats

    from contrastlocal.data.augment._mixup import _beta_on_device

    draws = _beta_on_device(alpha, 20000, torch.Generator().manual_seed(3))
    assert draws.dtype == torch.float64
    assert draws.shape == (20000,)
    assert bool(torch.isfinite(draws).all())
    assert float(draws.min()) >= 0.0
    assert float(draws.max()) <= 1.0
    if alpha >= 0.2:
        assert stats.kstest(draws.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    else:  # float64 rounds ~8 % of Beta(0.05, 0.05) draws to 1.0, NumPy's sampler too: compare
        reference = np.random.default_rng(0).beta(alpha, alpha, size=20000)
        assert stats.ks_2samp(draws.numpy(), reference).pvalue > 1e-3
    again = _beta_on_device(alpha, 20000, torch.Generator().manual_seed(3))
    assert torch.equal(draws, again)


def test_color_jitter_and_random_crop() -> None:
    x = _images(4, 3, 12, 10)
    out = A.color_jitter(x, _gen(14))
    assert out.shape == x.shape
    assert float(out.min()) >= 0
    assert float(out.max()) <= 1
    assert not torch.equal(out, x)
    lab = torch.arange(12 * 10).reshape(1, 12, 10).expand(4, 12, 10).clone()
    xc, yc = A.random_crop(x, lab, _gen(15), size=(5, 7))
    assert xc.shape == (4, 3, 5, 7)
    assert yc.shape == (4, 5, 7)
    for i in range(4):
        oy, ox = divmod(int(yc[i, 0, 0]), 10)
        assert torch.equal(xc[i], x[i, :, oy : oy + 5, ox : ox + 7])
        assert torch.equal(yc[i], lab[i, oy : oy + 5, ox : ox + 7])


def test_random_crop_by_device_gather_equals_the_slices() -> None:
    """The gather used for a device generator (no host read) cuts the same windows."""
    from contrastlocal.data.augment._crop import _gather_crops

    x = _images(5, 3, 12, 10).contiguous(memory_format=torch.channels_last)
    lab = torch.arange(5 * 12 * 10).reshape(5, 12, 10)
    oy, ox = torch.tensor([0, 7, 3, 7, 1]), torch.tensor([3, 0, 2, 3, 1])
    xc, yc = _gather_crops(x, lab, oy, ox, (5, 7))
    assert xc.shape == (5, 3, 5, 7)
    assert yc is not None
    for i, (y, q) in enumerate(zip(oy.tolist(), ox.tolist(), strict=True)):
        assert torch.equal(xc[i], x[i, :, y : y + 5, q : q + 7])
        assert torch.equal(yc[i], lab[i, y : y + 5, q : q + 7])
    assert _gather_crops(x, None, oy, ox, (5, 7))[1] is None


@pytest.mark.gpu
def test_random_crop_with_a_cuda_generator_does_not_synchronise() -> None:
    x = _images(4, 3, 12, 10).cuda()
    lab = torch.arange(12 * 10).reshape(1, 12, 10).expand(4, 12, 10).clone().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        xc, yc = A.random_crop(x, lab, g, size=(5, 7))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert yc is not None
    for i in range(4):
        oy, ox = divmod(int(yc[i, 0, 0]), 10)
        assert torch.equal(xc[i], x[i, :, oy : oy + 5, ox : ox + 7])


# ------------------------------------------------------------------ two_views, common properties
def test_two_views_layout_and_metadata() -> None:
    batch = {
        "images": _images(4, 1, 16, 16),
        "image_ids": torch.tensor([10, 11, 12, 13]),
        "volume_ids": torch.tensor([0, 0, 1, 1]),
        "partition_ids": torch.tensor([0, 1, 0, 1]),
        "positions": torch.tensor([0.0, 1.0, 0.0, 1.0]),
    }
    out = A.two_views(batch, _gen(16), kind="global")
    assert out["images"].shape == (8, 1, 16, 16)
    assert out["image_ids"].tolist() == [10, 11, 12, 13] * 2
    assert out["volume_ids"].tolist() == [0, 0, 1, 1] * 2
    assert out["partition_ids"].dtype == torch.int64
    assert out["positions"].dtype == torch.float32
    assert out["view_ids"].tolist() == [0] * 4 + [1] * 4
    orig = A.two_views(batch, _gen(16), kind="local", include_original=True)
    assert torch.equal(orig["images"][:4], batch["images"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["global", "local", "geometric", "jitter"])
def test_augment_preserves_shape_dtype_device_and_reproduces(kind: str, dtype) -> None:
    x = _images(3, 3, 16, 16).to(dtype)

    def run(g: torch.Generator) -> torch.Tensor:
        if kind == "global":
            return A.global_views(x, g)
        if kind == "local":
            return A.intensity_views(x, g)
        if kind == "geometric":
            return A.geometric_augment(x, None, g)[0]
        return A.color_jitter(x, g)

    a, b = run(_gen(17)), run(_gen(17))
    assert a.shape == x.shape
    assert a.dtype == dtype
    assert a.device == x.device
    assert torch.equal(a, b)
    assert not torch.equal(a, run(_gen(18)))


@pytest.mark.gpu
def test_augment_cpu_generator_same_on_cuda() -> None:
    x = _images(3, 1, 32, 32)
    lab = torch.randint(0, 4, (3, 32, 32), generator=_gen())
    cpu = A.geometric_augment(x, lab, _gen(19))
    gpu = A.geometric_augment(x.cuda(), lab.cuda(), _gen(19))
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=1e-4)
    assert float((gpu[1].cpu() != cpu[1]).double().mean()) < 0.01
    torch.testing.assert_close(
        A.global_views(x.cuda(), _gen(20)).cpu(), A.global_views(x, _gen(20)), atol=1e-4, rtol=1e-4
    )


def test_augment_bad_input() -> None:
    x = _images(2, 1, 8, 8)
    g = _gen()
    with pytest.raises(ValueError, match="images"):
        A.global_views(x[0], g)
    with pytest.raises(TypeError, match="images"):
        A.intensity_views(x.to(torch.int64), g)
    with pytest.raises(TypeError, match="generator"):
        A.global_views(x, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="corner_range"):
        A.global_views(x, g, corner_range=(0.2, 0.6), crop_fraction=0.5)
    with pytest.raises(ValueError, match="crop_fraction"):
        A.global_views(x, g, crop_fraction=0.0)
    with pytest.raises(ValueError, match="contrast"):
        A.intensity_views(x, g, contrast=1.0)
    with pytest.raises(ValueError, match="brightness"):
        A.intensity_views(x, g, brightness=-0.1)
    with pytest.raises(ValueError, match="labels"):
        A.geometric_augment(x, torch.zeros(2, 8, 7, dtype=torch.int64), g)
    with pytest.raises(TypeError, match="labels"):
        A.geometric_augment(x, torch.zeros(2, 8, 8), g)
    with pytest.raises(ValueError, match="num_classes"):
        A.geometric_augment(x, torch.zeros(2, 8, 8, dtype=torch.int64), g, label_mode="onehot")
    with pytest.raises(ValueError, match="theta"):
        A.warp(x, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="size"):
        A.random_crop(x, None, g, size=(9, 2))
    with pytest.raises(ValueError, match="images"):
        A.color_jitter(x, g)
    with pytest.raises(ValueError, match="image_ids"):
        A.two_views({"images": x}, g)
    with pytest.raises(ValueError, match="kind"):
        A.two_views({"images": x, "image_ids": torch.arange(2)}, g, kind="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partition_ids"):
        A.two_views(
            {"images": x, "image_ids": torch.arange(2), "partition_ids": torch.arange(3)}, g
        )
