"""A cardiac-like short-axis MR phantom with ACDC-convention labels, generated on demand.

No installable package ships small labelled cardiac MR volumes, so tests, the CPU demo and the
default dataset use this generator. Each volume is a short-axis stack from base to apex: a left
ventricular (LV) blood pool inside a myocardial ring, a right-ventricular (RV) crescent against the
septum that shrinks faster than the LV and vanishes near the apex, inside a body with subcutaneous
fat, chest-wall muscle, lungs, spine, descending aorta, liver, stomach and small vessels. Per volume
the position, size, orientation, ellipticity, wall thickness, tissue contrasts, noise level, bias
field and slice count vary, so a network trained on one volume does not transfer for free.

Labels follow ACDC: 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity (papillary muscles, which
are dark like the myocardium, are labelled LV as in ACDC).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ._records import Case

__all__ = ["PHANTOM_CLASS_NAMES", "make_cardiac_phantom", "make_synthetic_dataset"]

#: Class names of the phantom labels, index = label value (ACDC convention).
PHANTOM_CLASS_NAMES: tuple[str, ...] = ("background", "RV", "Myo", "LV")

_FloatArray = npt.NDArray[np.float64]
SeedLike = int | np.random.Generator | np.random.SeedSequence


def _as_generator(seed_or_rng: Any) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, np.random.SeedSequence):
        return np.random.default_rng(seed_or_rng)
    if isinstance(seed_or_rng, (int, np.integer)) and not isinstance(seed_or_rng, bool):
        if seed_or_rng < 0:
            msg = f"`seed_or_rng` must be a non-negative integer seed; got {seed_or_rng}."
            raise ValueError(msg)
        return np.random.default_rng(int(seed_or_rng))
    msg = (
        "`seed_or_rng` must be an int seed, a numpy.random.Generator or a SeedSequence; "
        f"got {type(seed_or_rng).__name__}."
    )
    raise TypeError(msg)


def _check_shape(shape: Any) -> tuple[int, int]:
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)
    )
    if not ok:
        msg = f"`shape` must be a pair of ints (H, W); got {shape!r}."
        raise TypeError(msg)
    h, w = int(shape[0]), int(shape[1])
    if h < 16 or w < 16:
        msg = f"`shape` must be at least (16, 16); got {(h, w)}."
        raise ValueError(msg)
    return h, w


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    if not isinstance(spacing, (tuple, list)) or len(spacing) != 3:
        msg = f"`spacing` must be 3 positive numbers (mm); got {spacing!r}."
        raise TypeError(msg)
    out = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in out):
        msg = f"`spacing` must be 3 positive finite numbers (mm); got {spacing!r}."
        raise ValueError(msg)
    return out[0], out[1], out[2]


def _ellipse(
    x: _FloatArray,
    y: _FloatArray,
    cx: Any,
    cy: Any,
    a: Any,
    b: Any,
    theta: float,
) -> _FloatArray:
    """Normalised squared distance to an ellipse: < 1 inside, 1 on the boundary."""
    c, s = math.cos(theta), math.sin(theta)
    dx = x - cx
    dy = y - cy
    u = c * dx + s * dy
    v = -s * dx + c * dy
    a = np.maximum(a, 1e-6)
    b = np.maximum(b, 1e-6)
    return np.asarray((u / a) ** 2 + (v / b) ** 2)


def _smooth_field(
    rng: np.random.Generator, grid: tuple[int, int, int], out: tuple[int, int, int]
) -> _FloatArray:
    """Zero-mean smooth random field: a coarse N(0, 1) grid, cubic-upsampled to `out`."""
    from scipy import ndimage

    coarse = rng.standard_normal(grid)
    factors = [o / g for o, g in zip(out, grid, strict=True)]
    field = ndimage.zoom(coarse, factors, order=3, mode="nearest", grid_mode=True)
    # zoom's rounding may be off by one voxel on odd factors; fix the shape exactly
    field = field[: out[0], : out[1], : out[2]]
    if field.shape != out:  # pragma: no cover - defensive
        field = np.pad(field, [(0, o - f) for o, f in zip(out, field.shape, strict=True)], "edge")
    return np.asarray(field, dtype=np.float64)


def make_cardiac_phantom(
    seed_or_rng: SeedLike,
    *,
    shape: tuple[int, int] = (128, 128),
    num_slices: int | None = None,
    spacing: tuple[float, float, float] = (1.5, 1.5, 8.0),
    noise_level: float | None = None,
    bias_strength: float | None = None,
    distractors: bool = True,
    case_id: str = "000",
) -> Case:
    r"""Generate one cardiac-like short-axis MR volume and its ACDC-convention label map.

    Parameters
    ----------
    seed_or_rng : int, numpy.random.Generator or numpy.random.SeedSequence
        Source of randomness; an int or a SeedSequence gives a reproducible volume.
    shape : tuple of 2 ints, optional
        In-plane size ``(H, W)``, at least 16 each. Anatomy scales with ``min(H, W)``.
    num_slices : int, optional
        Number of short-axis slices ``Z`` (at least 3). Default: drawn uniformly in 8-14.
    spacing : tuple of 3 floats, optional
        Voxel spacing in mm recorded in the returned record and its affine.
    noise_level : float, optional
        Standard deviation of the complex Gaussian noise relative to the blood-pool intensity
        (the magnitude is Rician). Default: drawn in [0.02, 0.07].
    bias_strength : float, optional
        Standard deviation of the log bias field (a smooth multiplicative field ``exp(s * g)``
        with ``g`` a cubic-upsampled 4x4x3 N(0, 1) grid). Default: drawn in [0.1, 0.3].
    distractors : bool, optional
        Add the non-cardiac structures (fat, chest wall, lungs, spine, aorta, liver, stomach,
        vessels). Without them the body is a plain ellipse.
    case_id : str, optional
        Identifier stored in the record.

    Returns
    -------
    Case
        ``image`` float32 of shape (H, W, Z) in arbitrary positive MR units, ``label`` uint8 of
        shape (H, W, Z) with 0 background, 1 RV, 2 myocardium, 3 LV; slice 0 is the base and
        slice ``Z - 1`` the apex. ``spacing`` as given, ``affine = diag(spacing, 1)``, ``meta``
        holds the drawn parameters (``meta["params"]``) and each slice's normalised position
        ``t`` in [0, 1] from base to apex (``meta["slice_positions"]``).

    Raises
    ------
    TypeError
        If `seed_or_rng`, `shape` or `spacing` has the wrong type.
    ValueError
        If `shape` is smaller than 16, `num_slices` < 3, or `spacing`, `noise_level` or
        `bias_strength` is not positive/finite.

    Notes
    -----
    Along the long axis, with :math:`t \in [0, 1]` from base to apex, the LV cavity radius
    scales as :math:`\sqrt{\max(0, 1 - k t^{1.5})}` (:math:`k \approx 1`, so the apical slice is
    a small myocardial cap), the myocardial wall keeps roughly its thickness, and the RV scales as
    :math:`\sqrt{\max(0, 1 - (t/t_{RV})^{1.5})}` with :math:`t_{RV} \in [0.62, 0.85]`, so it
    vanishes in the apical slices. The RV cavity is an ellipse centred outside the LV minus the
    epicardial ellipse, i.e. a crescent hugging the septum. The image is then blurred slightly
    (partial volume), multiplied by a smooth bias field, corrupted by Rician noise and scaled by a
    random gain. Slice position therefore carries the meaning the partition-based global loss of
    Chaitanya et al. (NeurIPS 2020, arXiv:2006.10511) relies on.

    Examples
    --------
    >>> case = make_cardiac_phantom(0, shape=(64, 64), num_slices=10)
    >>> case.image.shape, case.image.dtype, case.label.dtype
    ((64, 64, 10), dtype('float32'), dtype('uint8'))
    >>> sorted(int(v) for v in np.unique(case.label))
    [0, 1, 2, 3]
    >>> bool((case.label[..., -1] == 1).any())  # no RV at the apex
    False
    """
    rng = _as_generator(seed_or_rng)
    h, w = _check_shape(shape)
    spacing = _check_spacing(spacing)
    z = _num_slices(num_slices, rng)
    _check_noise_args(noise_level, bias_strength)
    p, (t_start, t_end) = _draw_params(rng, noise_level, bias_strength)
    frame = _frame(h, w, z, p, t_start, t_end)
    image, texture, in_body = _paint_body(frame, p, rng)
    if distractors:
        image = _paint_distractors(image, frame, p, texture, in_body, rng)
    heart = _heart_masks(frame, p)
    image, label = _paint_heart(image, frame, heart, p, texture, rng, distractors=distractors)
    image = _acquire(image, p, rng)
    sx, sy, sz = spacing
    affine = np.diag([sx, sy, sz, 1.0])
    meta: dict[str, Any] = {
        "source": "synthetic cardiac phantom",
        "params": p,
        "slice_positions": frame.t.tolist(),
        "class_names": PHANTOM_CLASS_NAMES,
    }
    return Case(
        case_id=case_id,
        image=image.astype(np.float32),
        label=label,
        spacing=spacing,
        affine=affine,
        meta=meta,
    )


# The steps of make_cardiac_phantom, in the order they draw from the generator: the order of the
# draws is part of the output (a volume is a function of the seed), so no step may be reordered.


def _num_slices(num_slices: Any, rng: np.random.Generator) -> int:
    """Return `num_slices` checked, or draw the slice count in 8-14 when it is None."""
    if num_slices is None:
        return int(rng.integers(8, 15))
    if isinstance(num_slices, bool) or not isinstance(num_slices, (int, np.integer)):
        msg = f"`num_slices` must be an int or None; got {num_slices!r}."
        raise TypeError(msg)
    z = int(num_slices)
    if z < 3:
        msg = f"`num_slices` must be at least 3; got {z}."
        raise ValueError(msg)
    return z


def _check_noise_args(noise_level: Any, bias_strength: Any) -> None:
    for name, value in (("noise_level", noise_level), ("bias_strength", bias_strength)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0):
            msg = f"`{name}` must be a non-negative finite number or None; got {value!r}."
            raise ValueError(msg)


def _draw_params(
    rng: np.random.Generator, noise_level: float | None, bias_strength: float | None
) -> tuple[dict[str, Any], tuple[float, float]]:
    """Draw the per-volume parameters (``meta["params"]``) and the stack's base/apex ``t``."""
    u = rng.uniform
    p: dict[str, Any] = {}
    p["rotation"] = u(-0.6, 0.6)  # global in-plane orientation (rad, about +-34 deg)
    p["flip"] = bool(rng.random() < 0.25)  # occasionally mirrored acquisitions
    p["body_a"], p["body_b"] = u(0.78, 0.95), u(0.55, 0.72)
    p["body_cy"] = u(-0.02, 0.12)
    p["heart_x"], p["heart_y"] = u(-0.05, 0.30), u(-0.30, 0.05)
    p["heart_drift"] = (u(-0.06, 0.06), u(-0.06, 0.06))  # centre drift base -> apex
    p["heart_scale"] = u(0.75, 1.3)
    p["lv_radius"] = 0.17 * p["heart_scale"]
    p["lv_ratio"] = u(0.72, 1.0)  # ellipticity (minor / major)
    p["lv_angle"] = u(0.0, math.pi)
    p["wall"] = p["lv_radius"] * u(0.28, 0.55)
    p["apex_k"] = u(0.9, 1.0)
    p["rv_angle"] = math.pi + u(-0.5, 0.5)  # RV towards image left (patient right)
    p["rv_offset"] = u(0.55, 0.85)
    p["rv_radial"], p["rv_tangent"] = u(0.6, 0.95), u(1.15, 1.6)
    p["rv_end"] = u(0.62, 0.85)
    t_start, t_end = u(0.0, 0.06), u(0.94, 1.0)
    # contrasts relative to the LV blood pool (= 1)
    c: dict[str, float] = {
        "rv": u(0.8, 1.05),
        "myo": u(0.15, 0.5),
        "tissue": u(0.22, 0.7),
        "fat": u(0.55, 1.0),
        "muscle": u(0.15, 0.5),
        "lung": u(0.02, 0.12),
        "liver": u(0.25, 0.6),
        "spine": u(0.25, 0.55),
        "aorta": u(0.75, 1.1),
        "stomach": u(0.4, 1.0),
        "background": u(0.0, 0.03),
    }
    p["contrast"] = c
    p["noise_level"] = float(noise_level) if noise_level is not None else u(0.02, 0.07)
    p["bias_strength"] = float(bias_strength) if bias_strength is not None else u(0.1, 0.3)
    p["blur_sigma"] = u(0.4, 0.9)
    p["gain"] = math.exp(u(math.log(200.0), math.log(2000.0)))
    return p, (t_start, t_end)


