"""K simulated processes for the losses' shares (``*_contrastive_loss_shard``), without a framework.

Each process's call is made twice: a recording pass (every gather returns the process's own
array repeated, so only the shapes are right) keeps what each process contributes to each
gather, in call order; the second pass gathers the recorded arrays of the other processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SimulatedGather:
    """A RowGather for K simulated processes: the other processes' arrays come from a record."""

    def __init__(self, rank: int, world_size: int, record: list[list[Any]] | None) -> None:
        self.rank, self.world_size, self.record = rank, world_size, record
        self.calls: list[Any] = []

    def __call__(self, x: Any, *, differentiable: bool) -> Any:
        self.calls.append(x)
        if self.record is None:  # recording pass: shapes only
            return np.concatenate([x] * self.world_size)
        i = len(self.calls) - 1
        parts = [x if r == self.rank else self.record[r][i] for r in range(self.world_size)]
        return np.concatenate(parts)


def shares(fn: Any, per_rank_kwargs: list[dict[str, Any]], **kwargs: Any) -> list[float]:
    """The value of `fn` on every simulated process (process r gets ``per_rank_kwargs[r]``)."""
    k = len(per_rank_kwargs)
    recorders = [SimulatedGather(r, k, None) for r in range(k)]
    for r, kw in enumerate(per_rank_kwargs):
        fn(**kw, **kwargs, gather=recorders[r])
    record = [g.calls for g in recorders]
    return [float(fn(**kw, **kwargs, gather=SimulatedGather(r, k, record)))
            for r, kw in enumerate(per_rank_kwargs)]
