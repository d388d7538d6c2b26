"""Affine + coarse elastic resampling (stage 3 and the baseline): warp, draw, augment.

:func:`warp`, :func:`geometric_params` and :func:`geometric_augment`; images and labels are
resampled through one shared grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812

from ._common import _check_generator, _check_images, _check_nonneg, _check_range, _chunks, _uniform

__all__ = [
    "authors_geometric_augment",
    "authors_warp",
    "geometric_augment",
    "geometric_params",
    "warp",
]


def _sampling_grid(
    theta: torch.Tensor,
    displacement: torch.Tensor | None,
    height: int,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Grid (N, H, W, 2) for ``grid_sample(align_corners=False)``: ``A (p + d(p)) + t``.

    Written as two broadcast multiply-adds straight into the (N, H, W, 2) layout, rather than a
    batched matmul with a 2-wide inner dimension (``affine_grid``) or a ``stack`` of the x and y
    planes, both several times slower on the CPU.
    """
    xs = (2.0 * torch.arange(width, device=device, dtype=dtype) + 1.0) / width - 1.0
    ys = (2.0 * torch.arange(height, device=device, dtype=dtype) + 1.0) / height - 1.0
    px = xs.reshape(1, 1, width, 1)
    py = ys.reshape(1, height, 1, 1)
    if displacement is not None:
        d = displacement.to(device=device, dtype=dtype)
        px = (px[..., 0] + d[:, 0] * (2.0 / width))[..., None]
        py = (py[..., 0] + d[:, 1] * (2.0 / height))[..., None]
    th = theta.to(device=device, dtype=dtype)[:, None, None]  # (N, 1, 1, 2, 3)
    # grid[..., i] = t_i + A_i0 px + A_i1 py
    return torch.addcmul(torch.addcmul(th[..., 2], th[..., 0], px), th[..., 1], py)