class _Frame(NamedTuple):
    """Canonical-frame coordinates: `x`, `y` (H, W, 1), slice positions `t` (Z,), `tz` (1, 1, Z)."""

    shape: tuple[int, int, int]
    x: _FloatArray
    y: _FloatArray
    t: _FloatArray
    tz: _FloatArray


def _frame(h: int, w: int, z: int, p: dict[str, Any], t_start: float, t_end: float) -> _Frame:
    """Rotate (and maybe mirror) the pixel grid into the anatomy's frame; ``t`` runs base->apex."""
    radius = min(h, w) / 2.0
    yy = ((np.arange(h, dtype=np.float64) - (h - 1) / 2.0) / radius)[:, None, None]
    xx = ((np.arange(w, dtype=np.float64) - (w - 1) / 2.0) / radius)[None, :, None]
    if p["flip"]:
        xx = -xx
    cr, sr = math.cos(p["rotation"]), math.sin(p["rotation"])
    x = cr * xx + sr * yy  # (H, W, 1) canonical-frame coordinates
    y = -sr * xx + cr * yy
    t = np.linspace(t_start, t_end, z)  # (Z,) base -> apex
    tz = t[None, None, :]
    return _Frame((h, w, z), x, y, t, tz)


def _paint_body(
    frame: _Frame, p: dict[str, Any], rng: np.random.Generator
) -> tuple[_FloatArray, _FloatArray, npt.NDArray[np.bool_]]:
    """Paint the background and the body of textured tissue; return image, texture, body mask."""
    c, x, y = p["contrast"], frame.x, frame.y
    h, w, z = frame.shape
    image = np.full((h, w, z), c["background"])
    body = _ellipse(x, y, 0.0, p["body_cy"], p["body_a"], p["body_b"], 0.0)
    in_body = body < 1.0
    texture = 1.0 + 0.08 * _smooth_field(rng, (12, 12, max(2, z // 3)), (h, w, z))
    image = np.where(in_body, c["tissue"] * texture, image)
    return image, texture, in_body


def _paint_distractors(
    image: _FloatArray,
    frame: _Frame,
    p: dict[str, Any],
    texture: _FloatArray,
    in_body: npt.NDArray[np.bool_],
    rng: np.random.Generator,
) -> _FloatArray:
    """Paint fat, chest wall, lungs and their vessels, spine, aorta, liver and stomach."""
    u, c, x, y, tz = rng.uniform, p["contrast"], frame.x, frame.y, frame.tz
    fat_in = _ellipse(x, y, 0.0, p["body_cy"], p["body_a"] * 0.9, p["body_b"] * 0.86, 0.0)
    image = np.where(in_body & (fat_in >= 1.0), c["fat"] * texture, image)
    muscle_in = _ellipse(x, y, 0.0, p["body_cy"], p["body_a"] * 0.82, p["body_b"] * 0.76, 0.0)
    image = np.where((fat_in < 1.0) & (muscle_in >= 1.0), c["muscle"] * texture, image)
    # lungs either side of the heart; they shrink towards the apex (diaphragm)
    for side in (-1.0, 1.0):
        lung = _ellipse(
            x,
            y,
            side * u(0.38, 0.5),
            p["body_cy"] + u(-0.05, 0.1),
            u(0.2, 0.3) * (1.0 - 0.35 * tz),
            u(0.3, 0.42) * (1.0 - 0.35 * tz),
            u(-0.4, 0.4),
        )
        image = np.where((lung < 1.0) & (muscle_in < 1.0), c["lung"], image)
        # small bright vessels in the lungs
        for _ in range(int(rng.integers(1, 4))):
            vx = side * u(0.3, 0.55)
            vy = p["body_cy"] + u(-0.2, 0.3)
            vessel = _ellipse(x, y, vx, vy, u(0.015, 0.035), u(0.015, 0.035), 0.0)
            image = np.where((vessel < 1.0) & (lung < 1.0), c["aorta"] * u(0.6, 1.0), image)
    # spine and descending aorta, posterior, all slices
    spine_y = p["body_cy"] + p["body_b"] * 0.7
    spine = _ellipse(x, y, u(-0.04, 0.04), spine_y, 0.1, 0.09, 0.0)
    image = np.where(spine < 1.0, c["spine"], image)
    cortex = (spine < 1.0) & (spine > 0.7)
    image = np.where(cortex, c["lung"] * 2.0, image)
    aorta = _ellipse(x, y, u(0.12, 0.22), spine_y - u(0.12, 0.2), 0.07, 0.07, 0.0)
    image = np.where(aorta < 1.0, c["aorta"], image)
    # liver (image left, patient right) and stomach appear towards the apex (inferior)
    liver_r = np.clip((tz - u(0.2, 0.5)) * 1.2, 0.0, None) * u(0.5, 0.8)
    liver = _ellipse(x, y, -0.35, p["body_cy"] + 0.25, liver_r * 1.3, liver_r, 0.3)
    image = np.where((liver < 1.0) & (muscle_in < 1.0), c["liver"] * texture, image)
    stomach_r = np.clip((tz - u(0.4, 0.7)) * 1.5, 0.0, None) * u(0.15, 0.3)
    stomach = _ellipse(x, y, 0.42, p["body_cy"] + 0.15, stomach_r, stomach_r * 0.8, 0.0)
    return np.where((stomach < 1.0) & (muscle_in < 1.0), c["stomach"], image)


class _Heart(NamedTuple):
    """The heart of one volume: centre and LV radii per slice, and the masks of its parts."""

    hx: _FloatArray
    hy: _FloatArray
    lv_a: _FloatArray
    lv_b: _FloatArray
    wall: _FloatArray
    in_endo: npt.NDArray[np.bool_]
    in_epi: npt.NDArray[np.bool_]
    in_rv: npt.NDArray[np.bool_]
    in_rv_wall: npt.NDArray[np.bool_]


def _heart_masks(frame: _Frame, p: dict[str, Any]) -> _Heart:
    """LV cavity inside a myocardial ring, RV crescent against the septum (no random draws)."""
    x, y, tz = frame.x, frame.y, frame.tz
    hx = p["heart_x"] + p["heart_drift"][0] * tz
    hy = p["heart_y"] + p["heart_drift"][1] * tz
    lv_scale = np.sqrt(np.clip(1.0 - p["apex_k"] * tz**1.5, 0.0, None))
    lv_a = p["lv_radius"] * lv_scale
    lv_b = lv_a * p["lv_ratio"]
    wall = p["wall"] * (1.0 - 0.25 * tz)
    endo = _ellipse(x, y, hx, hy, lv_a, lv_b, p["lv_angle"])
    epi = _ellipse(x, y, hx, hy, lv_a + wall, lv_b + wall, p["lv_angle"])
    epi_r = p["lv_radius"] + p["wall"]  # basal epicardial radius
    rv_scale = np.sqrt(np.clip(1.0 - (tz / p["rv_end"]) ** 1.5, 0.0, None))
    rv_d = (lv_a + wall) * p["rv_offset"]
    rv_cx = hx + rv_d * math.cos(p["rv_angle"])
    rv_cy = hy + rv_d * math.sin(p["rv_angle"])
    rv = _ellipse(
        x,
        y,
        rv_cx,
        rv_cy,
        epi_r * p["rv_radial"] * rv_scale,
        epi_r * p["rv_tangent"] * rv_scale,
        p["rv_angle"],
    )
    rv_wall = _ellipse(
        x,
        y,
        rv_cx,
        rv_cy,
        epi_r * p["rv_radial"] * rv_scale + 0.025,
        epi_r * p["rv_tangent"] * rv_scale + 0.025,
        p["rv_angle"],
    )
    in_epi = epi < 1.0
    in_rv = (rv < 1.0) & ~in_epi & (rv_scale > 0)
    in_rv_wall = (rv_wall < 1.0) & ~in_epi & ~in_rv & (rv_scale > 0)
    in_endo = endo < 1.0
    return _Heart(hx, hy, lv_a, lv_b, wall, in_endo, in_epi, in_rv, in_rv_wall)


def _paint_heart(
    image: _FloatArray,
    frame: _Frame,
    heart: _Heart,
    p: dict[str, Any],
    texture: _FloatArray,
    rng: np.random.Generator,
    *,
    distractors: bool,
) -> tuple[_FloatArray, npt.NDArray[np.uint8]]:
    """Paint the heart (and, with `distractors`, its epicardial fat); return image and labels."""
    u, c, x, y, tz = rng.uniform, p["contrast"], frame.x, frame.y, frame.tz
    hx, hy, lv_a, lv_b, wall = heart.hx, heart.hy, heart.lv_a, heart.lv_b, heart.wall
    # epicardial fat: a thin bright rim around the heart
    if distractors:
        pericard = _ellipse(x, y, hx, hy, lv_a + wall + 0.03, lv_b + wall + 0.03, p["lv_angle"])
        # present over a random arc only (fat is patchy around the heart)
        rim_angle, rim_extent = u(0.0, 2.0 * math.pi), u(-0.6, 0.4)
        arc = np.cos(np.arctan2(y - hy, x - hx) - rim_angle) > rim_extent
        rim = (pericard < 1.0) & ~heart.in_epi & ~heart.in_rv & ~heart.in_rv_wall & arc
        image = np.where(rim, c["fat"] * texture, image)
    image = np.where(heart.in_rv_wall, c["myo"] * texture, image)
    image = np.where(heart.in_rv, c["rv"], image)
    image = np.where(heart.in_epi, c["myo"] * texture, image)
    image = np.where(heart.in_endo, 1.0, image)
    # papillary muscles: dark spots inside the LV cavity, labelled LV (ACDC convention)
    papillary = np.zeros(frame.shape, dtype=bool)
    for _ in range(2):
        ang = p["rv_angle"] + math.pi + u(-1.0, 1.0)
        pr = u(0.55, 0.75)
        pap = _ellipse(
            x,
            y,
            hx + pr * lv_a * math.cos(ang),
            hy + pr * lv_a * math.sin(ang),
            0.22 * lv_a,
            0.22 * lv_a,
            0.0,
        )
        papillary |= (pap < 1.0) & heart.in_endo & (tz < 0.8)
    image = np.where(papillary, c["myo"], image)

    label = np.zeros(frame.shape, dtype=np.uint8)
    label = np.where(heart.in_rv, np.uint8(1), label)
    label = np.where(heart.in_epi, np.uint8(2), label)
    label = np.where(heart.in_endo, np.uint8(3), label).astype(np.uint8)
    return image, label


def _acquire(image: _FloatArray, p: dict[str, Any], rng: np.random.Generator) -> _FloatArray:
    """Partial-volume blur, smooth multiplicative bias field, Rician noise and gain."""
    from scipy import ndimage

    image = ndimage.gaussian_filter(image, sigma=(p["blur_sigma"], p["blur_sigma"], 0.0))
    bias = np.exp(p["bias_strength"] * _smooth_field(rng, (4, 4, 3), image.shape))
    image = image * bias
    sigma = p["noise_level"]
    real = image + sigma * rng.standard_normal(image.shape)
    imag = sigma * rng.standard_normal(image.shape)
    magnitude: _FloatArray = np.sqrt(real * real + imag * imag) * p["gain"]
    return magnitude


def make_synthetic_dataset(
    num_volumes: int,
    *,
    seed: int = 0,
    shape: tuple[int, int] = (128, 128),
    **kwargs: Any,
) -> list[Case]:
    """Generate `num_volumes` independent phantom volumes, reproducibly.

    Parameters
    ----------
    num_volumes : int
        Number of volumes (at least 1).
    seed : int, optional
        Seed of the dataset. Volume ``i`` is drawn from child ``i`` of
        ``numpy.random.SeedSequence(seed)``, so it does not depend on `num_volumes`: the first
        volumes of a larger dataset equal a smaller one.
    shape : tuple of 2 ints, optional
        In-plane size ``(H, W)`` of every volume.
    **kwargs
        Passed on to :func:`make_cardiac_phantom` (``num_slices``, ``spacing``, ``noise_level``,
        ``bias_strength``, ``distractors``).

    Returns
    -------
    list of Case
        Case ids ``"000"``, ``"001"``, ...; see :func:`make_cardiac_phantom`.

    Raises
    ------
    ValueError
        If `num_volumes` < 1 or `seed` < 0 (and as :func:`make_cardiac_phantom`).

    Examples
    --------
    >>> cases = make_synthetic_dataset(3, seed=1, shape=(32, 32))
    >>> [c.case_id for c in cases]
    ['000', '001', '002']
    >>> all(8 <= c.image.shape[2] <= 14 for c in cases)
    True
    """
    if isinstance(num_volumes, bool) or not isinstance(num_volumes, (int, np.integer)):
        msg = f"`num_volumes` must be an int; got {num_volumes!r}."
        raise TypeError(msg)
    if num_volumes < 1:
        msg = f"`num_volumes` must be at least 1; got {num_volumes}."
        raise ValueError(msg)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"`seed` must be a non-negative int; got {seed!r}."
        raise ValueError(msg)
    if "case_id" in kwargs:
        msg = "`case_id` is set per volume by make_synthetic_dataset; do not pass it."
        raise ValueError(msg)
    children = np.random.SeedSequence(int(seed)).spawn(int(num_volumes))
    return [
        make_cardiac_phantom(child, shape=shape, case_id=f"{i:03d}", **kwargs)
        for i, child in enumerate(children)
    ]
