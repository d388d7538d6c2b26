"""Mixup of images and one-hot labels: :func:`mixup`."""

from __future__ import annotations

import numpy as np
import torch

from ._common import _check_generator, _check_images, _check_nonneg

__all__ = ["MIXUP_ALPHA", "mixup"]

#: The one default Mixup α of the package (:func:`mixup` and ``finetune.mixup_alpha``): neither
#: the paper's supplement nor the authors' code states α; 0.2 is the value of the Mixup paper's
#: ImageNet experiments (Zhang et al., ICLR 2018, α in [0.1, 0.4] working there).
MIXUP_ALPHA = 0.2


def mixup(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    *,
    alpha: float = MIXUP_ALPHA,
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
    alpha : float, default :data:`MIXUP_ALPHA` (0.2)
        :math:`\lambda_i \sim \mathrm{Beta}(\alpha, \alpha)` per image; 0 gives the identity.
        Neither the paper's supplement nor the authors' code (which has no Mixup) states α; the
        default is the value of the Mixup paper's ImageNet experiments (Zhang et al. 2018, who
        report α in [0.1, 0.4] working there).

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
    The result is a function of the generator state. With a CPU generator the Beta draws use
    NumPy seeded from `generator` (torch has no generator-aware Beta sampler); with a generator
    on an accelerator they are drawn on that device by ``_beta_on_device``, so the call
    reads nothing back to the host (no synchronisation in a training step).

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
    if generator.device.type == "cpu":
        seed = torch.randint(0, 2**62, (1,), generator=generator)
        lam = torch.as_tensor(np.random.default_rng(int(seed)).beta(a, a, size=n))
    else:
        lam = _beta_on_device(a, n, generator)
    lam = lam.to(images.device)
    return _mix(images, perm, lam), _mix(labels, perm, lam)


_PROPOSALS = 8  # Marsaglia-Tsang accepts >= 95 % for shape >= 1: all 8 rejected has p < 1e-10


def _beta_on_device(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    r"""``n`` draws of :math:`\mathrm{Beta}(\alpha, \alpha)` (float64) on the generator's device.

    :math:`B = G_1 / (G_1 + G_2)` with :math:`G_i \sim \mathrm{Gamma}(\alpha, 1)`; each gamma
    draw is Marsaglia and Tsang's squeeze-free method (ACM TOMS 26, 2000) for shape
    :math:`\alpha + 1`, boosted to shape :math:`\alpha` by :math:`U^{1/\alpha}`, with a fixed
    number of proposals evaluated at once and the first accepted one kept: no data-dependent
    loop, no value read back to the host. The ratio is formed in log space (a sigmoid of the
    difference of log-gammas), so small :math:`\alpha` cannot give 0/0. If every proposal of
    a draw is rejected (probability below 1e-10) the proposal's mode is used.
    """
    dev, f64 = generator.device, torch.float64
    d = alpha + 1.0 - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    x = torch.randn((n, 2, _PROPOSALS), generator=generator, device=dev, dtype=f64)
    u = torch.rand((n, 2, _PROPOSALS), generator=generator, device=dev, dtype=f64)
    boost = torch.rand((n, 2), generator=generator, device=dev, dtype=f64)
    v = (1.0 + c * x) ** 3
    v_pos = v.clamp_min(torch.finfo(torch.float64).tiny)
    accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v_pos + d * torch.log(v_pos))
    first = torch.argmax(accept.to(torch.int8), dim=-1, keepdim=True)  # 0 when none accepted
    log_v = torch.log(torch.gather(v_pos, -1, first)).squeeze(-1)
    log_v = torch.where(accept.any(dim=-1), log_v, torch.zeros_like(log_v))  # mode: v = 1
    log_gamma = log_v + torch.log(boost) / alpha  # log(d) cancels in the ratio
    return torch.sigmoid(log_gamma[:, 0] - log_gamma[:, 1])


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
