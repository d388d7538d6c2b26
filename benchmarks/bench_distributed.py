"""Data-parallel pre-training: step time and the cost of gathering the loss across processes.

A stage-1 step (UNet encoder + g_1, G^D global loss, backward, Adam) timed with

- ``1 proc, B``: one process, the per-process batch B (the baseline);
- ``1 proc, 2B``: one process, the global batch of two processes (what the gather reproduces);
- ``2 proc, local loss``: 2 gloo processes under DistributedDataParallel, each contrasting its own
  B rows (``gather_distributed=False``);
- ``2 proc, gathered loss``: the same with ``gather_distributed=True`` (negatives of both
  processes, the single-process loss of the 2B batch).

and the loss alone (forward + backward of the criterion on fixed embeddings) with and without the
gather, which isolates the gather's overhead (two all_gathers of the ids, one of the embeddings,
the shape check, the all_reduce of the value, and the backward all_reduce). Each process uses
``--threads`` threads (default 1: two processes on a 2-core machine); times are the maximum over
the processes of each repetition's wall time, then median and IQR. With ``--device cuda`` (one
GPU) only the 1-process rows run, for comparison.

Usage: ``python benchmarks/bench_distributed.py [--quick] [--json PATH] [--threads 1]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common


def _summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "n": float(len(times))}


def _closures(
    opt: Any, model: Any, criterion: Any, x: Any, z_fixed: Any, images: Any, partitions: Any
) -> tuple[Any, Any]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(model(x), images, partitions).backward()
        opt.step()

    def loss_only() -> None:
        z_fixed.grad = None
        criterion(z_fixed, images, partitions).backward()

    return step, loss_only


def _run(rank: int, world_size: int, cfg: dict[str, Any], store_path: str | None) -> dict[str, Any]:
    """Time the cases of one process; with world_size > 1 inside a gloo group."""
    import time

    import torch
    import torch.distributed as dist

    from contrastlocal.models import GlobalPretrainNetwork, UNet
    from contrastlocal.nn import GlobalContrastiveLoss

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    distributed = world_size > 1
    if distributed:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=world_size)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn: Any) -> dict[str, float]:
        for _ in range(cfg["warmup"]):
            fn()
        times = []
        for _ in range(cfg["repeat"]):
            if distributed:
                dist.barrier()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            if distributed:
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            times.append(float(elapsed))
        return _summary(times)

    results: dict[str, Any] = {}
    size, channels = cfg["image_size"], cfg["channels"]
    for batch_volumes in cfg["batch_volumes"]:
        n = 2 * batch_volumes * 4  # two views of volumes x 4 partitions
        gen = torch.Generator().manual_seed(rank)
        x = torch.randn(n, 1, size, size, generator=gen).to(device)
        images = (torch.arange(n) % (n // 2)).to(device)
        partitions = (images % 4).to(device)
        z_fixed = torch.randn(n, 128, generator=gen).to(device).requires_grad_(True)
        for gather in ([False, True] if distributed else [False]):
            torch.manual_seed(0)
            net = GlobalPretrainNetwork(UNet(channels=channels), image_size=size).to(device)
            params = [*net.backbone.encoder_levels.parameters(),
                      *net.projection_head.parameters()]
            model: torch.nn.Module = net
            if distributed:
                model = torch.nn.parallel.DistributedDataParallel(
                    net, find_unused_parameters=True
                )
            opt = torch.optim.Adam(params, lr=1e-3)
            criterion = GlobalContrastiveLoss("domain", gather_distributed=gather)

            step, loss_only = _closures(opt, model, criterion, x, z_fixed, images, partitions)
            tag = f"{world_size} proc, B={n}, " + ("gathered" if gather else "local") + " loss"
            results[tag] = {"step": timed(step), "loss": timed(loss_only), "rows": n,
                            "world_size": world_size, "gather": gather,
                            "global_rows": n * world_size if gather else n}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return results


def _worker(rank: int, world_size: int, cfg: dict[str, Any], out: str) -> None:
    import torch

    res = _run(rank, world_size, cfg, str(Path(out) / "store"))
    if rank == 0:
        torch.save(res, Path(out) / "results.pt")


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    args = p.parse_args()
    _common.set_threads(args.threads)
    import torch

    quick = args.quick
    cfg = {
        "threads": args.threads,
        "device": args.device,
        "image_size": 32 if quick else 64,
        "channels": (4, 8, 8, 8) if quick else (16, 32, 64, 128, 128, 128),
        "batch_volumes": [1] if quick else [2, 5],
        "repeat": args.repeat or (3 if quick else 15),
        "warmup": 1 if quick else 3,
    }
    results: dict[str, Any] = {}
    # 1 process: B and 2B (the global batch of 2 processes)
    single = dict(cfg, batch_volumes=sorted({*cfg["batch_volumes"],
                                             *(2 * v for v in cfg["batch_volumes"])}))
    results.update(_run(0, 1, single, None))
    if args.device == "cpu":
        with tempfile.TemporaryDirectory() as out:
            env_backup = os.environ.get("GLOO_SOCKET_IFNAME")
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
            torch.multiprocessing.spawn(_worker, args=(2, cfg, out), nprocs=2, join=True)
            if env_backup is None:
                os.environ.pop("GLOO_SOCKET_IFNAME", None)
            results.update(torch.load(Path(out) / "results.pt", weights_only=False))

    rows = []
    for b in cfg["batch_volumes"]:
        n = 2 * b * 4
        base = results[f"1 proc, B={n}, local loss"]
        tags = [f"1 proc, B={n}, local loss", f"1 proc, B={2 * n}, local loss",
                f"2 proc, B={n}, local loss", f"2 proc, B={n}, gathered loss"]
        for tag in tags:
            if tag not in results:
                continue
            r = results[tag]
            rows.append({
                "case": tag,
                "rows/proc": r["rows"],
                "loss sees": r["global_rows"],
                "step ms": 1e3 * r["step"]["median_s"],
                "IQR ms": 1e3 * r["step"]["iqr_s"],
                "step / 1 proc B": r["step"]["median_s"] / base["step"]["median_s"],
                "loss ms": 1e3 * r["loss"]["median_s"],
                "loss IQR ms": 1e3 * r["loss"]["iqr_s"],
                "loss / 1 proc B": r["loss"]["median_s"] / base["loss"]["median_s"],
            })
    columns = ["case", "rows/proc", "loss sees", "step ms", "IQR ms", "step / 1 proc B",
               "loss ms", "loss IQR ms", "loss / 1 proc B"]
    meta = _common.metadata(args.device)
    _common.print_table(
        rows, columns,
        title=f"Stage-1 step and global-loss time, {args.device}, {args.threads} thread(s) per "
              f"process, image {cfg['image_size']}^2 (median of {cfg['repeat']}; max over ranks)",
    )
    for b in cfg["batch_volumes"]:
        n = 2 * b * 4
        local = results.get(f"2 proc, B={n}, local loss")
        gathered = results.get(f"2 proc, B={n}, gathered loss")
        if local and gathered:
            extra = gathered["step"]["median_s"] - local["step"]["median_s"]
            extra_loss = gathered["loss"]["median_s"] - local["loss"]["median_s"]
            print(f"B={n}/proc: gather overhead {1e3 * extra_loss:.2f} ms on the loss alone, "
                  f"{1e3 * extra:.2f} ms per step ({100 * extra / local['step']['median_s']:.1f}%"
                  " of the 2-process step)")
    _common.write_json(args.json, {"meta": meta, "config": {k: str(v) for k, v in cfg.items()},
                                   "results": results})


if __name__ == "__main__":
    main()
