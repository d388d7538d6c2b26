"""The local contrastive loss as a :class:`torch.nn.Module` (with its learned projection)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.parameter import UninitializedParameter

from .._typing import LOCAL_STRATEGIES, LOSS_REDUCTIONS, LossReduction
from .._validation import (
    as_positions,
    check_choice,
    check_flag,
    check_int_in_range,
    check_region_size,
    points_key,
)
from ..functional import (
    local_contrastive_loss,
    local_contrastive_loss_shard,
    local_region_positions,
)
from ._distributed import _check_same_shape, _combine_shares, _TorchRowGather, _world_size
from ._global import _set_temperature

__all__ = ["LocalContrastiveLoss"]


class LocalContrastiveLoss(torch.nn.Module):
    r"""Local contrastive loss (the paper's L^R or L^D) on decoder feature maps.

    Holds the strategy, the region size K, the positions and negative tables, τ and, for
    K = 3, the learned linear projection of the flattened 3×3×C regions to `projection_dim`
    dimensions; ``forward`` is one call into
    :func:`contrastlocal.functional.local_contrastive_loss`, which documents the loss.

    Parameters
    ----------
    strategy : {"random", "domain"}, default "random"
        L^R (positives: the other views of the image) or L^D (also every row of another volume
        with the same partition).
    region_size : {3, 1}, default 3
        Side K of the square regions.
    num_regions : {13, 9}, default 13
        Size of the default position pattern (used when `positions` is None); the pattern is
        computed from the map size at the first call for each size and cached.
    positions : int array-like of shape (R, 2), optional
        Fixed top-left corners of the regions; given together with `negative_positions`.
    negative_positions : int array-like of shape (R, J, 2), optional
        Fixed top-left corners of the J negative regions of each region.
    in_channels : int, optional
        Channels C of the feature maps, needed to build the projection (K = 3 with
        `use_projection`). If None, the projection is created at the first call: build the
        optimiser after that call (or pass `in_channels`, preferred).
    projection_dim : int, default 128
        Output dimension of the projection.
    use_projection : bool, default True
        Whether K = 3 regions are projected (the original's ``wgt_en = 1``). 1×1 regions are
        never projected, as in the original.
    temperature : float or 0-D floating tensor, default 0.1
        Temperature τ > 0; a ``torch.nn.Parameter`` (learnable τ) is registered and trained.
    reduction : {"mean", "sum", "none", "pairwise"}, default "mean"
        Mean over (anchor, positive, region) terms, their sum, one value per anchor row (N,)
        (see :func:`~contrastlocal.functional.local_contrastive_loss` for the weights that
        give the mean back), or the dense (N, N, R) terms.
    gather_distributed : bool, default False
        Contrast each process's rows against the rows of ALL processes (data-parallel
        training). Each process projects and normalises the regions of its own maps; only
        these region embeddings are gathered, with a gradient-carrying all_gather
        (:func:`all_gather_with_grad`), and the ids without gradient. The value is the
        single-process loss of the batch concatenated over the processes, and after DDP's
        averaging the gradients are that loss's (see Notes). Needs ``reduction="mean"`` or
        ``"sum"``. Without an initialised :mod:`torch.distributed` process group (a plain
        ``python`` run), or with one process, it is the single-process loss.
    check_pairs : bool, default True
        Check each batch's ids where they are on the host (see
        :func:`~contrastlocal.functional.local_contrastive_loss`); ids on a device are never
        read. False skips the checks (for samplers that guarantee pairs).

    Attributes
    ----------
    projection : torch.nn.Parameter of shape (K*K*C, projection_dim) or None
        The learned projection (no bias), Glorot-uniform initialised; None when unused.

    Raises
    ------
    TypeError
        If a setting has the wrong type.
    ValueError
        If a setting is out of range or unknown, only one of `positions` and
        `negative_positions` is given, or ``reduction="none"`` is combined with
        ``gather_distributed=True``.

    See Also
    --------
    contrastlocal.functional.local_contrastive_loss : The functional form.
    contrastlocal.functional.local_region_positions : The default positions.

    Notes
    -----
    ``forward(features, image_ids=None, partition_ids=None, volume_ids=None)`` takes feature
    maps of shape (N, C, H, W) and integer id tensors of shape (N,), or two pixel-aligned views
    ``forward(f0, f1, partition_ids=None, volume_ids=None)`` (ids one per image), exactly as the
    functional form, and returns a 0-D float tensor ((N,) for ``"none"``, (N, N, R) for
    ``"pairwise"``). The region tables are tuples of ints fixed by the map size, so
    ``torch.compile(fullgraph=True)`` traces the first call without a graph break. It runs with autocast disabled: half-precision
    features are computed in float32; float64 stays float64.

    With ``gather_distributed=True`` and K processes of n rows each (equal n and map sizes are
    required; a mismatch raises the same ValueError on every process), process q's anchors are
    its own rows; positives and their negative regions come from all K·n rows. Image ids are
    made unique across processes (internally ``id · K + q``; an image's views are on one
    process); partition and volume ids are compared as they are, so volume ids must be global
    (e.g. dataset volume ids, as :class:`~contrastlocal.samplers.PartitionBatchSampler` with
    `num_replicas` shards them). Process q returns :math:`K L_q - \mathrm{stop}(K L_q) +
    \mathrm{stop}(L)`, where :math:`L_q` is its anchors' share over the GLOBAL normaliser and
    :math:`L = \sum_q L_q`; see :class:`GlobalContrastiveLoss` for why DDP's averaged gradient
    is then the single-process one. The projection must be a parameter that DDP synchronises
    (wrap the loss module together with the network), or the processes' copies drift apart.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.nn import LocalContrastiveLoss
    >>> criterion = LocalContrastiveLoss("random", in_channels=8)
    >>> criterion
    LocalContrastiveLoss(strategy='random', region_size=3, num_regions=13, in_channels=8, projection_dim=128, temperature=0.1, reduction='mean')
    >>> criterion.projection.shape
    torch.Size([72, 128])
    >>> features = torch.randn(4, 8, 24, 24, requires_grad=True)
    >>> image_ids = torch.tensor([0, 1, 0, 1])
    >>> loss = criterion(features, image_ids)
    >>> loss.backward()
    >>> loss.shape, features.grad.shape, criterion.projection.grad.shape
    (torch.Size([]), torch.Size([4, 8, 24, 24]), torch.Size([72, 128]))
    """  # noqa: E501

    projection: torch.nn.Parameter | None
    temperature: float | torch.Tensor

    def __init__(
        self,
        strategy: str = "random",
        *,
        region_size: int = 3,
        num_regions: int = 13,
        positions: Any = None,
        negative_positions: Any = None,
        in_channels: int | None = None,
        projection_dim: int = 128,
        use_projection: bool = True,
        temperature: float | torch.Tensor = 0.1,
        reduction: LossReduction = "mean",
        gather_distributed: bool = False,
        check_pairs: bool = True,
    ) -> None:
        super().__init__()
        self.strategy: str = check_choice(strategy, LOCAL_STRATEGIES, "strategy")
        self.region_size = check_region_size(region_size)
        self.num_regions: int = check_choice(num_regions, (13, 9), "num_regions")
        _set_temperature(self, temperature)
        self.reduction: LossReduction = check_choice(reduction, LOSS_REDUCTIONS, "reduction")
        self.check_pairs = check_flag(check_pairs, "check_pairs")
        if not isinstance(gather_distributed, bool):
            msg = f"`gather_distributed` must be a bool; got {gather_distributed!r}."
            raise TypeError(msg)
        if gather_distributed and self.reduction not in ("mean", "sum"):
            msg = ("`reduction` must be 'mean' or 'sum' with gather_distributed=True (the "
                   "per-row array of a global batch is not split across processes); got "
                   f"reduction={self.reduction!r}.")
            raise ValueError(msg)
        if gather_distributed and not torch.distributed.is_available():
            msg = ("`gather_distributed=True` needs torch.distributed, which this torch build "
                   "does not provide; got gather_distributed=True.")
            raise ValueError(msg)
        self.gather_distributed = gather_distributed
        if not isinstance(use_projection, bool):
            msg = f"`use_projection` must be a bool; got {use_projection!r}."
            raise TypeError(msg)
        self.projection_dim = check_int_in_range(projection_dim, "projection_dim", 1)
        if in_channels is not None:
            check_int_in_range(in_channels, "in_channels", 1)
        self.in_channels = in_channels
        self._positions: np.ndarray | None = None
        self._negative_positions: np.ndarray | None = None
        # the tables as tuples of ints, what forward passes (no NumPy inside a trace); None:
        # the functional loss's default pattern of `num_regions` points for the map size
        self._position_keys: tuple[Any, Any] = (None, None)
        if (positions is None) != (negative_positions is None):
            missing = "positions" if positions is None else "negative_positions"
            given = "negative_positions" if positions is None else "positions"
            msg = f"`{missing}` must be given together with `{given}`; got None."
            raise ValueError(msg)
        if positions is not None:
            pos = as_positions(positions, "positions", 2, "(R, 2)")
            neg = as_positions(negative_positions, "negative_positions", 3, "(R, J, 2)")
            if neg.shape[0] != pos.shape[0] or neg.shape[1] < 1 or pos.shape[0] < 1:
                msg = (
                    f"`negative_positions` must have shape (R, J, 2) with R = {pos.shape[0]} "
                    f"and J >= 1; got shape {neg.shape}."
                )
                raise ValueError(msg)
            self._positions, self._negative_positions = pos, neg
            self._position_keys = (points_key(pos), tuple(points_key(row) for row in neg))
        self.use_projection = use_projection and self.region_size == 3
        if not self.use_projection:
            self.register_parameter("projection", None)
        elif in_channels is None:
            self.projection = UninitializedParameter()  # type: ignore[assignment]
        else:
            self.projection = torch.nn.Parameter(
                torch.empty(self.region_size**2 * in_channels, self.projection_dim)
            )
            self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Re-draw the projection from the Glorot (Xavier) uniform distribution.

        The bound is :math:`\sqrt{6 / (K^2 C + D')}`, as in the original.
        """
        if self.projection is not None and not isinstance(self.projection, UninitializedParameter):
            torch.nn.init.xavier_uniform_(self.projection)

    def extra_repr(self) -> str:
        text = f"strategy={self.strategy!r}, region_size={self.region_size}, "
        if self._positions is None:
            text += f"num_regions={self.num_regions}, "
        else:
            r, j = self._negative_positions.shape[:2]  # type: ignore[union-attr]
            text += f"positions=({r}, 2), negative_positions=({r}, {j}, 2), "
        if self.use_projection:
            text += f"in_channels={self.in_channels}, projection_dim={self.projection_dim}, "
        tau = self.temperature
        tau_text = tau if isinstance(tau, float) else f"tensor({float(tau.detach().cpu()):g})"
        text += f"temperature={tau_text}, reduction={self.reduction!r}"
        if self.gather_distributed:
            text += ", gather_distributed=True"
        return text

    def region_tables(self, map_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Return the positions (R, 2) and negative positions (R, J, 2) for (H, W) maps.

        Parameters
        ----------
        map_size : tuple of (int, int)
            Spatial size (H, W) of the feature maps.

        Returns
        -------
        positions : ndarray of int64, shape (R, 2)
            Top-left corners of the regions.
        negative_positions : ndarray of int64, shape (R, J, 2)
            Top-left corners of each region's negatives.
        """
        if self._positions is not None and self._negative_positions is not None:
            return self._positions, self._negative_positions
        key = (int(map_size[0]), int(map_size[1]))
        return local_region_positions(key, region_size=self.region_size,
                                      num_regions=self.num_regions)

    def _materialize(self, features: torch.Tensor) -> None:
        channels = int(features.shape[1])
        dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else None
        projection = self.projection
        if not isinstance(projection, UninitializedParameter):
            return
        projection.materialize(
            (self.region_size**2 * channels, self.projection_dim),
            device=features.device,
            dtype=dtype or torch.get_default_dtype(),
        )
        self.in_channels = channels
        self.reset_parameters()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # A lazily built projection takes its shape from the checkpoint.
        key = prefix + "projection"
        if isinstance(self.projection, UninitializedParameter) and key in state_dict:
            weight = state_dict[key]
            with torch.no_grad():
                self.projection.materialize(tuple(weight.shape), dtype=weight.dtype)
            self.in_channels = int(weight.shape[0]) // self.region_size**2
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(
        self,
        features: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        partition_ids: torch.Tensor | None = None,
        volume_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss of a batch of feature maps, or of two views.

        Parameters
        ----------
        features : tensor of shape (N, C, H, W)
            Feature maps (g_2's output), views pixel-aligned; or the first view.
        image_ids : int tensor of shape (N,) or float tensor of shape (N, C, H, W)
            Rows with equal id are views of one image; or the second view.
        partition_ids : int tensor of shape (N,), optional
            Partition of each row's slice (one per image with two views;
            ``strategy="domain"``).
        volume_ids : int tensor of shape (N,), optional
            Volume of each row's slice (one per image with two views; ``strategy="domain"``).

        Returns
        -------
        tensor
            0-D, (N,) for ``"none"``, (N, N, R) for ``"pairwise"`` (2N rows with two views);
            float32 for half/float32 input.
        """
        if self.use_projection:
            if isinstance(self.projection, UninitializedParameter):
                if features.ndim != 4:
                    msg = (
                        "`features` must be 4-D with shape (N, C, H, W); got shape "
                        f"{tuple(features.shape)}."
                    )
                    raise ValueError(msg)
                self._materialize(features)
            elif features.ndim == 4 and features.shape[1] != self.in_channels:
                msg = (
                    f"`features` must have in_channels = {self.in_channels} channels (the "
                    f"projection's input is {self.region_size}*{self.region_size}*"
                    f"{self.in_channels}); got shape {tuple(features.shape)}."
                )
                raise ValueError(msg)
        positions, negatives = self._position_keys
        settings: dict[str, Any] = {
            "image_ids": image_ids,
            "partition_ids": partition_ids,
            "volume_ids": volume_ids,
            "strategy": self.strategy,
            "region_size": self.region_size,
            "num_regions": self.num_regions,
            "positions": positions,
            "negative_positions": negatives,
            "projection": self.projection,
            "temperature": self.temperature,
            "reduction": self.reduction,
            "check_pairs": self.check_pairs,
        }
        if self.gather_distributed and _world_size() > 1:
            if features.ndim == 4:
                _check_same_shape(features, "features")
            gather = _TorchRowGather()
            with torch.autocast(device_type=features.device.type, enabled=False):
                share: torch.Tensor = local_contrastive_loss_shard(
                    features, gather=gather, **settings
                )
            return _combine_shares(share, gather.world_size)
        with torch.autocast(device_type=features.device.type, enabled=False):
            loss: torch.Tensor = local_contrastive_loss(features, **settings)
        return loss
