r"""K UNets of one architecture stacked into one grouped network (many runs on one device).

A :class:`GroupedUNet` holds K independent copies of a :class:`~contrastlocal.models.UNet` in one
module whose every convolution is a grouped convolution (``groups=K``, each network's channels a
contiguous block), every batch norm runs over the K·C channels (per channel, so each network
keeps its own batch statistics and running averages), pooling and upsampling act per channel, the
skip concatenations interleave the groups, and the head is grouped as well. Input block k (channels
``k·C_in … (k+1)·C_in - 1``) is network k's own images, output block k network k's logits. One
forward / backward / optimiser step then trains the K networks at the cost of one launch sequence.

Since Adam (and AdamW, SGD with momentum) is element-wise, **one** such optimiser over the grouped
parameters performs exactly the updates of K separate optimisers over the K networks, provided
that (1) every network uses the same learning rate, betas, eps, weight decay and amsgrad setting,
(2) all networks take the same number of steps (Adam's bias correction uses one step count per
tensor; a network that stops early must be masked, not given a zero gradient, since its moments
keep moving), and (3) the training loss is the *sum* of the K per-network losses (a mean would
scale every gradient by 1/K, which Adam's eps term does not ignore).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from .._validation import check_int_in_range
from ._layers import conv_module, same_padding
from ._unet import UNet

__all__ = ["GroupedUNet"]

_TRACKED = "num_batches_tracked"


class _GroupedConvNormAct(nn.Module):
    """K copies of ``ConvNormAct`` side by side: grouped conv → K·C-channel norm → activation."""

    def __init__(
        self,
        groups: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        spatial_dims: int,
        bias: bool,
        norm: str | None,
        act: str | None,
        norm_eps: float,
        norm_momentum: float,
    ) -> None:
        super().__init__()
        pad = same_padding(kernel_size, spatial_dims)
        symmetric = all(pad[i] == pad[i + 1] for i in range(0, len(pad), 2))
        self._explicit_pad: tuple[int, ...] | None = None if symmetric else pad
        self.conv = conv_module(spatial_dims)(
            groups * in_channels,
            groups * out_channels,
            kernel_size,
            padding=pad[0] if symmetric else 0,
            bias=bias,
            groups=groups,
        )
        channels = groups * out_channels
        self.norm: nn.Module
        if norm == "batch":
            cls_bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
            bn = cls_bn(channels, eps=norm_eps, momentum=norm_momentum)
            # one batch counter per network (all advance together)
            bn.num_batches_tracked = torch.zeros(groups, dtype=torch.long)
            self.norm = bn
        elif norm == "instance":
            cls_in = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
            self.norm = cls_in(channels, eps=norm_eps, momentum=norm_momentum, affine=True)
        else:
            self.norm = nn.Identity()
        self.act: nn.Module = (
            nn.ReLU() if act == "relu" else nn.LeakyReLU(0.01) if act == "leakyrelu"
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply pad → grouped conv → norm → act."""
        if self._explicit_pad is not None:
            x = nnf.pad(x, self._explicit_pad)
        out: torch.Tensor = self.act(self.norm(self.conv(x)))
        return out


