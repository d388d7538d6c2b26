"""Mixup of images and one-hot labels: :func:`mixup`."""

from __future__ import annotations

import numpy as np
import torch

from ._common import _check_generator, _check_images, _check_nonneg

__all__ = ["mixup"]


def mixup(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    *,
    alpha: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mixup: blend each image and its soft label map with a random partner of the batch.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, K, H, W)
        One-hot (or soft) label maps, floating point.
    generator : torch.Generator
        Source of randomness.
    alpha : float, default 0.2
        :math:`\lambda_i \sim \mathrm{Beta}(\alpha, \alpha)` per image; 0 gives the identity.

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        :math:`\lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}` with :math:`\pi` a random permutation.
    labels : torch.Tensor of shape (N, K, H, W)
        The same blend of the label maps.

    Raises
    ------
    ValueError
        If shapes disagree or `alpha` < 0.

    Notes
    -----
    The Beta draws use NumPy seeded from `generator` (torch has no generator-aware Beta
    sampler), so the result is still a function of the generator state.

    References
    ----------
    Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 1, 8, 8, generator=g)
    >>> y = torch.nn.functional.one_hot(torch.randint(0, 3, (4, 8, 8), generator=g), 3)
    >>> xm, ym = mixup(x, y.permute(0, 3, 1, 2).float(), g)
    >>> bool(torch.allclose(ym.sum(dim=1), torch.ones(4, 8, 8)))
    True
    """
    _check_images(images)
    _check_images(labels, "labels")
    _check_generator(generator)
    a = _check_nonneg(alpha, "alpha")
    n = images.shape[0]
    if labels.shape[0] != n or labels.shape[-2:] != images.shape[-2:]:
        msg = (
            f"`labels` must have shape (N, K, H, W) matching `images` {tuple(images.shape)}; "
            f"got {tuple(labels.shape)}."
        )
        raise ValueError(msg)
    if a == 0.0:
        return images.clone(), labels.clone()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
    lam_np = np.random.default_rng(int(seed)).beta(a, a, size=n)
    lam = torch.as_tensor(lam_np, device=images.device)
    return _mix(images, perm, lam), _mix(labels, perm, lam)


def _mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam_i x_i + (1 - lam_i) x_perm(i)``, as ``lerp(x_perm(i), x_i, lam_i)``.

    On the CPU one ``lerp`` per image straight into the output batch: each output byte is
    written once from its two sources (the memory-traffic floor), with no gathered copy of the
    partners and no concatenation. Elsewhere one gather and one ``lerp`` over the batch.
    """
    if x.device.type != "cpu":
        return torch.lerp(x.index_select(0, perm), x, lam.to(x.dtype).reshape(-1, 1, 1, 1))
    out = torch.empty_like(x)  # x's memory layout (e.g. channels-last one-hot labels)
    for i, (j, w) in enumerate(zip(perm.tolist(), lam.tolist(), strict=True)):
        torch.lerp(x[j], x[i], w, out=out[i])
    return out
