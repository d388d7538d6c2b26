"""Stage networks, weight hand-over between stages and encoder freezing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from .._validation import check_choice, check_int_in_range
from ._heads import GlobalProjectionHead, LocalProjectionHead
from ._unet import ENCODER_PREFIX, UNet, decoder_block_prefix

__all__ = [
    "GlobalPretrainNetwork",
    "LocalPretrainNetwork",
    "decoder_block_keys",
    "encoder_keys",
    "freeze_encoder",
    "transfer_decoder",
    "transfer_encoder",
    "unfreeze_encoder",
]

BatchNormMode = Literal["batch_stats", "frozen_stats"]


class GlobalPretrainNetwork(nn.Module):
    """Stage-1 network: the UNet's encoder followed by the global projection head g_1.

    Parameters
    ----------
    backbone : UNet
        Network whose encoder is trained (its decoder and head are not used here).
    image_size : int or tuple of int
        Spatial input size; fixes g_1's input size ``c_{D-1} · prod(image_size / 2^{D-1})``.
    hidden_features : int, default 1024
        Hidden width of g_1 (1024 in the authors' code, 3200 in the paper's text).
    out_features : int, default 128
        Embedding size.

    Raises
    ------
    ValueError
        If `image_size` is not a multiple of ``backbone.size_divisor``.
    TypeError
        If `backbone` is not a :class:`UNet`.

    Notes
    -----
    Only ``backbone.encoder_levels`` and ``projection_head`` receive gradients; the backbone's
    decoder blocks and head get none (optimisers skip them; with DistributedDataParallel use
    ``find_unused_parameters=True`` or optimise ``encoder + projection_head`` only).

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import GlobalPretrainNetwork, UNet
    >>> net = GlobalPretrainNetwork(UNet(), image_size=64)
    >>> net.projection_head.in_features
    512
    >>> net(torch.randn(2, 1, 64, 64)).shape
    torch.Size([2, 128])
    """

    def __init__(
        self,
        backbone: UNet,
        image_size: int | Sequence[int],
        hidden_features: int = 1024,
        out_features: int = 128,
    ) -> None:
        super().__init__()
        _check_unet(backbone, "backbone")
        sizes = backbone.check_image_size(image_size)
        factor = backbone.size_divisor
        in_features = backbone.bottleneck_channels
        for s in sizes:
            in_features *= s // factor
        self.image_size: tuple[int, ...] = sizes
        self.backbone = backbone
        self.projection_head = GlobalProjectionHead(in_features, hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Parameters
        ----------
        x : tensor of shape (N, C_in, H, W)
            Images of spatial size `image_size`.

        Returns
        -------
        tensor of shape (N, out_features)
            Embeddings g_1(e(x)) (not normalised).

        Raises
        ------
        ValueError
            If `x` is invalid for the backbone or not of spatial size `image_size`.
        """
        if isinstance(x, torch.Tensor) and tuple(x.shape[2:]) != self.image_size:
            self.backbone._check_input(x)
            msg = (
                f"`x` must have spatial size image_size = {self.image_size}; "
                f"got shape {tuple(x.shape)}."
            )
            raise ValueError(msg)
        bottleneck, _ = self.backbone.encode(x)
        embeddings: torch.Tensor = self.projection_head(bottleneck)
        return embeddings


