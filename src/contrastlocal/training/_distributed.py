"""Data-parallel plumbing of the pipeline: process group from torchrun, DDP, rank-0 I/O (private).

Under ``torchrun --nproc_per_node=K -m contrastlocal run ...`` the environment holds
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the caller starts the process group with
:func:`setup` (public as :func:`contrastlocal.training.init_distributed`; the recipe and the
CLI call it) and every stage then

- shards its partition sampler over the K processes (``num_replicas``/``rank``) and makes the
  per-iteration random draws depend on the rank too;
- forwards its network through :class:`~torch.nn.parallel.DistributedDataParallel` (gloo on the
  CPU, NCCL on CUDA; ``find_unused_parameters=True`` in stages 1 and 2, where the UNet's
  decoder and head, or its later decoder blocks and head, get no gradient), optionally with
  SyncBatchNorm (CUDA only);
- averages, in the loop, the gradients of the optimised parameters that no DDP wrapper covers
  (the local loss's projection, the joint stage whose two forward passes share one UNet):
  :func:`wrap` returns a :class:`Wrapped` naming the parameters its wrapper averages;
- writes metrics, checkpoints and evaluation on rank 0 only, with barriers around them.

With one process (no ``WORLD_SIZE`` > 1 and no initialised group) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__: list[str] = []


def active() -> bool:
    """Whether a process group with more than one process is in use."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def is_main_process() -> bool:
    """Return whether this process is rank 0 (always True with one process).

    Returns
    -------
    bool
        True on rank 0, or without a process group of several processes.

    Examples
    --------
    >>> from contrastlocal.training import is_main_process
    >>> is_main_process()
    True
    """
    return is_main()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks (e.g. preparing a shared cache).

    With one process it just runs the body.

    Yields
    ------
    None
        Control, once the earlier ranks are done (rank 0 first).

    Examples
    --------
    >>> from contrastlocal.training import main_process_first
    >>> with main_process_first():
    ...     pass
    """
    main = is_main()
    if not main:
        barrier()
    yield
    if main:
        barrier()


def resolve_device(name: str) -> torch.device:
    """Return the device a ``runtime.device`` name means (``auto``: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"`runtime.device` is {name!r} but CUDA is not available on this machine."
        raise ValueError(msg)
    return dev


def init_distributed(device: str | torch.device = "cpu") -> torch.device:
    """Start the process group that ``torchrun`` describes; return this process's device.

    Call it once, before the stages, in a script started by ``torchrun --nproc_per_node=K``
    (the environment holds ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``): the stages then shard
    their batches over the K processes and average gradients. Without ``WORLD_SIZE`` > 1, or
    when a group is already initialised, it starts nothing. :func:`run_recipe` and the command
    line call it; the stages never do.

    Parameters
    ----------
    device : str or torch.device, default "cpu"
        The training device (``cpu``, ``cuda``, ``cuda:N`` or ``auto``): gloo is used on the
        CPU, NCCL on CUDA.

    Returns
    -------
    torch.device
        The device of this process (``cuda`` becomes the rank's local GPU).

    Examples
    --------
    >>> from contrastlocal.training import init_distributed
    >>> init_distributed("cpu")  # one process: nothing to start
    device(type='cpu')
    """
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    return setup(dev)


def setup(device: torch.device) -> torch.device:
    """Start the process group from torchrun's environment (once); return this rank's device."""
    wanted = int(os.environ.get("WORLD_SIZE", "1"))
    if wanted > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return local_device(device)


def local_device(device: torch.device) -> torch.device:
    """Return the device of this rank (``cuda`` without an index: the rank's local GPU)."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return device


def to_device(values: Any, device: torch.device) -> torch.Tensor:
    """Host values (array-like) on `device`, copied without waiting for the device.

    A blocking host-to-device copy synchronises with the GPU on every step; this one does not
    (the values are staged by the copy itself, so they may change afterwards).
    """
    return torch.from_numpy(np.array(values)).to(device, non_blocking=True)


def seed_suffix() -> tuple[int, ...]:
    """Extra seed part so that the ranks draw different augmentations (empty with one process)."""
    return (rank(),) if active() else ()


@dataclass(frozen=True)
class Wrapped:
    """The module a stage forwards through and the parameters whose gradients it averages.

    Attributes
    ----------
    module : nn.Module
        The network itself (one process) or its DDP wrapper.
    managed : frozenset of int
        ``id`` of every parameter whose gradient the wrapper averages; the loop averages the
        gradients of the other optimised parameters (:func:`average_gradients`).
    """

    module: nn.Module
    managed: frozenset[int] = frozenset()


def wrap(
    net: nn.Module, device: torch.device, *, sync_batchnorm: bool, find_unused: bool
) -> Wrapped:
    """`net` for the forward pass: itself, or a DDP wrapper around it (several processes)."""
    if not active():
        return Wrapped(net)
    if sync_batchnorm and device.type == "cpu":
        msg = ("`runtime.sync_batchnorm` needs GPUs (torch's SyncBatchNorm does not run on the "
               f"CPU); got runtime.sync_batchnorm=True with device {device}.")
        raise ValueError(msg)
    if sync_batchnorm:
        # converts in place where the BN modules are children (the UNet's levels are)
        for name, child in list(net.named_children()):
            setattr(net, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))  # type: ignore[no-untyped-call]
    ids = [device.index] if device.type == "cuda" else None
    wrapped = nn.parallel.DistributedDataParallel(
        net, device_ids=ids, find_unused_parameters=find_unused
    )
    return Wrapped(wrapped, frozenset(id(p) for p in net.parameters()))


def average_gradients(params: list[torch.Tensor], managed: frozenset[int] = frozenset()) -> None:
    """All-reduce (mean) the gradients of `params` except those a DDP wrapper averages."""
    if not active():
        return
    grads = [p.grad for p in params if id(p) not in managed and p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
