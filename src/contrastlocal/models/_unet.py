"""The paper's UNet with separately callable encoder and decoder blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn.functional as nnf
from torch import nn

from .._validation import check_choice, check_int_in_range
from ._layers import ActName, ConvNormAct, ConvSettings, NormName

__all__ = ["UNet"]

UpsampleMode = Literal["nearest", "bilinear", "trilinear"]

#: State-dict prefix of the encoder inside a :class:`UNet`.
ENCODER_PREFIX = "encoder_levels."


def decoder_block_prefix(block: int) -> str:
    """State-dict prefix of decoder block `block` (1-based) inside a :class:`UNet`."""
    return f"decoder_blocks.{block - 1}."


class EncoderLevel(nn.Module):
    """Two convolutions at one resolution (the max-pool is applied by :meth:`UNet.encode`)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, settings: ConvSettings
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, **settings)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, **settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply both convolutions."""
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out


class DecoderBlock(nn.Module):
    """Upsample ×2 → up-convolution → concatenate the skip → one or two convolutions."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_convs: int,
        up_kernel_size: int,
        upsample_mode: UpsampleMode,
        kernel_size: int,
        settings: ConvSettings,
    ) -> None:
        super().__init__()
        self.upsample_mode = upsample_mode
        self.up_conv = ConvNormAct(in_channels, out_channels, up_kernel_size, **settings)
        self.conv1 = ConvNormAct(2 * out_channels, out_channels, kernel_size, **settings)
        self.conv2: ConvNormAct | None = (
            ConvNormAct(out_channels, out_channels, kernel_size, **settings)
            if num_convs == 2
            else None
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample `x`, convolve, concatenate `skip` along channels, convolve."""
        x = nnf.interpolate(x, scale_factor=2.0, mode=self.upsample_mode)
        x = torch.cat([self.up_conv(x), skip], dim=1)
        x = self.conv1(x)
        return x if self.conv2 is None else self.conv2(x)


class SegmentationHead(nn.Module):
    """Two convolutions with normalisation and activation, then a final convolution to logits."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, settings: ConvSettings
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, in_channels, kernel_size, **settings)
        self.conv2 = ConvNormAct(in_channels, in_channels, kernel_size, **settings)
        self.out_conv = ConvNormAct(
            in_channels,
            out_channels,
            kernel_size,
            spatial_dims=settings.get("spatial_dims", 2),
            bias=False,
            norm=None,
            act=None,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        logits: torch.Tensor = self.out_conv(self.conv2(self.conv1(x)))
        return logits


class UNet(nn.Module):
    r"""The UNet of Chaitanya et al. (2020), with callable encoder and decoder blocks.

    By default this is the network of the authors' code: an encoder of six levels of two 3×3
    convolutions (bias, batch norm, ReLU; channels 16, 32, 64, 128, 128, 128) with a 2×2 max-pool
    after the first five, five decoder blocks (nearest ×2 upsampling → 2×2 convolution →
    concatenation with the encoder skip → two 3×3 convolutions, one in the last block) and a
    segmentation head (two 3×3 convolutions with batch norm and ReLU, then a 3×3 convolution to
    `out_channels` logits without bias, normalisation or activation).

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input images.
    out_channels : int, default 4
        Number of classes (logit channels), background included.
    channels : sequence of int, default (16, 32, 64, 128, 128, 128)
        Channels of the encoder levels, shallow to deep; its length is the depth ``D``. There are
        ``D - 1`` max-pools and ``D - 1`` decoder blocks, so every spatial size of the input must be
        a positive multiple of ``2 ** (D - 1)`` (32 by default).
    up_kernel_size : int, default 2
        Kernel of the convolution after each upsampling. TensorFlow "SAME" padding is used: an even
        kernel pads one pixel at the bottom/right only.
    upsample_mode : {"nearest", "bilinear", "trilinear"}, default "nearest"
        Interpolation of the ×2 upsampling ("bilinear" needs 2-D, "trilinear" 3-D).
    norm : {"batch", "instance", "none"} or None, default "batch"
        Normalisation after every convolution except the final one.
    act : {"relu", "leakyrelu"}, default "relu"
        Activation after every normalisation.
    dropout : float, default 0.0
        Dropout probability after every activation (no dropout layers when 0).
    spatial_dims : {2, 3}, default 2
        2 for (N, C, H, W) images, 3 for (N, C, H, W, Z) volumes.
    kernel_size : int, default 3
        Kernel of all other convolutions (odd).
    norm_eps : float, default 1e-3
        Epsilon of the normalisation layers (the original's value).
    norm_momentum : float, default 0.01
        Running-statistics momentum (the original's exponential moving average decay 0.99).

    Raises
    ------
    ValueError
        If a size, channel count or option is out of range.

    See Also
    --------
    GlobalPretrainNetwork, LocalPretrainNetwork : The pre-training networks built around a UNet.
    transfer_encoder, transfer_decoder, freeze_encoder : The hand-over between stages.

    Notes
    -----
    The parts are the attributes ``encoder_levels`` (``D`` :class:`~torch.nn.Module` levels),
    ``decoder_blocks`` (``D - 1`` blocks, block :math:`l` at index ``l - 1``) and ``head``. In the
    state dict, the *encoder* is every key starting with ``"encoder_levels."`` and *decoder block*
    :math:`l` every key starting with ``f"decoder_blocks.{l - 1}."``; the head's keys start with
    ``"head."``.

    Decoder block :math:`l` outputs ``decoder_block_channels(l)`` channels at
    ``1 / decoder_block_factor(l)`` of the input size, :math:`C_l = c_{D-1-l}` and factor
    :math:`2^{D-1-l}`: with the defaults and a 192×192 input, 128 @ 12×12, 128 @ 24×24, 64 @ 48×48,
    32 @ 96×96 and 16 @ 192×192 for :math:`l = 1, \dots, 5`.

    Weights are He-normal (normal with standard deviation :math:`\sqrt{2 / \mathrm{fan\_in}}`),
    biases zero, normalisation :math:`\gamma = 1, \beta = 0`; unlike the original, kernels of equal
    shape do not start identical.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import UNet
    >>> _ = torch.manual_seed(0)
    >>> net = UNet(in_channels=1, out_channels=4)
    >>> x = torch.randn(2, 1, 64, 64)
    >>> net(x).shape
    torch.Size([2, 4, 64, 64])
    >>> bottleneck, skips = net.encode(x)
    >>> tuple(bottleneck.shape), [s.shape[1] for s in skips]
    ((2, 128, 2, 2), [16, 32, 64, 128, 128])
    >>> net.decode(bottleneck, skips, num_blocks=3).shape
    torch.Size([2, 64, 16, 16])
    >>> net.decoder_block_channels(3), net.decoder_block_factor(3)
    (64, 4)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        *,
        channels: Sequence[int] = (16, 32, 64, 128, 128, 128),
        up_kernel_size: int = 2,
        upsample_mode: UpsampleMode = "nearest",
        norm: NormName | None = "batch",
        act: ActName = "relu",
        dropout: float = 0.0,
        spatial_dims: int = 2,
        kernel_size: int = 3,
        norm_eps: float = 1e-3,
        norm_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        check_int_in_range(in_channels, "in_channels", 1)
        check_int_in_range(out_channels, "out_channels", 1)
        check_choice(spatial_dims, (2, 3), "spatial_dims")
        channels = tuple(channels)
        if len(channels) < 2:
            msg = f"`channels` must list at least 2 levels; got {channels}."
            raise ValueError(msg)
        for c in channels:
            check_int_in_range(c, "channels", 1)
        check_int_in_range(up_kernel_size, "up_kernel_size", 1)
        check_int_in_range(kernel_size, "kernel_size", 1)
        if kernel_size % 2 == 0:
            msg = f"`kernel_size` must be odd; got {kernel_size}."
            raise ValueError(msg)
        allowed_modes = ("nearest", "bilinear") if spatial_dims == 2 else ("nearest", "trilinear")
        check_choice(upsample_mode, allowed_modes, "upsample_mode")
        check_choice(norm, ("batch", "instance", "none", None), "norm")
        check_choice(act, ("relu", "leakyrelu"), "act")
        if not 0.0 <= dropout < 1.0:
            msg = f"`dropout` must be in [0, 1); got {dropout!r}."
            raise ValueError(msg)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels: tuple[int, ...] = channels
        self.spatial_dims = spatial_dims
        self.norm = None if norm == "none" else norm
        self.norm_eps = norm_eps
        self.norm_momentum = norm_momentum
        self.act: ActName = act
        self._encoder_frozen_stats = False

        settings: ConvSettings = {
            "spatial_dims": spatial_dims,
            "norm": self.norm,
            "act": act,
            "dropout": dropout,
            "norm_eps": norm_eps,
            "norm_momentum": norm_momentum,
        }
        self.encoder_levels = nn.ModuleList()
        previous = in_channels
        for c in channels:
            self.encoder_levels.append(
                EncoderLevel(previous, c, kernel_size, settings)
            )
            previous = c
        self.decoder_blocks = nn.ModuleList()
        depth = len(channels)
        for block in range(1, depth):
            target = channels[depth - 1 - block]
            self.decoder_blocks.append(
                DecoderBlock(
                    previous,
                    target,
                    num_convs=1 if block == depth - 1 else 2,
                    up_kernel_size=up_kernel_size,
                    upsample_mode=upsample_mode,
                    kernel_size=kernel_size,
                    settings=settings,
                )
            )
            previous = target
        self.head = SegmentationHead(previous, out_channels, kernel_size, settings)

    # ----------------------------------------------------------------------------- geometry
    @property
    def depth(self) -> int:
        """Number of encoder levels ``D``."""
        return len(self.channels)

    @property
    def num_decoder_blocks(self) -> int:
        """Number of decoder blocks, ``D - 1``."""
        return len(self.channels) - 1

    @property
    def bottleneck_channels(self) -> int:
        """Channels of the encoder output."""
        return self.channels[-1]

    @property
    def size_divisor(self) -> int:
        """Every input spatial size must be a positive multiple of this, ``2 ** (D - 1)``."""
        return 1 << (len(self.channels) - 1)

    def decoder_block_channels(self, num_blocks: int) -> int:
        """Return the channels :math:`C_l` of the output of decoder block `num_blocks` (1-based).

        Parameters
        ----------
        num_blocks : int
            Block index :math:`l`, in ``1 … D - 1``.

        Returns
        -------
        int
            :math:`C_l`.

        Raises
        ------
        ValueError
            If `num_blocks` is out of range.
        """
        self._check_num_blocks(num_blocks)
        return self.channels[self.depth - 1 - num_blocks]

    def decoder_block_factor(self, num_blocks: int) -> int:
        """Downsampling factor of the output of decoder block `num_blocks` relative to the input.

        Parameters
        ----------
        num_blocks : int
            Block index :math:`l`, in ``1 … D - 1``.

        Returns
        -------
        int
            ``2 ** (D - 1 - l)``: the map of block :math:`l` has size ``H / factor``.

        Raises
        ------
        ValueError
            If `num_blocks` is out of range.
        """
        self._check_num_blocks(num_blocks)
        return 1 << (self.depth - 1 - num_blocks)

    def decoder_feature_shape(
        self, num_blocks: int, image_size: int | Sequence[int]
    ) -> tuple[int, ...]:
        """Shape ``(C_l, H_l, W_l[, Z_l])`` of decoder block `num_blocks`'s output for one image.

        Parameters
        ----------
        num_blocks : int
            Block index :math:`l`, in ``1 … D - 1``.
        image_size : int or sequence of int
            Spatial size of the input (one int for a square/cubic input).

        Returns
        -------
        tuple of int
            Channels, then the spatial sizes.

        Raises
        ------
        ValueError
            If `num_blocks` is out of range or `image_size` is not a multiple of
            :attr:`size_divisor`.

        Examples
        --------
        >>> from contrastlocal.models import UNet
        >>> UNet().decoder_feature_shape(3, 192)
        (64, 48, 48)
        """
        sizes = self.check_image_size(image_size)
        factor = self.decoder_block_factor(num_blocks)
        return (self.decoder_block_channels(num_blocks), *(s // factor for s in sizes))

    def check_image_size(self, image_size: int | Sequence[int]) -> tuple[int, ...]:
        """Validate a spatial size and return it as a tuple with one entry per spatial axis.

        Parameters
        ----------
        image_size : int or sequence of int
            Spatial size of the input.

        Returns
        -------
        tuple of int
            The sizes.

        Raises
        ------
        ValueError
            If a size is not a positive multiple of :attr:`size_divisor`.
        """
        sizes = (
            (image_size,) * self.spatial_dims if isinstance(image_size, int) else tuple(image_size)
        )
        if len(sizes) != self.spatial_dims:
            msg = (
                f"`image_size` must have {self.spatial_dims} entries (one per spatial axis); "
                f"got {sizes}."
            )
            raise ValueError(msg)
        self._check_sizes(sizes, "image_size", sizes)
        return sizes

    # ----------------------------------------------------------------------------- forward
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder.

        Parameters
        ----------
        x : tensor of shape (N, C_in, H, W) or (N, C_in, H, W, Z)
            Images; every spatial size a positive multiple of :attr:`size_divisor`.

        Returns
        -------
        bottleneck : tensor of shape (N, c_{D-1}, H / 2^{D-1}, W / 2^{D-1})
            Output of the last encoder level (the global loss's input to g_1).
        skips : list of tensor
            Outputs of levels ``1 … D - 1`` before their max-pool, shallow to deep.

        Raises
        ------
        ValueError
            If `x` has the wrong number of dimensions or channels, or a spatial size that the
            encoder cannot halve ``D - 1`` times.
        TypeError
            If `x` is not a tensor.
        """
        self._check_input(x)
        skips: list[torch.Tensor] = []
        last = len(self.encoder_levels) - 1
        for index, level in enumerate(self.encoder_levels):
            x = level(x)
            if index < last:
                skips.append(x)
                x = _max_pool(x, self.spatial_dims)
        return x, skips

    @overload
    def decode(
        self,
        bottleneck: torch.Tensor,
        skips: Sequence[torch.Tensor],
        num_blocks: int | None = ...,
        return_features: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def decode(
        self,
        bottleneck: torch.Tensor,
        skips: Sequence[torch.Tensor],
        num_blocks: int | None = ...,
        *,
        return_features: Literal[True],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @overload
    def decode(
        self,
        bottleneck: torch.Tensor,
        skips: Sequence[torch.Tensor],
        num_blocks: int | None,
        return_features: Literal[True],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def decode(
        self,
        bottleneck: torch.Tensor,
        skips: Sequence[torch.Tensor],
        num_blocks: int | None = None,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the first `num_blocks` decoder blocks.

        Parameters
        ----------
        bottleneck : tensor of shape (N, c_{D-1}, h, w)
            Encoder output from :meth:`encode`.
        skips : sequence of tensor
            Encoder skips from :meth:`encode` (shallow to deep, ``D - 1`` of them).
        num_blocks : int or None, default None
            :math:`l` in ``1 … D - 1``: run blocks ``1 … l`` (deepest first). None runs all.
        return_features : bool, default False
            Also return the output of every block that ran.

        Returns
        -------
        tensor of shape (N, C_l, H / 2^{D-1-l}, W / 2^{D-1-l})
            Output of block :math:`l` (before the segmentation head).
        list of tensor
            Only with ``return_features=True``: the outputs of blocks ``1 … l``.

        Raises
        ------
        ValueError
            If `num_blocks` is out of range or `skips` has the wrong length.
        """
        blocks = self.num_decoder_blocks if num_blocks is None else num_blocks
        self._check_num_blocks(blocks)
        if len(skips) != self.num_decoder_blocks:
            msg = (
                f"`skips` must hold the {self.num_decoder_blocks} encoder skips from `encode`; "
                f"got {len(skips)}."
            )
            raise ValueError(msg)
        x = bottleneck
        features: list[torch.Tensor] = []
        for index in range(blocks):
            x = self.decoder_blocks[index](x, skips[len(skips) - 1 - index])
            features.append(x)
        if return_features:
            return x, features
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits.

        Parameters
        ----------
        x : tensor of shape (N, C_in, H, W) or (N, C_in, H, W, Z)
            Images; every spatial size a positive multiple of :attr:`size_divisor`.

        Returns
        -------
        tensor of shape (N, out_channels, H, W) or (N, out_channels, H, W, Z)
            Logits (apply softmax over dim 1 for probabilities).

        Raises
        ------
        ValueError
            As :meth:`encode`.
        """
        bottleneck, skips = self.encode(x)
        logits: torch.Tensor = self.head(self.decode(bottleneck, skips))
        return logits

    def train(self, mode: bool = True) -> UNet:
        """Set training mode, keeping a stats-frozen encoder in eval mode.

        After ``freeze_encoder(net, batchnorm="frozen_stats")`` the encoder's normalisation (and
        dropout) layers stay in eval mode whatever `mode` is, until :func:`unfreeze_encoder`.

        Parameters
        ----------
        mode : bool, default True
            Training (True) or evaluation (False) mode.

        Returns
        -------
        UNet
            ``self``.
        """
        super().train(mode)
        if self._encoder_frozen_stats:
            self.encoder_levels.train(False)
        return self

    def extra_repr(self) -> str:
        """Summarise the configuration."""
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"channels={self.channels}, spatial_dims={self.spatial_dims}, norm={self.norm!r}"
        )

    # ----------------------------------------------------------------------------- checks
    def _check_num_blocks(self, num_blocks: int) -> None:
        check_int_in_range(num_blocks, "num_blocks", 1, self.num_decoder_blocks)

    def _check_sizes(
        self, sizes: tuple[int, ...], name: str, shape: tuple[int, ...]
    ) -> None:
        divisor = self.size_divisor
        if any(s <= 0 or s % divisor for s in sizes):
            msg = (
                f"`{name}` spatial sizes must be positive multiples of {divisor} (the encoder "
                f"halves them {self.depth - 1} times); got shape {shape}."
            )
            raise ValueError(msg)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            msg = f"`x` must be a torch.Tensor; got {type(x).__name__}."
            raise TypeError(msg)
        ndim = self.spatial_dims + 2
        layout = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, H, W, Z)"
        if x.ndim != ndim:
            msg = f"`x` must be {ndim}-D with shape {layout}; got shape {tuple(x.shape)}."
            raise ValueError(msg)
        if x.shape[1] != self.in_channels:
            msg = (
                f"`x` must have in_channels = {self.in_channels} channels (dim 1 of {layout}); "
                f"got shape {tuple(x.shape)}."
            )
            raise ValueError(msg)
        self._check_sizes(tuple(x.shape[2:]), "x", tuple(x.shape))


def _max_pool(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    if spatial_dims == 2:
        return nnf.max_pool2d(x, 2)
    return nnf.max_pool3d(x, 2)
