"""The global contrastive loss as a :class:`torch.nn.Module`."""

from __future__ import annotations

import torch

from .._array_api import array_namespace
from .._typing import GLOBAL_STRATEGIES, LOSS_REDUCTIONS, GlobalStrategy, LossReduction
from .._validation import check_choice, check_flag, check_temperature
from ..functional import global_contrastive_loss, global_contrastive_loss_shard
from ._distributed import _check_same_shape, _combine_shares, _TorchRowGather, _world_size

__all__ = ["GlobalContrastiveLoss"]


class GlobalContrastiveLoss(torch.nn.Module):
    r"""Global contrastive loss (the paper's G^R, G^{D−} or G^D) for a PyTorch training loop.

    Holds the settings; ``forward`` calls
    :func:`contrastlocal.functional.global_contrastive_loss`, which documents the strategies.

    Parameters
    ----------
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        G^R (other views of the image are positives, every other image is a negative), G^{D−}
        (other views positive, other partitions negative) or G^D (same partition positive,
        other partitions negative).
    temperature : float or 0-D floating tensor, default 0.1
        Temperature τ > 0. A ``torch.nn.Parameter`` (learnable τ, as in CLIP) is registered as
        the module's parameter and receives its gradient.
    reduction : {"mean", "sum", "none", "pairwise"}, default "mean"
        Mean over all (anchor, positive) terms, their sum, one value per anchor row (N,) whose
        mean weighted by the rows' numbers of positives is the mean (0 for a row without
        positive), or the dense (N, N) terms.
    gather_distributed : bool, default False
        Contrast each process's rows against the rows of ALL processes (data-parallel
        training): the embeddings are gathered with a gradient-carrying all_gather
        (:func:`all_gather_with_grad`), the ids without gradient. The returned value is, on
        every process, the single-process loss of the batch concatenated over the processes in
        rank order, and after DDP's gradient averaging the parameters receive that loss's
        gradient (see Notes). Needs ``reduction="mean"`` or ``"sum"``. Without an initialised
        :mod:`torch.distributed` process group (a plain ``python`` run), or with one process,
        it is the single-process loss, so one script runs under python and torchrun alike.
    check_pairs : bool, default True
        Check each batch's ids where they are on the host (see
        :func:`~contrastlocal.functional.global_contrastive_loss`); ids on a device are never
        read. False skips the checks (for samplers that guarantee pairs).

    Raises
    ------
    TypeError
        If `temperature` is not a number or `gather_distributed` not a bool.
    ValueError
        If a setting is out of range or unknown, or ``reduction="none"`` is combined with
        ``gather_distributed=True``.

    See Also
    --------
    contrastlocal.functional.global_contrastive_loss : The functional form.

    Notes
    -----
    ``forward(embeddings, image_ids=None, partition_ids=None)`` takes embeddings of shape (N, D)
    and integer id tensors of shape (N,), or two views ``forward(z0, z1, partition_ids=None)``
    (rows i of both are views of image i; `partition_ids` one per image), exactly as the
    functional form; it returns a 0-D float tensor ((N,) for ``"none"``, (N, N) for
    ``"pairwise"``). It runs with autocast disabled: float16/bfloat16 embeddings (e.g.
    under :func:`torch.autocast`) are computed in float32 and the loss is float32; float64 stays
    float64.

    With ``gather_distributed=True`` and K processes of n rows each (equal n is required; a
    mismatch raises the same ValueError on every process), process q's anchors are its own
    rows and the candidates are all K·n rows. Image ids are made unique across processes
    (internally ``id · K + q``; the views of an image are on one process), so per-process ids
    such as ``arange(n)`` are fine; partition ids are compared as they are. Process q computes
    its share :math:`L_q` (its anchors' terms over the GLOBAL normaliser, so
    :math:`L = \sum_q L_q` is the single-process loss) and returns
    :math:`K L_q - \mathrm{stop}(K L_q) + \mathrm{stop}(L)`: the value is :math:`L`, the
    gradient that of :math:`K L_q`. The gather's backward sums the processes' gradients
    (process q's rows receive :math:`K\,\partial L / \partial z_q`), and DDP's average over
    the K processes of :math:`K (\partial z_q/\partial\theta)^\top \partial L/\partial z_q`
    is :math:`\partial L / \partial \theta`. Every process must call ``backward``. Without
    DDP's averaging (gradients summed by hand), divide by K. The multi-process path uses the
    array-API implementation of the kernel (autograd), not the fused single-process one.

    References
    ----------
    Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features for
    medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.nn import GlobalContrastiveLoss
    >>> criterion = GlobalContrastiveLoss(strategy="domain", temperature=0.1)
    >>> criterion
    GlobalContrastiveLoss(strategy='domain', temperature=0.1, reduction='mean')
    >>> z = torch.randn(8, 16, requires_grad=True)
    >>> image = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    >>> partition = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    >>> loss = criterion(z, image, partition)
    >>> loss.backward()
    >>> loss.shape, z.grad.shape
    (torch.Size([]), torch.Size([8, 16]))

    Two views, as in SimCLR-style code (G^R needs no ids):

    >>> z0, z1 = torch.randn(4, 16), torch.randn(4, 16)
    >>> GlobalContrastiveLoss(strategy="random")(z0, z1).shape
    torch.Size([])
    """

    temperature: float | torch.Tensor

    def __init__(
        self,
        strategy: GlobalStrategy = "domain",
        temperature: float | torch.Tensor = 0.1,
        reduction: LossReduction = "mean",
        gather_distributed: bool = False,
        check_pairs: bool = True,
    ) -> None:
        super().__init__()
        self.strategy: GlobalStrategy = check_choice(strategy, GLOBAL_STRATEGIES, "strategy")
        _set_temperature(self, temperature)
        self.reduction: LossReduction = check_choice(reduction, LOSS_REDUCTIONS, "reduction")
        self.check_pairs = check_flag(check_pairs, "check_pairs")
        if not isinstance(gather_distributed, bool):
            msg = f"`gather_distributed` must be a bool; got {gather_distributed!r}."
            raise TypeError(msg)
        if gather_distributed and not torch.distributed.is_available():
            msg = ("`gather_distributed=True` needs torch.distributed, which this torch build "
                   "does not provide; got gather_distributed=True.")
            raise ValueError(msg)
        if gather_distributed and self.reduction not in ("mean", "sum"):
            msg = ("`reduction` must be 'mean' or 'sum' with gather_distributed=True (the "
                   "per-row array of a global batch is not split across processes); got "
                   f"reduction={self.reduction!r}.")
            raise ValueError(msg)
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        tau = self.temperature
        tau_text = tau if isinstance(tau, float) else f"tensor({float(tau.detach().cpu()):g})"
        text = (f"strategy={self.strategy!r}, temperature={tau_text}, "
                f"reduction={self.reduction!r}")
        if self.gather_distributed:
            text += ", gather_distributed=True"
        return text

    def forward(
        self,
        embeddings: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        partition_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss of a batch of embeddings, or of two views.

        Parameters
        ----------
        embeddings : tensor of shape (N, D)
            Projected image-level embeddings (g_1's output), one per row; or the first view.
        image_ids : int tensor of shape (N,), float tensor of shape (N, D), or None
            Rows with equal id are views of one image; or the second view (rows i of both
            views are views of image i). May be None for ``strategy="domain"``.
        partition_ids : int tensor of shape (N,), optional
            Partition of each row's slice (one per image with two views); required unless
            ``strategy="random"``.

        Returns
        -------
        tensor
            0-D, (N,) for ``"none"``, (N, N) for ``"pairwise"`` (2N rows with two views);
            float32 for half/float32 input.
        """
        if self.gather_distributed and _world_size() > 1:
            return self._forward_distributed(embeddings, image_ids, partition_ids)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            loss: torch.Tensor = global_contrastive_loss(
                embeddings, image_ids, partition_ids, strategy=self.strategy,
                temperature=self.temperature, reduction=self.reduction,
                check_pairs=self.check_pairs,
            )
        return loss

    def _forward_distributed(
        self,
        embeddings: torch.Tensor,
        image_ids: torch.Tensor | None,
        partition_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        gather = _TorchRowGather()
        if embeddings.ndim == 2:
            _check_same_shape(embeddings, "embeddings")
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            share: torch.Tensor = global_contrastive_loss_shard(
                embeddings, image_ids, partition_ids, gather=gather, strategy=self.strategy,
                temperature=self.temperature, reduction=self.reduction,
                check_pairs=self.check_pairs,
            )
        return _combine_shares(share, gather.world_size)


def _set_temperature(module: torch.nn.Module, temperature: object) -> None:
    """Set ``module.temperature``: a positive float, or a 0-D floating tensor.

    A ``Parameter`` is registered as a parameter (learnable τ), another tensor as a buffer (it
    follows ``module.to``).
    """
    if isinstance(temperature, torch.Tensor):
        check_temperature(temperature, xp=array_namespace(temperature))
        if isinstance(temperature, torch.nn.Parameter):
            module.temperature = temperature
        else:
            module.register_buffer("temperature", temperature)
        return
    module.temperature = check_temperature(temperature, xp=None)
