"""Worker side of the multi-process tests (imported in spawned processes; not a test module).

Every process builds the same global batch from fixed seeds, keeps its own rows, runs the losses
with ``gather_distributed=True`` under real DistributedDataParallel on a gloo group, and saves
what it saw (loss values, averaged parameter gradients, input gradients, error messages, sampler
batches) with ``torch.save``; the test module compares them with a single-process computation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss

WORLD_SIZE = 2
ROWS = 8  # rows per process: 2 views x 4 images
IN_DIM, EMBED_DIM = 5, 6
IN_CHANNELS, CHANNELS, MAP = 2, 3, 8
NUM_IMAGES = 4  # images per process
SAMPLER_SLICES = [9, 7, 8, 12, 6, 10, 8, 9, 11, 7, 8]  # 11 volumes

GLOBAL_CASES = [(s, r) for s in ("random", "domain_negatives", "domain") for r in ("mean", "sum")]
LOCAL_CASES = [
    (s, k, r) for s in ("random", "domain") for k in (3, 1) for r in ("mean",)
] + [("domain", 3, "sum")]


def batch_metadata(rank: int) -> dict[str, torch.Tensor]:
    """Per-process ids: image ids LOCAL (0..3 on every process), partitions and volumes global."""
    image = torch.arange(NUM_IMAGES).repeat(2)
    partition = torch.tensor([[0, 1, 2, 0], [1, 2, 3, 3]][rank]).repeat(2)
    volume = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]][rank]).repeat(2)
    return {"image": image, "partition": partition, "volume": volume}


def global_metadata() -> dict[str, torch.Tensor]:
    """The concatenated batch with image ids made unique by hand (rank r's ids + 4 r)."""
    parts = [batch_metadata(r) for r in range(WORLD_SIZE)]
    out = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    out["image"] = torch.cat([p["image"] + NUM_IMAGES * r for r, p in enumerate(parts)])
    return out


def global_inputs(kind: str) -> torch.Tensor:
    """Inputs of all processes (rows of rank r: [r*ROWS, (r+1)*ROWS)), float64."""
    rng = np.random.default_rng(11 if kind == "global" else 12)
    if kind == "global":
        return torch.tensor(rng.normal(size=(WORLD_SIZE * ROWS, IN_DIM)))
    return torch.tensor(rng.normal(size=(WORLD_SIZE * ROWS, IN_CHANNELS, MAP, MAP)))


class Pipe(torch.nn.Module):
    """A tiny network and its loss in one module, so that DDP synchronises the projection too."""

    def __init__(self, kind: str, criterion: torch.nn.Module) -> None:
        super().__init__()
        self.kind = kind
        torch.manual_seed(5)
        if kind == "global":
            self.net: torch.nn.Module = torch.nn.Linear(IN_DIM, EMBED_DIM, bias=False)
        else:
            self.net = torch.nn.Conv2d(IN_CHANNELS, CHANNELS, kernel_size=1, bias=False)
        self.criterion = criterion
        self.double()

    def forward(self, x: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.net(x)
        if self.kind == "global":
            return self.criterion(out, meta["image"], meta["partition"])  # type: ignore[no-any-return]
        return self.criterion(out, meta["image"], meta["partition"], meta["volume"])  # type: ignore[no-any-return]


def make_criterion(case: tuple[Any, ...], gather_distributed: bool) -> torch.nn.Module:
    if len(case) == 2:
        strategy, reduction = case
        return GlobalContrastiveLoss(
            strategy, temperature=0.2, reduction=reduction, gather_distributed=gather_distributed
        )
    strategy, region_size, reduction = case
    torch.manual_seed(6)
    return LocalContrastiveLoss(
        strategy, region_size=region_size, in_channels=CHANNELS, projection_dim=4,
        temperature=0.3, reduction=reduction, gather_distributed=gather_distributed,
    )


def run_case(kind: str, case: tuple[Any, ...], rank: int) -> dict[str, Any]:
    """Loss value, DDP-averaged parameter gradients and input gradient on this process."""
    pipe = Pipe(kind, make_criterion(case, gather_distributed=True))
    model = torch.nn.parallel.DistributedDataParallel(pipe)
    x = global_inputs(kind)[rank * ROWS : (rank + 1) * ROWS].clone().requires_grad_(True)
    loss = model(x, batch_metadata(rank))
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {name: p.grad.detach().clone() for name, p in pipe.named_parameters()},
        "input_grad": x.grad.detach().clone(),
    }


def reference_case(kind: str, case: tuple[Any, ...]) -> dict[str, Any]:
    """The same computation in one process on the concatenated batch (no gather)."""
    pipe = Pipe(kind, make_criterion(case, gather_distributed=False))
    x = global_inputs(kind).clone().requires_grad_(True)
    loss = pipe(x, global_metadata())
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {name: p.grad.detach().clone() for name, p in pipe.named_parameters()},
        "input_grad": x.grad.detach().clone(),
    }


