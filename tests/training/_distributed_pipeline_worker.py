"""Worker of the 2-process pipeline test: torchrun's environment, tiny stages (not a test module).

Both processes run the same stages into the SAME output folders, as ``torchrun`` would; rank 1
records every file it opens for writing (audit hook), and each process saves its final weights
outside the run folder for the test to compare.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

WORLD_SIZE = 2


class SimulatedKillError(Exception):
    """Raised by the callback on every rank to interrupt a stage (a simulated kill)."""


def _record_writes(root: Path, sink: list[str]) -> None:
    prefix = str(root)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and len(args) >= 2:
            path, mode = str(args[0]), args[1]
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and path.startswith(prefix):
                sink.append(f"open {path} {mode}")
        elif event in ("os.rename", "os.remove", "os.mkdir") and str(args[0]).startswith(prefix):
            sink.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def worker(rank: int, out_dir: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE),
        RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD_SIZE),
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from contrastlocal.training import (
        finetune,
        init_distributed,
        pretrain_global,
        pretrain_joint,
        pretrain_local,
    )

    from ._helpers import tiny_config, volumes

    init_distributed("cpu")  # the caller starts the process group, not the stages
    run = Path(out_dir) / "run"
    writes: list[str] = []
    _record_writes(run, writes)  # on both ranks: rank 0's list shows that the hook sees writes
    data = volumes()
    cfg = tiny_config(
        global_stage={"iterations": 4, "volumes_per_batch": 1, "log_every": 1,
                      "checkpoint_every": 2},
        local_stage={"iterations": 2, "volumes_per_batch": 1, "num_decoder_blocks": 1,
                     "log_every": 1, "checkpoint_every": 1},
    )
    out: dict[str, Any] = {}
    g = pretrain_global(data["pretrain"], cfg, out=run / "global")
    out["global"] = g.network.state_dict()
    out["world_size"] = dist.get_world_size()
    loc = pretrain_local(data["pretrain"], cfg, encoder=g.network, out=run / "local")
    out["local"] = loc.network.state_dict()
    joint = pretrain_joint(data["pretrain"], cfg, out=run / "joint", iterations=2)
    out["joint"] = joint.network.state_dict()
    ft = finetune(data["train"], data["val"], cfg, init=loc.network, out=run / "finetune")
    out["finetune"] = ft.network.state_dict()
    out["finetune_best"] = ft.best_iteration

    # interrupted after the checkpoint of iteration 2 on every rank, then resumed
    def interrupt(iteration: int, record: dict[str, Any]) -> None:
        if iteration == 3:
            raise SimulatedKillError

    with contextlib.suppress(SimulatedKillError):
        pretrain_global(data["pretrain"], cfg, out=run / "resumed", callback=interrupt)
    resumed = pretrain_global(data["pretrain"], cfg, out=run / "resumed")
    out["resumed"] = resumed.network.state_dict()
    out["resumed_from"] = resumed.resumed_from
    out["writes"] = list(writes)
    dist.barrier()
    dist.destroy_process_group()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
