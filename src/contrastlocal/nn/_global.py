"""The global contrastive loss as a :class:`torch.nn.Module`."""

from __future__ import annotations

import torch

from .._typing import Reduction
from .._validation import check_choice, check_positive
from ..functional import global_contrastive_loss
from ..functional._global import _STRATEGIES, GlobalStrategy
from ..functional._kernel import _REDUCTIONS

__all__ = ["GlobalContrastiveLoss"]


class GlobalContrastiveLoss(torch.nn.Module):
    """Global contrastive loss (the paper's G^R, G^{D−} or G^D) for a PyTorch training loop.

    Holds the settings; ``forward`` calls
    :func:`contrastlocal.functional.global_contrastive_loss`, which documents the strategies.

    Parameters
    ----------
    strategy : {"random", "domain_negatives", "domain"}, default "domain"
        G^R (other views of the image are positives, every other image is a negative), G^{D−}
        (other views positive, other partitions negative) or G^D (same partition positive,
        other partitions negative).
    temperature : float, default 0.1
        Temperature τ > 0.
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean over all (anchor, positive) terms, their sum, or the dense (N, N) terms.
    gather_distributed : bool, default False
        Gather the embeddings of all processes before computing the loss. Needs an initialised
        :mod:`torch.distributed` process group; with one process it changes nothing. The
        multi-process gather is not implemented yet (it raises ``NotImplementedError``).

    Raises
    ------
    TypeError
        If `temperature` is not a number or `gather_distributed` not a bool.
    ValueError
        If a setting is out of range or unknown.

    See Also
    --------
    contrastlocal.functional.global_contrastive_loss : The functional form.

    Notes
    -----
    ``forward(embeddings, image_ids, partition_ids=None)`` takes embeddings of shape (N, D) and
    integer id tensors of shape (N,), and returns a 0-D float tensor (shape (N, N) for
    ``reduction="none"``). It runs with autocast disabled: float16/bfloat16 embeddings (e.g.
    under :func:`torch.autocast`) are computed in float32 and the loss is float32; float64 stays
    float64.

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
    """

    def __init__(
        self,
        strategy: GlobalStrategy = "domain",
        temperature: float = 0.1,
        reduction: Reduction = "mean",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.strategy: GlobalStrategy = check_choice(strategy, _STRATEGIES, "strategy")
        self.temperature = check_positive(temperature, "temperature")
        self.reduction: Reduction = check_choice(reduction, _REDUCTIONS, "reduction")
        if not isinstance(gather_distributed, bool):
            msg = f"`gather_distributed` must be a bool; got {gather_distributed!r}."
            raise TypeError(msg)
        if gather_distributed and not torch.distributed.is_available():
            msg = ("`gather_distributed=True` needs torch.distributed, which this torch build "
                   "does not provide; got gather_distributed=True.")
            raise ValueError(msg)
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        text = (f"strategy={self.strategy!r}, temperature={self.temperature}, "
                f"reduction={self.reduction!r}")
        if self.gather_distributed:
            text += ", gather_distributed=True"
        return text

    def _check_distributed(self) -> None:
        if not torch.distributed.is_initialized():
            msg = ("`gather_distributed=True` needs an initialised torch.distributed process "
                   "group (call torch.distributed.init_process_group first), or set "
                   "gather_distributed=False.")
            raise RuntimeError(msg)
        if torch.distributed.get_world_size() > 1:
            msg = "`gather_distributed=True` with more than one process is not implemented yet."
            raise NotImplementedError(msg)

    def forward(
        self,
        embeddings: torch.Tensor,
        image_ids: torch.Tensor,
        partition_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss of a batch of embeddings.

        Parameters
        ----------
        embeddings : tensor of shape (N, D)
            Projected image-level embeddings (g_1's output), one per row.
        image_ids : int tensor of shape (N,)
            Rows with equal id are views of one image.
        partition_ids : int tensor of shape (N,), optional
            Partition of each row's slice; required unless ``strategy="random"``.

        Returns
        -------
        tensor
            0-D, or (N, N) for ``reduction="none"``; float32 for half/float32 input.
        """
        if self.gather_distributed:
            self._check_distributed()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            loss: torch.Tensor = global_contrastive_loss(
                embeddings, image_ids=image_ids, partition_ids=partition_ids,
                strategy=self.strategy, temperature=self.temperature, reduction=self.reduction,
            )
        return loss
