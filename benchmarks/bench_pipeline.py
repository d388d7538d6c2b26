"""Iterations/s of each training stage at the paper's setting, and the losses' share of a step.

Stages are run through the public API (`pretrain_global`, `pretrain_local`, `finetune`) on random
volumes: 192x192 slices, the paper's UNet, stage-1 batch 10 volumes x 4 partitions x 2 views = 80
rows, stage-2 batch 3 x 4 x 2 = 24 rows (the original L^D), fine-tuning batch 20 with affine +
elastic augmentation. The loss share compares the loss's forward+backward alone (on inputs of the
stage's shapes) with the median step time. ``--device cuda`` uses bf16 autocast and channels-last;
``--quick`` runs 64x64 slices, a narrow UNet and a few iterations (CI).

``--step-mode`` sets ``runtime.step_mode`` (``cuda_graph``: each step one captured CUDA graph;
``compile``: forward + loss compiled, "reduce-overhead" on CUDA). The loop logs ten times per
stage; ``steady_ms`` is the median time per iteration over the logging intervals after the first,
``startup_s`` what the first interval took beyond that (the compilation or capture, the first
batches).

    python benchmarks/bench_pipeline.py [--quick] [--device cuda] [--iterations N] [--compile]
        [--step-mode eager|cuda_graph|compile] [--json P]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import metadata, parser, print_table, set_threads, time_fn, write_json

from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss
from contrastlocal.training import Volume, finetune, preset, pretrain_global, pretrain_local


def _volumes(n: int, size: int, rng: np.random.Generator) -> list[Volume]:
    out = []
    for i in range(n):
        z = 12
        image = rng.random((z, size, size), dtype=np.float32)
        label = rng.integers(0, 4, (z, size, size)).astype(np.uint8)
        out.append(Volume(image, label, case_id=f"{i:03d}"))
    return out


def _steady(history: list[dict[str, float]]) -> dict[str, float | None]:
    """Median ms/iteration after the first logging interval, and the first interval's excess."""
    logged = [int(r["iteration"]) for r in history]
    spans = [b - a for a, b in zip([0, *logged], logged, strict=False)]  # iterations per interval
    per_it = [1e3 / r["it_per_s"] for r in history]
    if len(per_it) < 2:
        return {"steady_ms": None, "startup_s": None}
    steady = float(np.median(per_it[1:]))
    return {"steady_ms": steady, "startup_s": spans[0] * (per_it[0] - steady) / 1e3}


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--iterations", type=int, default=None, help="iterations per stage")
    p.add_argument("--compile", action="store_true", help="runtime.compile=True (torch.compile)")
    p.add_argument("--step-mode", default="eager", choices=("eager", "cuda_graph", "compile"),
                   help="runtime.step_mode (default eager)")
    args = p.parse_args()
    set_threads(args.threads)
    device = args.device
    quick = args.quick
    size = 64 if quick else 192
    iterations = args.iterations or (3 if quick else (20 if device == "cpu" else 200))
    log_every = max(1, iterations // 10)
    model = (
        {"channels": (8, 16, 32), "image_size": (size, size), "global_hidden_features": 64}
        if quick
        else {"image_size": (size, size)}
    )
    cfg = preset(
        "acdc",
        model=model,
        global_stage={"iterations": iterations, "log_every": log_every},
        local_stage={
            "iterations": iterations,
            "log_every": log_every,
            "num_decoder_blocks": 2 if quick else 3,
        },
        finetune={"iterations": iterations, "log_every": log_every, "validate_every": 10**6},
        runtime={
            "device": device,
            "amp": "bf16" if device.startswith("cuda") else "none",
            "progress": False,
            "compile": args.compile,
            "step_mode": args.step_mode,
        },
    )
    rng = np.random.default_rng(0)
    vols = _volumes(cfg.global_stage.volumes_per_batch, size, rng)
    rows = []

    t = time.perf_counter()
    g = pretrain_global(vols, cfg)
    rows.append(
        {
            "stage": "1 global (G^D)",
            "rows/batch": 2 * cfg.global_stage.volumes_per_batch * 4,
            "it/s": g.iterations_per_second,
            "s/it": 1 / g.iterations_per_second,
            "wall_s": time.perf_counter() - t,
        }
    )
    t = time.perf_counter()
    loc = pretrain_local(vols, cfg, encoder=g.network)
    rows.append(
        {
            "stage": "2 local (L^D)",
            "rows/batch": 2 * cfg.local_stage.volumes_per_batch * 4,
            "it/s": loc.iterations_per_second,
            "s/it": 1 / loc.iterations_per_second,
            "wall_s": time.perf_counter() - t,
        }
    )
    t = time.perf_counter()
    ft = finetune(vols[:1], [], cfg, init=loc.network)
    rows.append(
        {
            "stage": "3 fine-tune",
            "rows/batch": cfg.finetune.batch_size,
            "it/s": ft.iterations_per_second,
            "s/it": 1 / ft.iterations_per_second,
            "wall_s": time.perf_counter() - t,
        }
    )

    # losses alone (forward + backward) on tensors of the stages' shapes
    dev = torch.device(device)
    n_global = 2 * cfg.global_stage.volumes_per_batch * 4
    emb = torch.randn(n_global, 128, device=dev, requires_grad=True)
    ids = torch.arange(n_global // 2, device=dev).repeat(2)
    parts = (ids % 4).to(dev)
    gloss = GlobalContrastiveLoss(strategy="domain")

    def global_loss() -> None:
        gloss(emb, ids, parts).backward()

    c, h, w = loc.network.feature_shape(size)
    n_local = 2 * cfg.local_stage.volumes_per_batch * 4
    feats = torch.randn(n_local, c, h, w, device=dev, requires_grad=True)
    lids = torch.arange(n_local // 2, device=dev).repeat(2)
    lparts = (lids % 4).to(dev)
    lvols = (lids // 4).to(dev)
    lloss = LocalContrastiveLoss(strategy="domain", in_channels=c).to(dev)

    def local_loss() -> None:
        lloss(feats, lids, lparts, lvols).backward()

    for row, result in zip(rows, (g, loc, ft), strict=True):
        row.update(_steady(result.history))
    repeat = args.repeat or (3 if quick else 10)
    tg = time_fn(global_loss, repeat=repeat, device=device)["median_s"]
    tl = time_fn(local_loss, repeat=repeat, device=device)["median_s"]
    rows[0]["loss_s"] = tg
    rows[0]["loss_share_%"] = 100 * tg / rows[0]["s/it"]
    rows[1]["loss_s"] = tl
    rows[1]["loss_share_%"] = 100 * tl / rows[1]["s/it"]
    total_h = sum(10_000 * r["s/it"] for r in rows) / 3600
    print_table(
        rows,
        ["stage", "rows/batch", "it/s", "s/it", "steady_ms", "startup_s", "loss_s",
         "loss_share_%", "wall_s"],
        title=f"Training stages at {size}x{size} on {device} ({iterations} iterations each, "
        f"step_mode {args.step_mode}" + (", torch.compile)" if args.compile else ")"),
    )
    print(f"\nprojected 3 x 10 000 iterations: {total_h:.2f} h (paper: 8 h on a Titan X)")
    write_json(
        args.json,
        {"meta": metadata(device), "size": size, "iterations": iterations,
         "step_mode": args.step_mode, "compile": args.compile, "rows": rows,
         "projected_hours": total_h},
    )


if __name__ == "__main__":
    main()