def _cubic_upsampling_matrix(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """(size_out, size_in) matrix of 1-D bicubic upsampling as ``F.interpolate`` performs it."""
    eye = torch.eye(size_in, device=device, dtype=torch.float32).reshape(size_in, 1, size_in, 1)
    cols = F.interpolate(eye, size=(size_out, 1), mode="bicubic", align_corners=False)
    return cols[:, 0, :, 0].T


def warp(
    images: torch.Tensor,
    theta: torch.Tensor,
    displacement: torch.Tensor | None = None,
    *,
    mode: Literal["bilinear", "nearest", "bicubic"] = "bilinear",
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
) -> torch.Tensor:
    r"""Resample images through an affine map composed with a displacement field (one grid_sample).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images (cast label maps to float and use ``mode="nearest"``).
    theta : torch.Tensor of shape (N, 2, 3)
        Affine maps in the normalised coordinates of ``torch.nn.functional.affine_grid``
        (``align_corners=False``), from output to input positions.
    displacement : torch.Tensor of shape (N, 2, H, W), optional
        Displacement in pixels (channel 0 along x / width, channel 1 along y / height), added to
        the output position before the affine map.
    mode : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        Interpolation.
    padding_mode : {"zeros", "border", "reflection"}, default "zeros"
        Values outside the image (as ``torch.nn.functional.grid_sample``).

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        ``out(p) = images(A (p + d(p)) + t)``; same dtype and device as `images`.

    Raises
    ------
    ValueError
        If `theta` or `displacement` has the wrong shape, or `mode` is unknown.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
    >>> flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> warp(x, flip, mode="nearest")
    tensor([[[[3., 2., 1., 0.]]]])
    """
    _check_images(images)
    n, _, h, w = images.shape
    if tuple(theta.shape) != (n, 2, 3):
        msg = f"`theta` must have shape (N, 2, 3) = ({n}, 2, 3); got {tuple(theta.shape)}."
        raise ValueError(msg)
    if displacement is not None and tuple(displacement.shape) != (n, 2, h, w):
        msg = (
            f"`displacement` must have shape (N, 2, H, W) = ({n}, 2, {h}, {w}); "
            f"got {tuple(displacement.shape)}."
        )
        raise ValueError(msg)
    if mode not in ("bilinear", "nearest", "bicubic"):
        msg = f"`mode` must be one of 'bilinear', 'nearest', 'bicubic'; got {mode!r}."
        raise ValueError(msg)
    if padding_mode not in ("zeros", "border", "reflection"):
        msg = (
            f"`padding_mode` must be one of 'zeros', 'border', 'reflection'; got {padding_mode!r}."
        )
        raise ValueError(msg)
    return torch.cat(
        [
            F.grid_sample(
                images[sl],
                _sampling_grid(
                    theta[sl],
                    None if displacement is None else displacement[sl],
                    h,
                    w,
                    images.dtype,
                    images.device,
                ),
                mode=mode,
                padding_mode=padding_mode,
                align_corners=False,
            )
            for sl in _chunks(images)
        ]
    )


def geometric_params(
    num_images: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip: bool = True,
    rotation_step_degrees: float = 45.0,
    elastic_sigma: float = 5.0,
    elastic_grid: int = 3,
    elastic_tail: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw the fine-tuning transforms: one affine option per image, then a coarse elastic field.

    Parameters
    ----------
    num_images : int
        N.
    height, width : int
        Image size H, W.
    generator : torch.Generator
        Source of randomness.
    rotation_degrees : float, default 15.0
        Option 0: rotation by U(-r, r) degrees.
    scale_range : pair of float, default (0.95, 1.05)
        Option 1: isotropic zoom by U(lo, hi) about the centre (the original rounds it to 0.01).
    flip : bool, default True
        Option 2: left-right flip with probability 1/2.
    rotation_step_degrees : float, default 45.0
        Option 3: rotation by k x step, k uniform in {0, ..., round(360 / step) - 1}; 0 disables.
    elastic_sigma : float, default 5.0
        Standard deviation in pixels of the control-point displacements; 0 disables.
    elastic_grid : int, default 3
        Control grid size (3 x 3 as the original), bicubically upsampled to H x W.
    elastic_tail : bool, default False
        If True, only a random tail of the batch is deformed, as the original did: ``n0`` uniform
        in {1, ..., max(1, N - 2)} and rows ``n0 .. N-1`` get the field. Default: every row.
    device : torch.device or str, optional
        Device of the returned tensors (default: the generator's).
    dtype : torch.dtype, default torch.float32
        Dtype of the returned tensors.

    Returns
    -------
    theta : torch.Tensor of shape (N, 2, 3)
        Affine maps (output to input, normalised coordinates) for :func:`warp`.
    displacement : torch.Tensor of shape (N, 2, H, W) or None
        Elastic field in pixels (x, y), or None when `elastic_sigma` is 0.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Each image takes option 0-4 (rotation, zoom, flip, k-step rotation, nothing) with
    probability 1/5, as the original. Rotations and zooms act in pixel space about the image
    centre (correct for non-square images). The original skipped the affine step on near-empty
    slices; a transform of an empty slice is empty, so that test is not needed here.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> theta, disp = geometric_params(3, 16, 16, g)
    >>> tuple(theta.shape), tuple(disp.shape)
    ((3, 2, 3), (3, 2, 16, 16))
    """
    _check_generator(generator)
    r = _check_nonneg(rotation_degrees, "rotation_degrees")
    _check_range(scale_range, "scale_range", 1e-6, math.inf)
    step = _check_nonneg(rotation_step_degrees, "rotation_step_degrees", 360.0)
    sigma = _check_nonneg(elastic_sigma, "elastic_sigma")
    if isinstance(elastic_grid, bool) or not isinstance(elastic_grid, int) or elastic_grid < 2:
        msg = f"`elastic_grid` must be an integer >= 2; got {elastic_grid!r}."
        raise ValueError(msg)
    for name, v in (("num_images", num_images), ("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            msg = f"`{name}` must be a positive integer; got {v!r}."
            raise ValueError(msg)
    n = num_images
    dev = torch.device(device) if device is not None else generator.device
    like = torch.empty(0, dtype=torch.float64, device=generator.device)
    option = torch.randint(0, 5, (n,), generator=generator, device=generator.device)
    angle_small = _uniform(n, -r, r, generator, like)
    zoom = _uniform(n, scale_range[0], scale_range[1], generator, like)
    flip_coin = torch.rand(n, generator=generator, device=generator.device) < 0.5
    num_steps = max(1, round(360.0 / step)) if step > 0 else 1
    k = torch.randint(0, num_steps, (n,), generator=generator, device=generator.device)
    zero = torch.zeros_like(angle_small)
    one = torch.ones_like(angle_small)
    angle = torch.where(option == 0, angle_small, zero)
    angle = torch.where(option == 3, k.to(like) * step, angle)
    inv_zoom = torch.where(option == 1, 1.0 / zoom, one)
    sign_x = torch.where((option == 2) & flip_coin & flip, -one, one)
    rad = torch.deg2rad(angle)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # pixel-space map output -> input about the centre: R(angle) . (1/zoom) . flip
    a00, a01 = cos * inv_zoom * sign_x, -sin * inv_zoom
    a10, a11 = sin * inv_zoom * sign_x, cos * inv_zoom
    # normalised: diag(2/W, 2/H) A diag(W/2, H/2)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=generator.device)
    theta[:, 0, 0] = a00
    theta[:, 0, 1] = a01 * (height / width)
    theta[:, 1, 0] = a10 * (width / height)
    theta[:, 1, 1] = a11
    displacement = None
    if sigma > 0:
        coarse = torch.randn(
            n, 2, elastic_grid, elastic_grid, generator=generator, device=generator.device
        )
        if elastic_tail:
            # a 1-element tensor, compared on the device: no host read (a sync on CUDA)
            n0 = torch.randint(1, max(2, n - 1), (1,), generator=generator, device=generator.device)
            keep = (torch.arange(n, device=generator.device) >= n0).to(coarse)
            coarse = coarse * keep.reshape(n, 1, 1, 1)
        coarse = (sigma * coarse).to(device=dev, dtype=torch.float32)
        # bicubic upsampling is separable: two small matrix products, same values as
        # F.interpolate(coarse, (H, W), mode="bicubic") at a fraction of its CPU cost
        m_h = _cubic_upsampling_matrix(elastic_grid, height, dev)
        m_w = _cubic_upsampling_matrix(elastic_grid, width, dev)
        displacement = (m_h @ coarse @ m_w.T).to(dtype)
    return theta.to(device=dev, dtype=dtype), displacement


def _is_identity_geometry(
    rotation_degrees: float,
    scale_range: tuple[float, float],
    flip: bool,
    rotation_step_degrees: float,
    elastic_sigma: float,
) -> bool:
    return (
        rotation_degrees == 0
        and tuple(scale_range) == (1.0, 1.0)
        and not flip
        and rotation_step_degrees in (0, 360)
        and elastic_sigma == 0
    )


def geometric_augment(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    *,
    rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip: bool = True,
    rotation_step_degrees: float = 45.0,
    elastic_sigma: float = 5.0,
    elastic_grid: int = 3,
    elastic_tail: bool = False,
    label_mode: Literal["nearest", "onehot"] = "nearest",
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fine-tuning / baseline augmentation, applied consistently to images and label maps.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, H, W), integer, or None
        Label maps, transformed with the same sampling grid as `images`.
    generator : torch.Generator
        Source of randomness.
    rotation_degrees, scale_range, flip, rotation_step_degrees : see :func:`geometric_params`
        The affine options.
    elastic_sigma, elastic_grid, elastic_tail : see :func:`geometric_params`
        The elastic field.
    label_mode : {"nearest", "onehot"}, default "nearest"
        ``"nearest"``: labels resampled by nearest neighbour, returned as (N, H, W) with the input
        dtype (the label set is preserved; 0 enters from outside the image). ``"onehot"``: labels
        one-hot encoded, resampled bilinearly and returned soft, float (N, K, H, W), as the
        original did (outside the image counts as background; 3-4x dearer).
    num_classes : int, optional
        K, required for ``label_mode="onehot"``.

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        Transformed images (bilinear, zero outside).
    labels : torch.Tensor or None
        Transformed labels (see `label_mode`), or None.

    Raises
    ------
    ValueError
        For bad shapes or parameters, or ``label_mode="onehot"`` without `num_classes`.

    Notes
    -----
    One ``grid_sample`` per tensor: the affine option and the elastic field are composed into one
    sampling grid (:func:`geometric_params`, :func:`warp`). With every strength zero
    (``rotation_degrees=0, scale_range=(1, 1), flip=False, rotation_step_degrees=0,
    elastic_sigma=0``) the inputs are returned unchanged (copies). The fine-tuning intensity
    augmentation of the original code was never applied, so none is applied here.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 1, 16, 16, generator=g)
    >>> y = torch.randint(0, 4, (2, 16, 16), generator=g)
    >>> xa, ya = geometric_augment(x, y, g)
    >>> tuple(xa.shape), tuple(ya.shape), ya.dtype
    ((2, 1, 16, 16), (2, 16, 16), torch.int64)
    """
    _check_images(images)
    _check_generator(generator)
    n, _, h, w = images.shape
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n, h, w):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            msg = f"`labels` must be a tensor of shape (N, H, W) = ({n}, {h}, {w}); got {got}."
            raise ValueError(msg)
        if labels.is_floating_point() or labels.is_complex():
            msg = f"`labels` must have an integer dtype; got dtype {labels.dtype}."
            raise TypeError(msg)
    if label_mode not in ("nearest", "onehot"):
        msg = f"`label_mode` must be 'nearest' or 'onehot'; got {label_mode!r}."
        raise ValueError(msg)
    if label_mode == "onehot" and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        msg = (
            "`num_classes` must be a positive integer with label_mode='onehot'; "
            f"got {num_classes!r}."
        )
        raise ValueError(msg)

    classes = torch.arange(int(num_classes or 0), device=images.device).reshape(1, -1, 1, 1)

    def onehot(lab: torch.Tensor) -> torch.Tensor:
        # channel-first in one broadcast comparison (no (N, H, W, K) scatter + permute copy)
        return (lab[:, None] == classes).to(images.dtype)

    if _is_identity_geometry(
        rotation_degrees, scale_range, flip, rotation_step_degrees, elastic_sigma
    ):
        out_labels = None
        if labels is not None:
            out_labels = onehot(labels) if label_mode == "onehot" else labels.clone()
        return images.clone(), out_labels
    theta, displacement = geometric_params(
        n,
        h,
        w,
        generator,
        rotation_degrees=rotation_degrees,
        scale_range=scale_range,
        flip=flip,
        rotation_step_degrees=rotation_step_degrees,
        elastic_sigma=elastic_sigma,
        elastic_grid=elastic_grid,
        elastic_tail=elastic_tail,
        device=images.device,
        dtype=images.dtype,
    )
    parts = [
        _geometric_impl(
            images[sl],
            None if labels is None else labels[sl],
            _sampling_grid(
                theta[sl],
                None if displacement is None else displacement[sl],
                h,
                w,
                images.dtype,
                images.device,
            ),
            label_mode,
            onehot,
        )
        for sl in _chunks(images, images[0].numel() * images.element_size() * 4)
    ]
    out = torch.cat([p[0] for p in parts])
    if labels is None:
        return out, None
    return out, torch.cat([p[1] for p in parts if p[1] is not None])


def _geometric_impl(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    grid: torch.Tensor,
    label_mode: str,
    onehot: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`geometric_augment` of one chunk through its sampling grid."""
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if labels is None:
        return out, None
    if label_mode == "nearest":
        lab_f = labels.to(torch.float32 if images.dtype != torch.float64 else torch.float64)
        warped = F.grid_sample(
            lab_f[:, None],
            grid.to(lab_f.dtype),
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        return out, warped[:, 0].round().to(labels.dtype)
    soft = onehot(labels)
    background = torch.zeros(1, soft.shape[1], 1, 1, dtype=soft.dtype, device=soft.device)
    background[:, 0] = 1.0
    # warp (onehot - e0) with zero padding, add e0 back: outside the image = background
    warped = F.grid_sample(
        soft - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out, warped + background


def authors_geometric_augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    *,
    num_classes: int,
    rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip: bool = True,
    rotation_step_degrees: float = 45.0,
    elastic_sigma: float = 5.0,
    elastic_grid: int = 3,
    elastic_tail: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment as the authors' fine-tuning: their two steps, with soft one-hot labels.

    Step 1, the affine option of each slice (:func:`geometric_params`): images bilinear, labels
    by nearest neighbour, zero outside. Step 2, the elastic field on a random tail of the batch
    (all rows with ``elastic_tail=False``): the image and the **one-hot** label bilinearly, edge
    values repeated outside the image (as their dense warp), so deformed labels are soft
    (``fidelity.soft_label_warp``; :func:`geometric_augment` composes both steps into one
    sampling grid instead).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, H, W), integer
        Label maps with values in [0, `num_classes`).
    generator : torch.Generator
        Source of randomness (the draws of :func:`geometric_params`).
    num_classes : int
        K.
    rotation_degrees, scale_range, flip, rotation_step_degrees : see :func:`geometric_params`
        The affine options.
    elastic_sigma, elastic_grid : see :func:`geometric_params`
        The elastic field.
    elastic_tail : bool, default True
        Deform only rows ``n0 .. N-1``, ``n0`` uniform in {1, ..., N - 2} (the authors' 2 to
        N - 1 deformed slices; ``fidelity.elastic_tail``).

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        Augmented images.
    labels : torch.Tensor of shape (N, K, H, W)
        Soft labels (one-hot where a row is not deformed), the images' dtype; every pixel sums
        to 1.

    Raises
    ------
    ValueError
        If shapes or parameters are invalid.
    TypeError
        If `labels` is not an integer tensor.

    Notes
    -----
    Their field is applied as ``out(p) = in(p - d(p))``, this one as ``in(p + d(p))``; the
    displacements are zero-mean Gaussian, so both have the same law.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 1, 16, 16, generator=g)
    >>> y = torch.randint(0, 3, (4, 16, 16), generator=g)
    >>> xa, ya = authors_geometric_augment(x, y, g, num_classes=3)
    >>> tuple(ya.shape), bool(torch.allclose(ya.sum(1), torch.ones(4, 16, 16)))
    ((4, 3, 16, 16), True)
    """
    _check_images(images)
    _check_generator(generator)
    n, _, h, w = images.shape
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n, h, w):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
        msg = f"`labels` must be a tensor of shape (N, H, W) = ({n}, {h}, {w}); got {got}."
        raise ValueError(msg)
    if labels.is_floating_point() or labels.is_complex():
        msg = f"`labels` must have an integer dtype; got dtype {labels.dtype}."
        raise TypeError(msg)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        msg = f"`num_classes` must be a positive integer; got {num_classes!r}."
        raise ValueError(msg)
    theta, displacement = geometric_params(
        n, h, w, generator,
        rotation_degrees=rotation_degrees, scale_range=scale_range, flip=flip,
        rotation_step_degrees=rotation_step_degrees, elastic_sigma=elastic_sigma,
        elastic_grid=elastic_grid, elastic_tail=elastic_tail,
        device=images.device, dtype=images.dtype,
    )
    return authors_warp(images, labels, theta, displacement, num_classes=num_classes)


def authors_warp(
    images: torch.Tensor,
    labels: torch.Tensor,
    theta: torch.Tensor,
    displacement: torch.Tensor | None,
    *,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the two resampling steps of :func:`authors_geometric_augment` to given transforms.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, H, W), integer
        Label maps.
    theta : torch.Tensor of shape (N, 2, 3)
        Affine maps (:func:`warp`).
    displacement : torch.Tensor of shape (N, 2, H, W) or None
        Elastic field in pixels; rows that are exactly zero are left as step 1 made them.
    num_classes : int
        K.

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        The images after both steps.
    labels : torch.Tensor of shape (N, K, H, W)
        Soft labels in the images' dtype.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(1, 1, 4, 4)
    >>> y = torch.tensor([[[0, 1, 1, 0]] * 4])
    >>> eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> xa, ya = authors_warp(x, y, eye, None, num_classes=2)
    >>> bool(torch.allclose(xa, x)), ya[0, 1, 0].tolist()
    (True, [0.0, 1.0, 1.0, 0.0])
    """
    lab = warp(labels[:, None].to(images.dtype), theta, mode="nearest")[:, 0].round().to(
        torch.int64
    )
    out = warp(images, theta)
    classes = torch.arange(num_classes, device=images.device).reshape(1, -1, 1, 1)
    soft = (lab[:, None] == classes).to(images.dtype)
    if displacement is None:
        return out, soft
    eye = torch.zeros_like(theta)
    eye[:, 0, 0] = 1.0
    eye[:, 1, 1] = 1.0
    deformed = (displacement.abs().amax(dim=(1, 2, 3)) > 0).reshape(-1, 1, 1, 1)
    out = torch.where(deformed, warp(out, eye, displacement, padding_mode="border"), out)
    soft = torch.where(deformed, warp(soft, eye, displacement, padding_mode="border"), soft)
    return out, soft
