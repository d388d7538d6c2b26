"""Distributed gathers for the contrastive losses (gradient-carrying all_gather, metadata gather).

The losses with ``gather_distributed=True`` contrast each process's rows (the anchors) against
the rows of every process (the candidates). This module holds the collectives they need; the
mathematics stays in :mod:`contrastlocal.functional`, whose loss shares receive a
:class:`_TorchRowGather` as their `gather` argument and never import :mod:`torch.distributed`.

Why the gradients are right
---------------------------
Let K processes hold n rows each, rank q's rows ``z_q = f_θ(x_q)`` (same parameters θ on every
rank, as under DDP), and ``Z = [z_0; …; z_{K-1}]`` (K·n rows). The single-process loss of the
concatenated batch is ``L(Z) = Σ_q L_q(Z)``, where ``L_q`` holds the terms whose anchor is one of
rank q's rows divided by the GLOBAL normaliser (``functional.global_contrastive_loss_shard`` /
``local_contrastive_loss_shard`` compute it on rank q).

1. Rank q computes ``Z`` with :func:`all_gather_with_grad` and backpropagates ``c · L_q``. The
   gradient reaching the gathered ``Z`` on rank q is ``c ∂L_q/∂Z``. The gather's backward sums
   it over the ranks (all_reduce) and keeps this rank's block of rows:
   ``c Σ_r ∂L_r/∂z_q = c ∂L/∂z_q`` — the whole loss's gradient with respect to rank q's rows,
   since ``z_q`` enters every ``L_r`` only through ``Z``.
2. Rank q's parameters then receive ``g_q = c (∂z_q/∂θ)ᵀ ∂L/∂z_q``, the part of the full
   gradient that flows through rank q's inputs. By the chain rule over the concatenated batch,
   ``∂L/∂θ = Σ_q (∂z_q/∂θ)ᵀ ∂L/∂z_q = Σ_q g_q / c``.
3. DDP averages: every rank ends with ``(1/K) Σ_q g_q = (c/K) ∂L/∂θ``. With ``c = K`` this is
   exactly the single-process gradient. The losses therefore return a tensor whose VALUE is
   ``L = Σ_r L_r`` (an all_reduce of the detached shares, so logging sees the global loss on
   every rank) and whose GRADIENT is that of ``K · L_q``: ``K·L_q − stop(K·L_q) + stop(L)``.

Without averaging (e.g. a hand-written loop that all_reduce-SUMs the gradients), divide by K.
A plain :func:`torch.distributed.all_gather` returns constants: step 1 then yields only
``∂L_q/∂z_q`` through the local anchors and nothing through the other ranks' use of ``z_q`` as
positives and negatives, and the gradient is wrong (the tests show the difference).
Every rank must call ``backward`` (the gather's backward is a collective), as DDP requires anyway.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_gather_with_grad"]

_MAX_DIMS = 8  # the losses gather (N, D), (N, C, H, W) and (N,) tensors


def _require_process_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        msg = (
            "`gather_distributed=True` needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first, e.g. under torchrun), or set "
            "gather_distributed=False."
        )
        raise RuntimeError(msg)


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all_gather and concatenate; backward: all_reduce(sum), then this rank's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        world_size = dist.get_world_size(group)
        ctx.group = group
        ctx.rows = int(tensor.shape[0])
        ctx.rank = dist.get_rank(group)
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()  # all_reduce works in place
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return total[start : start + ctx.rows], None


def all_gather_with_grad(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    r"""Concatenate a tensor's rows from every process, keeping the gradient path to each.

    Forward: :func:`torch.distributed.all_gather`, concatenated along dimension 0 in rank order.
    Backward: the incoming gradient is summed over the processes (``all_reduce``) and each
    process keeps the rows it contributed, so every process receives the gradient of the sum of
    all processes' losses with respect to its own rows.

    Parameters
    ----------
    tensor : tensor of shape (n, ...)
        This process's rows; every process must pass the same shape and dtype.
    group : ProcessGroup or None, default None
        The process group (None = the default group).

    Returns
    -------
    tensor of shape (K·n, ...)
        The rows of all K processes; rows ``[rank·n, (rank + 1)·n)`` are this process's.

    Raises
    ------
    RuntimeError
        If no :mod:`torch.distributed` process group is initialised.

    See Also
    --------
    GlobalContrastiveLoss : Uses it with ``gather_distributed=True``.
    LocalContrastiveLoss : Uses it with ``gather_distributed=True``.

    Notes
    -----
    With per-process losses :math:`L_r` and :math:`Z = [z_0; \dots; z_{K-1}]`, process
    :math:`q` receives :math:`\sum_r \partial L_r / \partial z_q`, the gradient of
    :math:`\sum_r L_r` with respect to its rows. Under DDP, which AVERAGES parameter gradients
    over the processes, a loss :math:`L = \sum_r L_r` is therefore reproduced by backpropagating
    :math:`K \cdot L_q` on process :math:`q` (what the package's losses do). All processes must
    call ``backward``: it is a collective.

    Examples
    --------
    A one-process group (with K processes the result has K·n rows):

    >>> import torch
    >>> import torch.distributed as dist
    >>> from contrastlocal.nn import all_gather_with_grad
    >>> store = dist.HashStore()
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> x = torch.ones(2, 3, requires_grad=True)
    >>> y = all_gather_with_grad(x)
    >>> (2 * y).sum().backward()
    >>> y.shape, x.grad[0].tolist()
    (torch.Size([2, 3]), [2.0, 2.0, 2.0])
    >>> dist.destroy_process_group()
    """
    _require_process_group()
    out: torch.Tensor = _AllGatherWithGrad.apply(tensor, group)  # type: ignore[no-untyped-call]
    return out


def _all_gather(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenation of every process's `tensor` (no gradient: metadata such as ids)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.detach().contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _check_same_shape(tensor: torch.Tensor, name: str, group: Any = None) -> None:
    """Raise the same ValueError on every process when the processes' shapes differ."""
    dims = [tensor.ndim, *tensor.shape]
    dims += [0] * (_MAX_DIMS + 1 - len(dims))
    shapes = _all_gather(torch.tensor([dims], dtype=torch.int64, device=tensor.device), group)
    rows = shapes.tolist()
    if any(row != rows[0] for row in rows):
        listed = ", ".join(
            f"rank {r}: {tuple(row[1 : 1 + row[0]])}" for r, row in enumerate(rows)
        )
        msg = (
            f"`{name}` must have the same shape on every process (`gather_distributed=True` "
            f"needs equal per-process batch sizes; use a sampler with equal batch counts and "
            f"`drop_last`); got {listed}."
        )
        raise ValueError(msg)


class _TorchRowGather:
    """:class:`~contrastlocal.functional._kernel.RowGather` over a torch.distributed group."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self._rank = dist.get_rank(group)
        self._world_size = dist.get_world_size(group)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def __call__(self, x: Any, *, differentiable: bool) -> Any:
        if differentiable:
            return all_gather_with_grad(x, self.group)
        return _all_gather(x, self.group)


def _combine_shares(share: torch.Tensor, world_size: int, group: Any = None) -> torch.Tensor:
    """Value ``Σ_r share_r`` (all ranks), gradient of ``K · share`` (see the module notes)."""
    total = share.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    scaled = share * world_size
    return scaled - scaled.detach() + total


def _world_size() -> int:
    """World size of the default group; 1 without an initialised process group.

    ``gather_distributed=True`` outside torchrun (no process group) is therefore the
    single-process loss, as with one process.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()