class LocalPretrainNetwork(nn.Module):
    """Stage-2 network: encoder, the first `num_decoder_blocks` decoder blocks, then g_2.

    Parameters
    ----------
    backbone : UNet
        Network providing the encoder and decoder blocks (its remaining blocks and head unused).
    num_decoder_blocks : int, default 3
        :math:`l` in ``1 … D - 1`` (3 in the paper).
    out_channels : int or None, default None
        Output channels of g_2; None keeps :math:`C_l`.

    Raises
    ------
    ValueError
        If `num_decoder_blocks` is out of range.
    TypeError
        If `backbone` is not a :class:`UNet`.

    Notes
    -----
    In the paper's stage 2 the encoder is copied from stage 1 and frozen: call
    :func:`transfer_encoder` and :func:`freeze_encoder` on this network.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import LocalPretrainNetwork, UNet
    >>> net = LocalPretrainNetwork(UNet(), num_decoder_blocks=3)
    >>> net(torch.randn(2, 1, 64, 64)).shape
    torch.Size([2, 64, 16, 16])
    >>> net.feature_shape(192)
    (64, 48, 48)
    """

    def __init__(
        self,
        backbone: UNet,
        num_decoder_blocks: int = 3,
        *,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        _check_unet(backbone, "backbone")
        check_int_in_range(num_decoder_blocks, "num_decoder_blocks", 1, backbone.num_decoder_blocks)
        self.backbone = backbone
        self.num_decoder_blocks = num_decoder_blocks
        channels = backbone.decoder_block_channels(num_decoder_blocks)
        self.projection_head = LocalProjectionHead(
            channels,
            out_channels,
            spatial_dims=backbone.spatial_dims,
            norm_eps=backbone.norm_eps,
            norm_momentum=backbone.norm_momentum,
        )
        self._out_channels = channels if out_channels is None else out_channels

    def feature_shape(self, image_size: int | Sequence[int]) -> tuple[int, ...]:
        """Shape ``(C, H_l, W_l)`` of the output for one image of spatial size `image_size`.

        Parameters
        ----------
        image_size : int or sequence of int
            Spatial input size.

        Returns
        -------
        tuple of int
            Output channels, then the spatial sizes.
        """
        shape = self.backbone.decoder_feature_shape(self.num_decoder_blocks, image_size)
        return (self._out_channels, *shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Local feature maps.

        Parameters
        ----------
        x : tensor of shape (N, C_in, H, W)
            Images.

        Returns
        -------
        tensor of shape (N, C_l, H / 2^{D-1-l}, W / 2^{D-1-l})
            The projection g_2 applied to the output of decoder block :math:`l`.

        Raises
        ------
        ValueError
            If `x` is invalid for the backbone.
        """
        bottleneck, skips = self.backbone.encode(x)
        features = self.backbone.decode(bottleneck, skips, num_blocks=self.num_decoder_blocks)
        projected: torch.Tensor = self.projection_head(features)
        return projected


# --------------------------------------------------------------------------------- hand-over
def _unwrap(network: nn.Module) -> nn.Module:
    """Strip torch.compile (``_orig_mod``) and DataParallel/DDP (``module``) wrappers."""
    while True:
        inner = getattr(network, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = (
                network.module
                if isinstance(
                    network, (nn.DataParallel, nn.parallel.DistributedDataParallel)
                )
                else None
            )
        if inner is None:
            return network
        network = inner


def _check_unet(network: object, name: str) -> None:
    if not isinstance(network, UNet):
        msg = f"`{name}` must be a contrastlocal.models.UNet; got {type(network).__name__}."
        raise TypeError(msg)


def _backbone(network: nn.Module, name: str) -> tuple[UNet, str]:
    """Return the UNet inside `network` and its state-dict prefix in `network`."""
    net = _unwrap(network)
    if isinstance(net, UNet):
        return net, ""
    if isinstance(net, (GlobalPretrainNetwork, LocalPretrainNetwork)):
        return net.backbone, "backbone."
    msg = (
        f"`{name}` must be a UNet, GlobalPretrainNetwork or LocalPretrainNetwork; "
        f"got {type(network).__name__}."
    )
    raise TypeError(msg)


def encoder_keys(network: nn.Module) -> list[str]:
    """State-dict keys of the encoder of `network` (parameters and buffers).

    Parameters
    ----------
    network : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        The network (torch.compile and DataParallel wrappers are looked through).

    Returns
    -------
    list of str
        Keys of the unwrapped `network`'s state dict: those of its UNet starting with
        ``"encoder_levels."`` (prefixed with ``"backbone."`` for a stage network).

    Raises
    ------
    TypeError
        If `network` is of another type.

    Examples
    --------
    >>> from contrastlocal.models import UNet, encoder_keys
    >>> keys = encoder_keys(UNet())
    >>> len(keys), keys[0]
    (84, 'encoder_levels.0.conv1.conv.weight')
    """
    unet, prefix = _backbone(network, "network")
    return [prefix + k for k in unet.state_dict() if k.startswith(ENCODER_PREFIX)]


def decoder_block_keys(network: nn.Module, block: int) -> list[str]:
    """State-dict keys of decoder block `block` (1-based, deepest first) of `network`.

    Parameters
    ----------
    network : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        The network (torch.compile and DataParallel wrappers are looked through).
    block : int
        Block :math:`l` in ``1 … D - 1``.

    Returns
    -------
    list of str
        Keys of the unwrapped `network`'s state dict starting with
        ``f"decoder_blocks.{block - 1}."`` (prefixed with ``"backbone."`` for a stage network).

    Raises
    ------
    ValueError
        If `block` is out of range.
    TypeError
        If `network` is of another type.

    Examples
    --------
    >>> from contrastlocal.models import UNet, decoder_block_keys
    >>> decoder_block_keys(UNet(), 5)[:2]
    ['decoder_blocks.4.up_conv.conv.weight', 'decoder_blocks.4.up_conv.conv.bias']
    """
    unet, prefix = _backbone(network, "network")
    check_int_in_range(block, "block", 1, unet.num_decoder_blocks)
    start = decoder_block_prefix(block)
    return [prefix + k for k in unet.state_dict() if k.startswith(start)]


def _copy(
    source: nn.Module, target: nn.Module, prefixes: Sequence[str], *, include_buffers: bool
) -> list[str]:
    src_unet, _ = _backbone(source, "source")
    tgt_unet, tgt_prefix = _backbone(target, "target")
    src_state = src_unet.state_dict(keep_vars=True)
    tgt_state = tgt_unet.state_dict(keep_vars=True)
    buffer_names = {name for name, _ in tgt_unet.named_buffers()}
    keys = [
        k
        for k in tgt_state
        if k.startswith(tuple(prefixes)) and (include_buffers or k not in buffer_names)
    ]
    for k in keys:
        if k not in src_state:
            msg = f"`source` has no tensor {k!r} that `target` has; the architectures differ."
            raise ValueError(msg)
        if src_state[k].shape != tgt_state[k].shape:
            msg = (
                f"`source` and `target` differ in {k!r}: shape {tuple(src_state[k].shape)} vs "
                f"{tuple(tgt_state[k].shape)}; the architectures differ."
            )
            raise ValueError(msg)
    extra = [k for k in src_state if k.startswith(tuple(prefixes)) and k not in tgt_state]
    if extra:
        msg = f"`target` has no tensor {extra[0]!r} that `source` has; the architectures differ."
        raise ValueError(msg)
    with torch.no_grad():
        for k in keys:
            tgt_state[k].copy_(src_state[k])
    return [tgt_prefix + k for k in keys]


def transfer_encoder(
    source: nn.Module, target: nn.Module, *, include_buffers: bool = True
) -> list[str]:
    r"""Copy the encoder of `source` into `target` (stage 1 → stage 2, or into a UNet).

    Parameters
    ----------
    source, target : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        Networks with the same encoder architecture (wrappers of torch.compile and
        DataParallel are looked through).
    include_buffers : bool, default True
        Also copy the normalisation running statistics. The original carries only the
        trainable variables (weights, biases, :math:`\gamma`, :math:`\beta`); pass False for that.

    Returns
    -------
    list of str
        The copied keys, as named in the unwrapped `target`'s state dict (see
        :func:`encoder_keys`). Nothing else in `target` changes.

    Raises
    ------
    ValueError
        If the encoders' tensors differ in names or shapes.
    TypeError
        If a network is of another type.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import GlobalPretrainNetwork, LocalPretrainNetwork, UNet
    >>> from contrastlocal.models import transfer_encoder
    >>> stage1 = GlobalPretrainNetwork(UNet(), image_size=192)
    >>> stage2 = LocalPretrainNetwork(UNet(), num_decoder_blocks=3)
    >>> copied = transfer_encoder(stage1, stage2)
    >>> len(copied), copied[0]
    (84, 'backbone.encoder_levels.0.conv1.conv.weight')
    >>> bool(torch.equal(stage1.backbone.encoder_levels[0].conv1.conv.weight,
    ...                  stage2.backbone.encoder_levels[0].conv1.conv.weight))
    True
    """
    return _copy(source, target, [ENCODER_PREFIX], include_buffers=include_buffers)


def transfer_decoder(
    source: nn.Module,
    target: nn.Module,
    num_blocks: int | None = None,
    *,
    include_buffers: bool = True,
) -> list[str]:
    """Copy the encoder and the first `num_blocks` decoder blocks (stage 2 → stage 3).

    The remaining decoder blocks and the segmentation head of `target` are left as they are
    (freshly initialised in the paper's stage 3); projection heads are never copied.

    Parameters
    ----------
    source, target : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        Networks with the same architecture up to the copied blocks.
    num_blocks : int or None, default None
        :math:`l`: blocks ``1 … l`` are copied. None takes ``source.num_decoder_blocks`` when
        `source` is a :class:`LocalPretrainNetwork` (otherwise it is required).
    include_buffers : bool, default True
        Also copy normalisation running statistics (the original does not).

    Returns
    -------
    list of str
        The copied keys, as named in the unwrapped `target`'s state dict.

    Raises
    ------
    ValueError
        If `num_blocks` is out of range, missing, larger than the number of blocks a
        :class:`LocalPretrainNetwork` source trained, or the architectures differ.
    TypeError
        If a network is of another type.

    Examples
    --------
    >>> from contrastlocal.models import LocalPretrainNetwork, UNet, transfer_decoder
    >>> stage2 = LocalPretrainNetwork(UNet(), num_decoder_blocks=3)
    >>> segmenter = UNet(out_channels=4)
    >>> copied = transfer_decoder(stage2, segmenter)
    >>> len(copied), sorted({k.split(".")[0] for k in copied})
    (147, ['decoder_blocks', 'encoder_levels'])
    """
    src = _unwrap(source)
    src_unet, _ = _backbone(src, "source")
    trained = src.num_decoder_blocks if isinstance(src, LocalPretrainNetwork) else None
    if num_blocks is None:
        if trained is None:
            msg = "`num_blocks` is required unless `source` is a LocalPretrainNetwork; got None."
            raise ValueError(msg)
        num_blocks = trained
    check_int_in_range(num_blocks, "num_blocks", 1, src_unet.num_decoder_blocks)
    if trained is not None and num_blocks > trained:
        msg = (
            f"`num_blocks` must be at most the {trained} decoder blocks that `source` "
            f"(a LocalPretrainNetwork) trains; got {num_blocks}."
        )
        raise ValueError(msg)
    prefixes = [ENCODER_PREFIX, *(decoder_block_prefix(b) for b in range(1, num_blocks + 1))]
    return _copy(source, target, prefixes, include_buffers=include_buffers)


def freeze_encoder(
    network: nn.Module, batchnorm: BatchNormMode = "batch_stats"
) -> list[str]:
    """Freeze the encoder of `network` (stage 2).

    Parameters
    ----------
    network : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        Network whose encoder is frozen.
    batchnorm : {"batch_stats", "frozen_stats"}, default "batch_stats"
        ``"batch_stats"`` (the original): only ``requires_grad`` is switched off; in training mode
        the encoder's batch norm keeps normalising with the current batch's statistics (and
        updating its running statistics). ``"frozen_stats"``: the encoder is also put in eval
        mode, so batch norm uses its running statistics (and dropout is off), and it stays in
        eval mode after ``network.train()`` (:meth:`UNet.train` enforces it) until
        :func:`unfreeze_encoder`.

    Returns
    -------
    list of str
        Names of the frozen parameters in the unwrapped `network`.

    Raises
    ------
    ValueError
        If `batchnorm` is not one of the options.
    TypeError
        If `network` is of another type.

    Notes
    -----
    Frozen parameters get no gradient, so optimisers leave them unchanged; an optimiser built
    only over ``p for p in network.parameters() if p.requires_grad`` also holds no state for them.
    Calling ``network.backbone.encoder_levels.train()`` directly bypasses the ``frozen_stats``
    guard; call ``train()`` on the network or its backbone instead.

    Examples
    --------
    >>> from contrastlocal.models import LocalPretrainNetwork, UNet, freeze_encoder
    >>> net = LocalPretrainNetwork(UNet())
    >>> frozen = freeze_encoder(net, batchnorm="frozen_stats")
    >>> len(frozen), net.backbone.encoder_levels.training
    (48, False)
    >>> _ = net.train()
    >>> net.backbone.encoder_levels.training, net.backbone.decoder_blocks.training
    (False, True)
    """
    check_choice(batchnorm, ("batch_stats", "frozen_stats"), "batchnorm")
    unet, prefix = _backbone(network, "network")
    names = []
    for name, param in unet.encoder_levels.named_parameters():
        param.requires_grad_(False)
        names.append(f"{prefix}{ENCODER_PREFIX}{name}")
    unet._encoder_frozen_stats = batchnorm == "frozen_stats"
    unet.train(unet.training)
    return names


def unfreeze_encoder(network: nn.Module) -> list[str]:
    """Undo :func:`freeze_encoder`: encoder parameters trainable, normal train/eval switching.

    Parameters
    ----------
    network : UNet, GlobalPretrainNetwork or LocalPretrainNetwork
        Network whose encoder is unfrozen.

    Returns
    -------
    list of str
        Names of the encoder parameters in the unwrapped `network`.

    Raises
    ------
    TypeError
        If `network` is of another type.

    Examples
    --------
    >>> from contrastlocal.models import UNet, freeze_encoder, unfreeze_encoder
    >>> net = UNet()
    >>> _ = freeze_encoder(net)
    >>> _ = unfreeze_encoder(net)
    >>> all(p.requires_grad for p in net.parameters())
    True
    """
    unet, prefix = _backbone(network, "network")
    names = []
    for name, param in unet.encoder_levels.named_parameters():
        param.requires_grad_(True)
        names.append(f"{prefix}{ENCODER_PREFIX}{name}")
    unet._encoder_frozen_stats = False
    unet.train(unet.training)
    return names