def _interleave(groups: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate per group: ``[a_0, b_0, a_1, b_1, …]`` along channels (any memory format)."""
    parts: list[torch.Tensor] = []
    for pa, pb in zip(a.chunk(groups, dim=1), b.chunk(groups, dim=1), strict=True):
        parts += [pa, pb]
    return torch.cat(parts, dim=1)


class _GroupedEncoderLevel(nn.Module):
    def __init__(self, conv1: _GroupedConvNormAct, conv2: _GroupedConvNormAct) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out


class _GroupedDecoderBlock(nn.Module):
    def __init__(
        self,
        groups: int,
        upsample_mode: str,
        up_conv: _GroupedConvNormAct,
        conv1: _GroupedConvNormAct,
        conv2: _GroupedConvNormAct | None,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.upsample_mode = upsample_mode
        self.up_conv = up_conv
        self.conv1 = conv1
        self.conv2 = conv2

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = nnf.interpolate(x, scale_factor=2.0, mode=self.upsample_mode)
        x = self.conv1(_interleave(self.groups, self.up_conv(x), skip))
        return x if self.conv2 is None else self.conv2(x)


class _GroupedHead(nn.Module):
    def __init__(
        self,
        conv1: _GroupedConvNormAct,
        conv2: _GroupedConvNormAct,
        out_conv: _GroupedConvNormAct,
    ) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.out_conv = out_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out_conv(self.conv2(self.conv1(x)))
        return out


def _architecture(net: UNet) -> dict[str, Any]:
    """Return the settings that must agree for networks to be grouped (and rebuild one)."""
    first: Any = net.encoder_levels[0]
    block: Any = net.decoder_blocks[0]
    return {
        "in_channels": net.in_channels,
        "out_channels": net.out_channels,
        "channels": net.channels,
        "up_kernel_size": int(block.up_conv.conv.kernel_size[0]),
        "upsample_mode": block.upsample_mode,
        "norm": "none" if net.norm is None else net.norm,
        "act": net.act,
        "spatial_dims": net.spatial_dims,
        "kernel_size": int(first.conv1.conv.kernel_size[0]),
        "norm_eps": net.norm_eps,
        "norm_momentum": net.norm_momentum,
    }


class GroupedUNet(nn.Module):
    r"""K UNets of one architecture computed as one network of grouped convolutions.

    Build it from existing networks with :meth:`from_unets` and take them back with
    :meth:`to_unets` / :meth:`unet` / :meth:`state_dict_of`. Parameter, buffer and module names
    mirror :class:`UNet`'s (``encoder_levels.0.conv1.conv.weight``, …); every tensor holds the K
    networks' tensors concatenated along dim 0, and every batch norm's ``num_batches_tracked`` is
    a vector of K counters.

    Parameters
    ----------
    groups : int
        K, the number of networks.
    **architecture : Any
        The :class:`UNet` settings shared by the K networks (``in_channels``, ``out_channels``,
        ``channels``, ``up_kernel_size``, ``upsample_mode``, ``norm``, ``act``, ``spatial_dims``,
        ``kernel_size``, ``norm_eps``, ``norm_momentum``; dropout is not supported).

    Raises
    ------
    ValueError
        If `groups` < 1 or a setting is invalid (checked by building one :class:`UNet`).

    Notes
    -----
    Input of shape (B, K·C_in, H, W): block k holds network k's batch (each network its own
    images, the same batch size B for all); output (B, K·classes, H, W). Use :meth:`stack` and
    :meth:`split` to go between per-network tensors and the grouped layout. Batch norm over the
    K·C channels normalises each channel over (B, H, W), which is each network's own batch norm;
    the results equal the K networks' to floating-point rounding (grouped and plain convolutions
    may sum in a different order).

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import GroupedUNet, UNet
    >>> nets = [UNet(1, 4, channels=(4, 8, 8)) for _ in range(3)]
    >>> grouped = GroupedUNet.from_unets(nets)
    >>> x = [torch.randn(2, 1, 16, 16) for _ in range(3)]
    >>> y = grouped.split(grouped(grouped.stack(x)))
    >>> len(y), tuple(y[0].shape)
    (3, (2, 4, 16, 16))
    >>> bool(torch.allclose(y[1], nets[1](x[1]), atol=1e-5))
    True
    """

    def __init__(self, groups: int, **architecture: Any) -> None:
        super().__init__()
        check_int_in_range(groups, "groups", 1)
        if architecture.get("dropout", 0.0):
            msg = (
                f"GroupedUNet does not support dropout (its draws would differ from the "
                f"separate networks'); got dropout={architecture['dropout']!r}."
            )
            raise ValueError(msg)
        architecture.pop("dropout", None)
        probe = UNet(**architecture)  # validates every setting
        arch = _architecture(probe)
        self.groups = groups
        self.architecture: dict[str, Any] = arch
        self.in_channels = arch["in_channels"]
        self.out_channels = arch["out_channels"]
        self.channels: tuple[int, ...] = tuple(arch["channels"])
        self.spatial_dims: int = arch["spatial_dims"]
        self.size_divisor = probe.size_divisor
        norm = None if arch["norm"] == "none" else arch["norm"]
        k = arch["kernel_size"]

        def block(cin: int, cout: int, kernel: int, **kw: Any) -> _GroupedConvNormAct:
            settings: dict[str, Any] = {
                "spatial_dims": self.spatial_dims, "bias": True, "norm": norm,
                "act": arch["act"], "norm_eps": arch["norm_eps"],
                "norm_momentum": arch["norm_momentum"],
            }
            settings.update(kw)
            return _GroupedConvNormAct(groups, cin, cout, kernel, **settings)

        self.encoder_levels = nn.ModuleList()
        previous = self.in_channels
        for c in self.channels:
            self.encoder_levels.append(_GroupedEncoderLevel(block(previous, c, k), block(c, c, k)))
            previous = c
        self.decoder_blocks = nn.ModuleList()
        depth = len(self.channels)
        for index in range(1, depth):
            target = self.channels[depth - 1 - index]
            self.decoder_blocks.append(
                _GroupedDecoderBlock(
                    groups,
                    arch["upsample_mode"],
                    block(previous, target, arch["up_kernel_size"]),
                    block(2 * target, target, k),
                    None if index == depth - 1 else block(target, target, k),
                )
            )
            previous = target
        self.head = _GroupedHead(
            block(previous, previous, k),
            block(previous, previous, k),
            block(previous, self.out_channels, k, bias=False, norm=None, act=None),
        )

    # ------------------------------------------------------------------------- conversion
    @classmethod
    def from_unets(cls, unets: Sequence[UNet]) -> GroupedUNet:
        """Stack networks of one architecture into a grouped network (weights and buffers copied).

        Parameters
        ----------
        unets : sequence of UNet
            The K networks, in group order; same architecture, no dropout.

        Returns
        -------
        GroupedUNet
            On the first network's device and dtype, in its training mode.

        Raises
        ------
        TypeError
            If an entry is not a :class:`UNet`.
        ValueError
            If `unets` is empty, the architectures differ, or a network has dropout or a
            stats-frozen encoder.
        """
        nets = list(unets)
        if not nets:
            msg = "`unets` must hold at least one UNet; got none."
            raise ValueError(msg)
        for i, net in enumerate(nets):
            if not isinstance(net, UNet):
                msg = f"`unets[{i}]` must be a contrastlocal.models.UNet; got {type(net).__name__}."
                raise TypeError(msg)
            if any(isinstance(m, nn.Dropout) for m in net.modules()):
                msg = f"`unets[{i}]` has dropout layers; GroupedUNet does not support dropout."
                raise ValueError(msg)
            if net._encoder_frozen_stats:
                msg = (
                    f"`unets[{i}]` has a stats-frozen encoder (freeze_encoder); GroupedUNet "
                    "trains every batch norm."
                )
                raise ValueError(msg)
        arch = _architecture(nets[0])
        for i, net in enumerate(nets[1:], start=1):
            other = _architecture(net)
            if other != arch:
                diff = sorted(k for k in arch if arch[k] != other[k])
                msg = f"`unets[{i}]` differs from `unets[0]` in {', '.join(diff)}."
                raise ValueError(msg)
        ref = next(nets[0].parameters())
        grouped = cls(len(nets), **arch).to(device=ref.device, dtype=ref.dtype)
        states = [net.state_dict() for net in nets]
        merged = {
            key: (torch.stack if key.endswith(_TRACKED) else torch.cat)(
                [s[key] for s in states], 0
            )
            for key in states[0]
        }
        grouped.load_state_dict(merged)
        grouped.train(nets[0].training)
        return grouped

    def state_dict_of(self, k: int) -> dict[str, torch.Tensor]:
        """Network `k`'s state dict (the keys of a :class:`UNet`), as fresh copies.

        Parameters
        ----------
        k : int
            Group index, ``0 … K - 1``.

        Returns
        -------
        dict of str to tensor
            Loadable into a UNet of the same architecture (``UNet.load_state_dict``).

        Raises
        ------
        ValueError
            If `k` is out of range.
        """
        check_int_in_range(k, "k", 0, self.groups - 1)
        out: dict[str, torch.Tensor] = {}
        for key, tensor in self.state_dict().items():
            t = tensor.detach()
            part = t[k] if key.endswith(_TRACKED) else t.chunk(self.groups, 0)[k]
            out[key] = part.clone()
        return out

    def unet(self, k: int) -> UNet:
        """Return network `k` as a separate :class:`UNet` (same device, dtype, training mode).

        Parameters
        ----------
        k : int
            Group index, ``0 … K - 1``.

        Returns
        -------
        UNet
            A new network holding copies of group `k`'s weights and buffers.

        Raises
        ------
        ValueError
            If `k` is out of range.
        """
        net = UNet(**self.architecture)
        ref = next(self.parameters())
        net.to(device=ref.device, dtype=ref.dtype)
        net.load_state_dict(self.state_dict_of(k))
        net.train(self.training)
        return net

    def to_unets(self) -> list[UNet]:
        """Return all K networks as separate :class:`UNet` instances.

        Returns
        -------
        list of UNet
            ``[self.unet(0), …, self.unet(K - 1)]``.
        """
        return [self.unet(k) for k in range(self.groups)]

    def load_unet(self, k: int, source: UNet | dict[str, torch.Tensor]) -> None:
        """Overwrite network `k`'s weights and buffers in place.

        Parameters
        ----------
        k : int
            Group index, ``0 … K - 1``.
        source : UNet or dict of str to tensor
            A network of the same architecture, or its state dict.

        Raises
        ------
        ValueError
            If `k` is out of range.
        """
        check_int_in_range(k, "k", 0, self.groups - 1)
        state = source.state_dict() if isinstance(source, nn.Module) else source
        own = self.state_dict()
        with torch.no_grad():
            for key, tensor in own.items():
                part = tensor[k] if key.endswith(_TRACKED) else tensor.chunk(self.groups, 0)[k]
                part.copy_(state[key])

    # ------------------------------------------------------------------------- layout
    def stack(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate K per-network batches into the grouped layout.

        Parameters
        ----------
        parts : sequence of tensor of shape (B, C, ...)
            Network k's batch at position k.

        Returns
        -------
        tensor of shape (B, K·C, ...)
            The grouped input.

        Raises
        ------
        ValueError
            If `parts` does not hold K tensors.
        """
        if len(parts) != self.groups:
            msg = f"`parts` must hold {self.groups} tensors (one per network); got {len(parts)}."
            raise ValueError(msg)
        return torch.cat(list(parts), dim=1)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Split a grouped tensor into K per-network views.

        Parameters
        ----------
        x : tensor of shape (B, K·C, ...)
            A grouped input or output.

        Returns
        -------
        list of tensor of shape (B, C, ...)
            Network k's block at position k (views, no copy).

        Raises
        ------
        ValueError
            If dim 1 is not divisible by K.
        """
        if x.ndim < 2 or x.shape[1] % self.groups:
            msg = (
                f"`x` must have a channel axis (dim 1) divisible by groups = {self.groups}; "
                f"got shape {tuple(x.shape)}."
            )
            raise ValueError(msg)
        return list(x.chunk(self.groups, dim=1))

    # ------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the logits of the K networks, (B, K·out_channels, H, W[, Z]).

        Parameters
        ----------
        x : tensor of shape (B, K·in_channels, H, W) or (B, K·in_channels, H, W, Z)
            Block k of the channels is network k's batch.

        Returns
        -------
        tensor
            Block k of the channels is network k's logits.

        Raises
        ------
        ValueError
            If `x` has the wrong rank, channel count or spatial size.
        """
        self._check_input(x)
        skips: list[torch.Tensor] = []
        last = len(self.encoder_levels) - 1
        for index, level in enumerate(self.encoder_levels):
            x = level(x)
            if index < last:
                skips.append(x)
                x = nnf.max_pool2d(x, 2) if self.spatial_dims == 2 else nnf.max_pool3d(x, 2)
        for index, block in enumerate(self.decoder_blocks):
            x = block(x, skips[len(skips) - 1 - index])
        out: torch.Tensor = self.head(x)
        return out

    def extra_repr(self) -> str:
        """Summarise the configuration."""
        return (
            f"groups={self.groups}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, channels={self.channels}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            msg = f"`x` must be a torch.Tensor; got {type(x).__name__}."
            raise TypeError(msg)
        ndim = self.spatial_dims + 2
        expected = self.groups * self.in_channels
        if x.ndim != ndim or x.shape[1] != expected:
            msg = (
                f"`x` must be {ndim}-D with {expected} channels (groups {self.groups} x "
                f"in_channels {self.in_channels}) on dim 1; got shape {tuple(x.shape)}."
            )
            raise ValueError(msg)
        if any(s <= 0 or s % self.size_divisor for s in x.shape[2:]):
            msg = (
                f"`x` spatial sizes must be positive multiples of {self.size_divisor}; got shape "
                f"{tuple(x.shape)}."
            )
            raise ValueError(msg)
