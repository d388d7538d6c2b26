"""Building blocks shared by the UNet and the projection heads (private).

Every convolution follows the original network's ``conv`` layer (Chaitanya et al., NeurIPS 2020,
arXiv:2006.10511): stride 1, TensorFlow "SAME" padding, optional bias, then normalisation, then
activation, each optional. For an even kernel (the 2×2 up-convolution) "SAME" pads one pixel more
at the end of each spatial axis than at its start -- bottom/right in 2-D -- which is what
:class:`ConvNormAct` does; an odd kernel pads symmetrically.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import torch
import torch.nn.functional as nnf
from torch import nn

__all__ = [
    "ActName",
    "ConvNormAct",
    "ConvSettings",
    "NormName",
    "conv_module",
    "he_normal_",
    "make_activation",
    "make_norm",
    "same_padding",
]

NormName = Literal["batch", "instance", "none"]
ActName = Literal["relu", "leakyrelu"]

_LEAKY_SLOPE = 0.01


class ConvSettings(TypedDict, total=False):
    """Keyword settings shared by the convolutions of one network."""

    spatial_dims: int
    bias: bool
    norm: NormName | None
    act: ActName | None
    dropout: float
    norm_eps: float
    norm_momentum: float


def same_padding(kernel_size: int, spatial_dims: int) -> tuple[int, ...]:
    """TensorFlow "SAME" padding (stride 1) in the order :func:`torch.nn.functional.pad` takes.

    The total padding per axis is ``kernel_size - 1``; the start of the axis gets
    ``(kernel_size - 1) // 2`` and the end the rest, so an even kernel pads one more pixel at the
    end (bottom/right).

    Parameters
    ----------
    kernel_size : int
        Kernel size, the same along every spatial axis.
    spatial_dims : int
        Number of spatial axes.

    Returns
    -------
    tuple of int
        ``(start_last, end_last, start_second_last, end_second_last, ...)``.
    """
    total = kernel_size - 1
    start = total // 2
    return (start, total - start) * spatial_dims


def conv_module(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """Return the convolution class for `spatial_dims` (2 or 3)."""
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def make_norm(
    norm: NormName | None, channels: int, spatial_dims: int, *, eps: float, momentum: float
) -> nn.Module:
    """Normalisation layer by name (``"batch"``, ``"instance"`` or ``"none"``/``None``)."""
    if norm == "batch":
        cls_bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        return cls_bn(channels, eps=eps, momentum=momentum)
    if norm == "instance":
        cls_in = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls_in(channels, eps=eps, momentum=momentum, affine=True)
    return nn.Identity()


def make_activation(act: ActName | None) -> nn.Module:
    """Activation layer by name (``"relu"``, ``"leakyrelu"`` or ``None``)."""
    if act == "relu":
        return nn.ReLU()
    if act == "leakyrelu":
        return nn.LeakyReLU(_LEAKY_SLOPE)
    return nn.Identity()


def he_normal_(weight: torch.Tensor, act: ActName | None = "relu") -> torch.Tensor:
    """He-normal initialisation, normal(0, gain/sqrt(fan_in)), in place."""
    if act == "leakyrelu":
        return nn.init.kaiming_normal_(
            weight, a=_LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu"
        )
    return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


class ConvNormAct(nn.Module):
    """Convolution with "SAME" padding, then normalisation, activation and dropout.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    kernel_size : int
        Kernel size (square/cubic).
    spatial_dims : int
        2 or 3.
    bias : bool
        Whether the convolution has a bias.
    norm : {"batch", "instance", "none"} or None
        Normalisation after the convolution.
    act : {"relu", "leakyrelu"} or None
        Activation after the normalisation.
    dropout : float
        Dropout probability after the activation (no layer when 0).
    norm_eps, norm_momentum : float
        Normalisation settings.
    init_act : {"relu", "leakyrelu"} or None
        Non-linearity used for the He-normal gain (defaults to `act`, ReLU when `act` is None).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        spatial_dims: int = 2,
        bias: bool = True,
        norm: NormName | None = "batch",
        act: ActName | None = "relu",
        dropout: float = 0.0,
        norm_eps: float = 1e-3,
        norm_momentum: float = 0.01,
        init_act: ActName | None = None,
    ) -> None:
        super().__init__()
        pad = same_padding(kernel_size, spatial_dims)
        symmetric = all(pad[i] == pad[i + 1] for i in range(0, len(pad), 2))
        self._explicit_pad: tuple[int, ...] | None = None if symmetric else pad
        self.conv = conv_module(spatial_dims)(
            in_channels,
            out_channels,
            kernel_size,
            padding=pad[0] if symmetric else 0,
            bias=bias,
        )
        self.norm = make_norm(
            norm, out_channels, spatial_dims, eps=norm_eps, momentum=norm_momentum
        )
        self.act = make_activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        he_normal_(self.conv.weight, init_act if init_act is not None else (act or "relu"))
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply pad → conv → norm → act → dropout."""
        if self._explicit_pad is not None:
            x = nnf.pad(x, self._explicit_pad)
        out: torch.Tensor = self.dropout(self.act(self.norm(self.conv(x))))
        return out

    def extra_repr(self) -> str:
        """Show the explicit (asymmetric) padding when there is one."""
        return "" if self._explicit_pad is None else f"same_pad={self._explicit_pad}"

