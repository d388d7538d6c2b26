"""The authors'-fidelity augmentations and the Cityscapes recipe against loop references."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.data import augment as A  # noqa: E402, N812
from tests import _reference_fidelity as ref  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 4, c: int = 1, h: int = 20, w: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed), dtype=torch.float64)


# ------------------------------------------------------------------ shared intensity (§4.1)
def test_shared_intensity_matches_reference() -> None:
    x = _images(5)
    out = A.intensity_views(x, _gen(3), shared=True)
    u = float(torch.rand(1, generator=_gen(3)))  # the one draw of the call
    want = ref.shared_intensity_reference(x.numpy(), u, 0.3, 0.3)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)


def test_shared_intensity_is_one_correlated_draw() -> None:
    # with zero-mean images and no clip, x' = c (x + δ) + (1 - c) δ = c x + δ: read c and δ back
    x = _images(6) - 0.5
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    out = A.intensity_views(x, _gen(1), shared=True, clip=None)
    c = (out[:, 0, 0, 1] - out[:, 0, 0, 0]) / (x[:, 0, 0, 1] - x[:, 0, 0, 0])
    delta = out.mean(dim=(1, 2, 3))
    torch.testing.assert_close(c, torch.full_like(c, float(c[0])))
    torch.testing.assert_close(delta, torch.full_like(delta, float(delta[0])))
    torch.testing.assert_close(c, 1 + delta)  # c = 1 + δ with b = k = 0.3
    independent = A.intensity_views(x, _gen(1), clip=None).mean(dim=(1, 2, 3))
    assert float(independent.std()) > 1e-3  # the default draws per image


def test_global_views_shared_uses_one_pair() -> None:
    x = _images(4, h=24, w=24)
    out = A.global_views(x, _gen(2), shared=True, clip=None, crop_fraction=1.0,
                         corner_range=(0.0, 0.0))
    np.testing.assert_allclose(
        out.numpy(), A.intensity_views(x, _gen(2), shared=True, clip=None).numpy()
    )


# ------------------------------------------------------------------ fixed crop (§4.1, item 16)
@pytest.mark.parametrize(("h", "w"), [(40, 40), (36, 44)])
def test_fixed_crop_matches_reference(h: int, w: int) -> None:
    # corners up to 29 with a 20-pixel box: boxes past the border are cut (MM-WHS's case)
    x = _images(6, h=h, w=w)
    out = A.global_views(x, _gen(4), crop_pixels=20, corner_pixels=(2, 29))
    g = _gen(4)
    corners = torch.randint(2, 30, (6, 2), generator=g)
    shift = -0.3 + 0.6 * torch.rand(6, generator=g).double()
    factor = 0.7 + 0.6 * torch.rand(6, generator=g).double()
    assert bool((corners > min(h, w) - 20).any())  # at least one cut box is checked
    for i in range(6):
        want = ref.fixed_crop_reference(x[i].numpy(), corners[i].tolist(), 20, float(shift[i]),
                                        float(factor[i]))
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-5, atol=1e-5)


def test_fixed_crop_on_mmwhs_size_is_the_authors_box() -> None:
    # a ramp along x on 160 x 160: column j samples x0 + (j + 1/2) w_box / 160 - 1/2
    ramp = torch.arange(160, dtype=torch.float64).expand(60, 1, 160, 160).clone()
    out = A.global_views(ramp, _gen(5), crop_pixels=100, corner_pixels=(10, 69),
                         brightness=0.0, contrast=0.0, clip=None)
    first, last = out[:, 0, 0, 4], out[:, 0, 0, 100]  # both inside every box: no clamping
    width = (last - first) * 160 / 96  # the box width in pixels
    x0 = first - 4.5 * width / 160 + 0.5
    torch.testing.assert_close(x0, x0.round(), atol=1e-3, rtol=0)
    assert float(x0.min()) >= 10
    assert float(x0.max()) <= 69
    torch.testing.assert_close(width, torch.clamp(160 - x0.round(), max=100), atol=1e-3, rtol=0)
    assert bool((width < 100 - 0.5).any())  # some boxes were cut at the border


def test_fixed_crop_errors() -> None:
    with pytest.raises(ValueError, match=r"0 <= lo <= hi < 20 \(inside the 20 x 24 image\)"):
        A.global_views(_images(1, h=20, w=24), _gen(), crop_pixels=10, corner_pixels=(0, 20))
    with pytest.raises(TypeError, match=r"`crop_pixels` must be an int"):
        A.global_views(_images(1), _gen(), crop_pixels=10.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`shared` must be a bool"):
        A.intensity_views(_images(1), _gen(), shared=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ elastic tail (§4.3)
def test_elastic_tail_deforms_rows_n0_to_end() -> None:
    # §4.3: n0 uniform in {1, ..., 18} for 20 slices, slices n0..19 deformed (2 to 19 of them)
    seen = set()
    for seed in range(300):
        _, disp = A.geometric_params(20, 12, 12, _gen(seed), elastic_tail=True)
        assert disp is not None
        moved = disp.abs().amax(dim=(1, 2, 3)) > 0
        n0 = int(torch.argmax(moved.to(torch.int64)))
        assert moved[n0:].all()
        assert not moved[:n0].any()
        assert 1 <= n0 <= 18
        seen.add(n0)
    assert seen == set(range(1, 19))


# ------------------------------------------------------------------ soft label warp (§4.3)
def test_authors_warp_matches_two_step_reference() -> None:
    n, h, w, k = 5, 14, 14, 3
    x = _images(n, 2, h, w, seed=1)
    y = torch.randint(0, k, (n, h, w), generator=_gen(2))
    theta, disp = A.geometric_params(n, h, w, _gen(9), elastic_tail=True, dtype=torch.float64)
    assert disp is not None
    out, soft = A.authors_warp(x, y, theta, disp, num_classes=k)
    assert soft.shape == (n, k, h, w)
    for i in range(n):
        want_img, want_lab = ref.authors_warp_reference(
            x[i].numpy(), y[i].numpy(), theta[i].numpy(), disp[i].numpy(), k
        )
        np.testing.assert_allclose(out[i].numpy(), want_img, atol=1e-9)
        np.testing.assert_allclose(soft[i].numpy(), want_lab, atol=1e-9)
    torch.testing.assert_close(soft.sum(1), torch.ones(n, h, w, dtype=torch.float64))
    moved = disp.abs().amax(dim=(1, 2, 3)) > 0
    head = soft[~moved]
    assert torch.equal(head, head.round())  # undeformed rows keep hard one-hot labels
    tail = soft[moved]
    assert bool(((tail > 0) & (tail < 1)).any())  # deformed rows are soft


def test_authors_geometric_augment_uses_geometric_params_draws() -> None:
    x = _images(6, 1, 16, 16, seed=3)
    y = torch.randint(0, 4, (6, 16, 16), generator=_gen(4))
    out, soft = A.authors_geometric_augment(x, y, _gen(5), num_classes=4)
    theta, disp = A.geometric_params(6, 16, 16, _gen(5), elastic_tail=True, dtype=torch.float64)
    want = A.authors_warp(x, y, theta, disp, num_classes=4)
    torch.testing.assert_close(out, want[0])
    torch.testing.assert_close(soft, want[1])


def test_authors_geometric_augment_errors() -> None:
    x = _images(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"`labels` must have an integer dtype"):
        A.authors_geometric_augment(x, torch.zeros(2, 8, 8), _gen(), num_classes=2)
    with pytest.raises(ValueError, match=r"`labels` must be a tensor of shape \(N, H, W\)"):
        A.authors_geometric_augment(x, torch.zeros(2, 8, dtype=torch.long), _gen(), num_classes=2)
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive integer; got 0"):
        A.authors_geometric_augment(x, torch.zeros(2, 8, 8, dtype=torch.long), _gen(),
                                    num_classes=0)


# ------------------------------------------------------------------ Cityscapes (issue 15 item 3)
def _jitter_draws(g: torch.Generator, n: int, b: float, c: float, s: float, h: float):
    fb = 1 - b + 2 * b * torch.rand(n, generator=g)
    fc = 1 - c + 2 * c * torch.rand(n, generator=g)
    fs = 1 - s + 2 * s * torch.rand(n, generator=g)
    fh = -h + 2 * h * torch.rand(n, generator=g) if h > 0 else torch.zeros(n)
    return fb, fc, fs, fh


def test_color_jitter_with_hue_matches_reference() -> None:
    x = _images(3, 3, 6, 7, seed=4)
    out = A.color_jitter(x, _gen(6), brightness=0.3, contrast=0.2, saturation=0.4, hue=0.2)
    fb, fc, fs, fh = _jitter_draws(_gen(6), 3, 0.3, 0.2, 0.4, 0.2)
    for i in range(3):
        want = ref.colour_jitter_reference(x[i].numpy(), float(fb[i]), float(fc[i]),
                                           float(fs[i]), float(fh[i]))
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-5, atol=1e-6)


def test_hue_rotation_keeps_grey_pixels_and_errors() -> None:
    x = _images(2, 3, 5, 5, seed=5)
    grey = x.mean(dim=1, keepdim=True).expand(2, 3, 5, 5).contiguous()
    out = A.color_jitter(grey, _gen(1), brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5,
                         clip=None)
    torch.testing.assert_close(out, grey)  # grey pixels have no chroma to rotate
    with pytest.raises(ValueError, match=r"`hue` must be >= 0 and <= 0.5"):
        A.color_jitter(x, _gen(), hue=0.6)
    with pytest.raises(ValueError, match=r"3 channels \(RGB\) for saturation or hue"):
        A.color_jitter(_images(1, 1, 4, 4), _gen(), saturation=0.0, hue=0.1)


def test_cityscapes_finetune_is_crop_then_jitter() -> None:
    x = _images(3, 3, 16, 24, seed=6)
    y = torch.randint(0, 13, (3, 16, 24), generator=_gen(7))
    out, lab = A.cityscapes_finetune_augment(x, y, _gen(8), size=(8, 16))
    g = _gen(8)
    oy = torch.randint(0, 9, (3,), generator=g)
    ox = torch.randint(0, 9, (3,), generator=g)
    fb, fc, fs, fh = _jitter_draws(g, 3, *A.CITYSCAPES_FINETUNE_JITTER)
    assert lab is not None
    for i in range(3):
        y0, x0 = int(oy[i]), int(ox[i])
        crop = x[i, :, y0:y0 + 8, x0:x0 + 16].numpy()
        want = ref.colour_jitter_reference(crop, float(fb[i]), float(fc[i]), float(fs[i]),
                                           float(fh[i]))
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-5, atol=1e-6)
        assert torch.equal(lab[i], y[i, y0:y0 + 8, x0:x0 + 16])


def test_colour_views_global_is_crop_resize_then_jitter() -> None:
    x = _images(2, 3, 12, 16, seed=8)
    out = A.colour_views(x, _gen(9))
    g = _gen(9)
    corners = 10 / 192 + (59 / 192) * torch.rand((2, 2), generator=g).double()
    fb, fc, fs, fh = _jitter_draws(g, 2, *A.CITYSCAPES_VIEW_JITTER)
    cropped = A.crop_resize(x, corners, 100 / 192)
    for i in range(2):
        want = ref.colour_jitter_reference(cropped[i].numpy(), float(fb[i]), float(fc[i]),
                                           float(fs[i]), float(fh[i]))
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-5, atol=1e-6)
    local = A.colour_views(x, _gen(9), kind="local")
    torch.testing.assert_close(local, A.color_jitter(x, _gen(9), brightness=0.4, contrast=0.4,
                                                     saturation=0.4, hue=0.1))


def test_two_views_colour_kinds() -> None:
    x = _images(3, 3, 8, 8)
    out = A.two_views({"images": x, "image_ids": torch.arange(3)}, _gen(1), kind="colour_local")
    g = _gen(1)
    want = torch.cat([A.colour_views(x, g, kind="local"), A.colour_views(x, g, kind="local")])
    torch.testing.assert_close(out["images"], want)
    with pytest.raises(ValueError, match=r"`kind` must be 'global', 'local', 'colour_global'"):
        A.two_views({"images": x, "image_ids": torch.arange(3)}, _gen(1), kind="colour")
    with pytest.raises(ValueError, match=r"`kind` must be 'global' or 'local'; got 'x'"):
        A.colour_views(x, _gen(), kind="x")
