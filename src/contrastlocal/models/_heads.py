"""Projection heads g_1 (global) and g_2 (local)."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_int_in_range
from ._layers import ConvNormAct

__all__ = ["GlobalProjectionHead", "LocalProjectionHead"]


class GlobalProjectionHead(nn.Module):
    r"""The global projection head g_1: flatten → dense → ReLU → dense, no biases.

    Parameters
    ----------
    in_features : int
        Size of the flattened encoder output, e.g. 6·6·128 = 4608 for 192×192 images, 5·5·128 =
        3200 for 160×160 images.
    hidden_features : int, default 1024
        Width of the hidden layer: 1024 in the authors' code; the paper's text states 3200.
    out_features : int, default 128
        Embedding size.

    Raises
    ------
    ValueError
        If a size is not a positive integer.

    Notes
    -----
    :math:`g_1(e) = W_2 \max(0, W_1 \operatorname{vec}(e))`. The weights are Glorot-uniform, as
    the original's dense layers; there is no normalisation.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import GlobalProjectionHead
    >>> head = GlobalProjectionHead(128 * 6 * 6)
    >>> head(torch.randn(3, 128, 6, 6)).shape
    torch.Size([3, 128])
    """

    def __init__(
        self, in_features: int, hidden_features: int = 1024, out_features: int = 128
    ) -> None:
        super().__init__()
        check_int_in_range(in_features, "in_features", 1)
        check_int_in_range(hidden_features, "hidden_features", 1)
        check_int_in_range(out_features, "out_features", 1)
        self.in_features = in_features
        self.hidden = nn.Linear(in_features, hidden_features, bias=False)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden_features, out_features, bias=False)
        nn.init.xavier_uniform_(self.hidden.weight)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project.

        Parameters
        ----------
        x : tensor of shape (N, ...)
            Encoder output; everything after dim 0 is flattened to `in_features` values.

        Returns
        -------
        tensor of shape (N, out_features)
            Embeddings (not normalised).

        Raises
        ------
        ValueError
            If the flattened size differs from `in_features`.
        """
        x = torch.flatten(x, 1)
        if x.shape[1] != self.in_features:
            msg = (
                f"`x` must flatten to in_features = {self.in_features} values per row; "
                f"got {x.shape[1]}."
            )
            raise ValueError(msg)
        out: torch.Tensor = self.out(self.act(self.hidden(x)))
        return out


class LocalProjectionHead(nn.Module):
    r"""The local projection head g_2: 1×1 conv + BN + ReLU → 1×1 conv, no biases.

    Parameters
    ----------
    channels : int
        Input channels :math:`C_l` (the decoder block's output channels).
    out_channels : int or None, default None
        Output channels; None keeps :math:`C_l`, as the original.
    spatial_dims : {2, 3}, default 2
        Spatial dimensions of the feature maps.
    norm_eps, norm_momentum : float, default 1e-3, 0.01
        Batch-norm settings (the original's).

    Raises
    ------
    ValueError
        If a channel count is not a positive integer.

    Notes
    -----
    Weights He-normal, batch norm :math:`\gamma = 1, \beta = 0`.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.models import LocalProjectionHead
    >>> head = LocalProjectionHead(64)
    >>> head(torch.randn(2, 64, 48, 48)).shape
    torch.Size([2, 64, 48, 48])
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        *,
        spatial_dims: int = 2,
        norm_eps: float = 1e-3,
        norm_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        check_int_in_range(channels, "channels", 1)
        out = channels if out_channels is None else out_channels
        check_int_in_range(out, "out_channels", 1)
        self.conv1 = ConvNormAct(
            channels, channels, 1, spatial_dims=spatial_dims, bias=False, norm="batch",
            act="relu", norm_eps=norm_eps, norm_momentum=norm_momentum,
        )
        self.conv2 = ConvNormAct(
            channels, out, 1, spatial_dims=spatial_dims, bias=False, norm=None, act=None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project every pixel.

        Parameters
        ----------
        x : tensor of shape (N, C_l, H_l, W_l)
            Decoder feature maps.

        Returns
        -------
        tensor of shape (N, out_channels, H_l, W_l)
            Projected feature maps (not normalised).
        """
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out