def _plain_gather(self: Any, x: torch.Tensor, *, differentiable: bool) -> torch.Tensor:
    """The classic mistake: all_gather (constants) with this rank's own rows spliced back in."""
    parts = [torch.empty_like(x) for _ in range(self.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    if differentiable:
        parts[self.rank] = x
    return torch.cat(parts)


def _error_of(fn: Any) -> str:
    try:
        fn()
    except ValueError as exc:
        return f"ValueError: {exc}"
    return "no error"


def worker(rank: int, out_dir: str) -> None:
    """Entry point of one process (``torch.multiprocessing.spawn`` passes `rank`)."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{Path(out_dir) / 'store'}", rank=rank,
        world_size=WORLD_SIZE,
    )
    try:
        results: dict[str, Any] = {"rank": rank, "world_size": dist.get_world_size()}
        for case in GLOBAL_CASES:
            results[("global", *case)] = run_case("global", case, rank)
        for case in LOCAL_CASES:
            results[("local", *case)] = run_case("local", case, rank)

        # the same runs with a gather that does not carry gradients
        from contrastlocal.nn import _distributed

        original = _distributed._TorchRowGather.__call__
        _distributed._TorchRowGather.__call__ = _plain_gather  # type: ignore[method-assign]
        try:
            results[("plain", "global", "domain", "mean")] = run_case(
                "global", ("domain", "mean"), rank
            )
            results[("plain", "local", "domain", 3, "mean")] = run_case(
                "local", ("domain", 3, "mean"), rank
            )
        finally:
            _distributed._TorchRowGather.__call__ = original  # type: ignore[method-assign]

        # misuse: different batch sizes on the two processes
        rows = ROWS if rank == 0 else ROWS - 2
        meta = {k: v[:rows] for k, v in batch_metadata(rank).items()}
        z = torch.randn(rows, EMBED_DIM)
        results["mismatch_global"] = _error_of(
            lambda: GlobalContrastiveLoss(gather_distributed=True)(
                z, meta["image"], meta["partition"]
            )
        )
        f = torch.randn(rows, CHANNELS, MAP, MAP)
        results["mismatch_local"] = _error_of(
            lambda: LocalContrastiveLoss("domain", in_channels=CHANNELS, gather_distributed=True)(
                f, meta["image"], meta["partition"], meta["volume"]
            )
        )
        results["sampler"] = sampler_batches(rank)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def sampler_batches(rank: int) -> dict[str, Any]:
    """Length and batches of PartitionBatchSampler(num_replicas=2, rank) for epochs 0 and 1."""
    from contrastlocal.samplers import PartitionBatchSampler

    sampler = PartitionBatchSampler(
        SAMPLER_SLICES, num_partitions=3, volumes_per_batch=2, seed=3,
        num_replicas=WORLD_SIZE, rank=rank,
    )
    epochs = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        epochs[epoch] = [list(b) for b in sampler]
    return {"len": len(sampler), "epochs": epochs}
