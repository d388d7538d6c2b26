"""Worker of the 2-process ``runtime.compile=True`` test (not a test module).

Each rank runs stage 1 and fine-tuning twice, with ``runtime.compile`` off and on (torch.compile's
"aot_eager" backend: no C compiler needed on the CPU), and saves the final weights for the test
to compare: compiled and eager training must average the gradients of the two ranks alike.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

WORLD_SIZE = 2


def worker(rank: int, out_dir: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE),
        RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD_SIZE),
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    # no inductor toolchain is assumed on the CPU: the stages' torch.compile uses "aot_eager"
    torch.compile = functools.partial(torch.compile, backend="aot_eager")  # type: ignore[assignment]
    from contrastlocal.training import finetune, init_distributed, pretrain_global

    from ._helpers import tiny_config, volumes

    init_distributed("cpu")
    data = volumes()
    out: dict[str, Any] = {}
    for compiled in (False, True):
        cfg = tiny_config(
            global_stage={"iterations": 3, "volumes_per_batch": 1, "log_every": 1},
            finetune={"iterations": 3, "batch_size": 2, "validate_every": 3, "log_every": 1},
            runtime={"compile": compiled, "num_threads": 1},
        )
        g = pretrain_global(data["pretrain"], cfg)
        ft = finetune(data["train"], data["val"], cfg)
        out[f"global_compile{compiled}"] = g.network.state_dict()
        out[f"finetune_compile{compiled}"] = ft.network.state_dict()
    dist.barrier()
    dist.destroy_process_group()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
