"""A whole ablation grid: per-stage step time eager / graphed / concurrent, and the projected hours.

Per stage, on device-resident batches of the paper's shapes (192x192, the paper's UNet; stage 1:
80 rows, encoder + g_1 + G^D; stage 2: 24 rows, frozen encoder + 3 decoder blocks + g_2 + L^D;
stage 3: 20 slices, the UNet and soft Dice), ms per training step (forward + backward + Adam):

- eager: plain PyTorch (``TrainStep(mode="eager")``);
- graphed: the step captured as one CUDA graph (``mode="cuda_graph"``; "n/a on CPU"), and with
  ``--compile`` also ``torch.compile(mode="reduce-overhead")`` (compile time reported apart);
- concurrent: K = 1, 2, 4, 8 fine-tuning cells as one ``GroupedUNet`` step (eager, and graphed on
  CUDA); aggregate throughput against one run alone, ``K * t(one run) / t(K cells)``, with and
  without each cell's per-iteration augmentation (affine + elastic, ``aug_ms``, run per cell).

Then the grid: the number of runs of each paper table (the PLAN below; every run 10 000
iterations) times the measured per-iteration cost gives the projected device-hours for Table 6 on
ACDC and for all tables, sequentially eager, graphed, and with fine-tuning cells run concurrently
at the best measured K. ``--quick`` runs tiny shapes (CI); ``--size`` / ``--channels`` shrink the
setting for a CPU (the projection then describes that setting, not the paper's).

    python benchmarks/bench_grid.py [--quick] [--device cuda] [--compile] [--size N]
        [--concurrent 1 2 4 8] [--json P]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import cuda_peak_mib, metadata, parser, print_table, set_threads, time_fn, write_json

from contrastlocal.data import augment
from contrastlocal.models import (
    GlobalPretrainNetwork,
    GroupedUNet,
    LocalPretrainNetwork,
    UNet,
    freeze_encoder,
)
from contrastlocal.nn import GlobalContrastiveLoss, LocalContrastiveLoss
from contrastlocal.training import ExperimentConfig, preset
from contrastlocal.training._graphs import TrainStep
from contrastlocal.training._grouped import estimate_concurrent

ITERATIONS = 10_000

#: Runs per paper table (supplement Tables 1-8), counted from the paper's rows and the
#: authors' splits: fine-tuning runs = initialisations x labelled-set combinations (ACDC and
#: prostate 5 + 5 + 3 for |X_tr| = 1, 2, 8; MM-WHS 5 + 4 + 3), the random baseline counted as
#: one initialisation. Pre-training runs shared between tables are counted in each table (an
#: upper bound). Joint runs (Table 7) are costed as one stage-1 plus one stage-2 iteration;
#: Cityscapes runs at the medical per-iteration cost (an approximation: other image size).
PLAN: list[dict[str, Any]] = [
    {"table": "1", "dataset": "acdc", "stage1": 0, "stage2": 0, "joint": 0, "finetune": 2,
     "what": "fully supervised, 50 / 78 volumes"},
    {"table": "2", "dataset": "acdc", "stage1": 3, "stage2": 0, "joint": 0, "finetune": 39,
     "what": "G^D batch 40 / 250 / 450 x 13 combinations"},
    {"table": "3", "dataset": "acdc", "stage1": 3, "stage2": 0, "joint": 0, "finetune": 39,
     "what": "G^D S = 3 / 4 / 6 x 13 combinations"},
    {"table": "4", "dataset": "acdc", "stage1": 1, "stage2": 10, "joint": 0, "finetune": 100,
     "what": "L^D K = 1x1 / 3x3, l = 1..5, x 10 combinations (|X_tr| = 1, 2)"},
    {"table": "5", "dataset": "prostate", "stage1": 1, "stage2": 2, "joint": 0, "finetune": 20,
     "what": "L^D l = 3, K = 1x1 / 3x3, x 10 combinations"},
    {"table": "5", "dataset": "mmwhs", "stage1": 1, "stage2": 2, "joint": 0, "finetune": 18,
     "what": "L^D l = 3, K = 1x1 / 3x3, x 9 combinations"},
    {"table": "6", "dataset": "acdc", "stage1": 2, "stage2": 12, "joint": 0, "finetune": 195,
     "what": "15 initialisations x 13 combinations"},
    {"table": "6", "dataset": "prostate", "stage1": 2, "stage2": 12, "joint": 0, "finetune": 195,
     "what": "15 initialisations x 13 combinations"},
    {"table": "6", "dataset": "mmwhs", "stage1": 2, "stage2": 12, "joint": 0, "finetune": 180,
     "what": "15 initialisations x 12 combinations"},
    {"table": "7", "dataset": "acdc", "stage1": 0, "stage2": 0, "joint": 4, "finetune": 40,
     "what": "joint, lambda = 1 / 10 / 100 / 1000, x 10 combinations"},
    {"table": "8", "dataset": "cityscapes", "stage1": 1, "stage2": 1, "joint": 0, "finetune": 13,
     "what": "G^R (+ L^R), mixup, 100 / 200 / 400 / all images"},
]


def _config(args: Any) -> ExperimentConfig:
    size = 32 if args.quick else args.size
    model: dict[str, Any] = {"image_size": (size, size)}
    if args.quick:
        model.update(channels=(4, 8, 8), global_hidden_features=16)
        return preset(
            "acdc", model=model, global_stage={"volumes_per_batch": 2},
            local_stage={"volumes_per_batch": 1, "num_decoder_blocks": 1},
            finetune={"batch_size": 4},
        )
    if args.channels:
        model["channels"] = tuple(args.channels)
    return preset("acdc", model=model)


def _unet(cfg: ExperimentConfig, device: torch.device) -> UNet:
    m = cfg.model
    return UNet(m.in_channels, m.num_classes, channels=m.channels).to(device)


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice per slice and class, as the fine-tuning stage's default loss."""
    probs = torch.softmax(logits.float(), dim=1)
    inter = (probs * target).sum((2, 3))
    denom = probs.sum((2, 3)) + target.sum((2, 3))
    return 1.0 - (2.0 * inter / (denom + 1e-10)).mean()


def _prep(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _stage_steps(
    cfg: ExperimentConfig, device: torch.device, channels_last: bool
) -> dict[str, tuple[torch.nn.Module, list[torch.nn.Parameter], Callable[..., torch.Tensor],
                     tuple[torch.Tensor, ...]]]:
    """Per stage: (module to restore, parameters, loss_fn, example inputs)."""
    g = torch.Generator().manual_seed(0)
    h, w = cfg.model.image_size
    out: dict[str, Any] = {}
    gs = cfg.global_stage
    n1 = 2 * gs.volumes_per_batch * gs.num_partitions
    net1 = GlobalPretrainNetwork(
        _unet(cfg, device), cfg.model.image_size, cfg.model.global_hidden_features,
        cfg.model.global_out_features,
    ).to(device)
    ids1 = torch.arange(n1 // 2, device=device).repeat(2)
    parts1 = ids1 % gs.num_partitions
    loss1 = GlobalContrastiveLoss(strategy="domain")

    def step1(x: torch.Tensor) -> torch.Tensor:
        return loss1(net1(_prep(x, channels_last)).float(), ids1, parts1)

    out["1 global (G^D)"] = (net1, list(net1.parameters()), step1,
                             (torch.rand(n1, 1, h, w, generator=g).to(device),))
    ls = cfg.local_stage
    n2 = 2 * ls.volumes_per_batch * ls.num_partitions
    net2 = LocalPretrainNetwork(_unet(cfg, device), ls.num_decoder_blocks).to(device)
    freeze_encoder(net2)
    c = net2.feature_shape(cfg.model.image_size)[0]
    loss2 = LocalContrastiveLoss(
        strategy="domain", region_size=ls.region_size, num_regions=ls.num_regions,
        in_channels=c, projection_dim=ls.projection_dim,
    ).to(device)
    ids2 = torch.arange(n2 // 2, device=device).repeat(2)
    parts2 = ids2 % ls.num_partitions
    vols2 = ids2 // ls.num_partitions
    both = torch.nn.ModuleDict({"net": net2, "loss": loss2})

    def step2(x: torch.Tensor) -> torch.Tensor:
        return loss2(net2(_prep(x, channels_last)).float(), ids2, parts2, vols2)

    params2 = [p for p in both.parameters() if p.requires_grad]
    out["2 local (L^D)"] = (both, params2, step2,
                            (torch.rand(n2, 1, h, w, generator=g).to(device),))
    b = cfg.finetune.batch_size
    net3 = _unet(cfg, device)

    def step3(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _dice_loss(net3(_prep(x, channels_last)), t)

    labels = torch.randint(0, cfg.model.num_classes, (b, h, w), generator=g)
    target = torch.nn.functional.one_hot(labels, cfg.model.num_classes).permute(0, 3, 1, 2)
    out["3 fine-tune"] = (net3, list(net3.parameters()), step3,
                          (torch.rand(b, 1, h, w, generator=g).to(device),
                           target.float().to(device)))
    return out


def _time_step(
    module: torch.nn.Module, params: list[torch.nn.Parameter], fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...], mode: str, device: str, repeat: int,
) -> dict[str, Any]:
    if device.startswith("cuda"):  # channels-last on CUDA, as the stages
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(params, lr=1e-3, capturable=mode == "cuda_graph")
    t0 = time.perf_counter()
    try:
        step = TrainStep(module, fn, opt, inputs, mode=mode)  # type: ignore[arg-type]
        step(*inputs)
        setup_s = time.perf_counter() - t0
        timing = time_fn(lambda: step(*inputs), repeat=repeat, warmup=2, device=device)
    except Exception as exc:  # a capture failure is a result to report
        return {"ms": None, "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    return {"ms": 1e3 * timing["median_s"], "iqr_ms": 1e3 * timing["iqr_s"], "setup_s": setup_s}


def _aug_ms(cfg: ExperimentConfig, device: torch.device, repeat: int, dev: str) -> float:
    b = cfg.finetune.batch_size
    h, w = cfg.model.image_size
    images = torch.rand(b, 1, h, w, device=device)
    labels = torch.randint(0, cfg.model.num_classes, (b, h, w), device=device)
    gen = torch.Generator(device=device).manual_seed(1)

    def run() -> None:
        _, lab = augment.geometric_augment(images, labels, gen)
        assert lab is not None
        torch.nn.functional.one_hot(lab.long(), cfg.model.num_classes)

    return 1e3 * time_fn(run, repeat=repeat, warmup=1, device=dev)["median_s"]


def _alternate(fns: list[Callable[[], Any]], repeat: int, device: str) -> list[float]:
    """Median ms of each function, timed in alternating rounds (load changes hit all alike)."""
    for fn in fns:
        for _ in range(2):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time_fn(fn, repeat=1, warmup=0, device=device)
            times[i].append(t["median_s"])
    return [1e3 * statistics.median(t) for t in times]


def _grouped_step(
    cfg: ExperimentConfig, k: int, device: torch.device, channels_last: bool
) -> tuple[torch.nn.Module, Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    torch.manual_seed(k)
    net = GroupedUNet.from_unets([_unet(cfg, device) for _ in range(k)])
    if channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    g = torch.Generator().manual_seed(k)
    b = cfg.finetune.batch_size
    h, w = cfg.model.image_size
    classes = cfg.model.num_classes
    x = torch.rand(b, k, h, w, generator=g).to(device)
    labels = torch.randint(0, classes, (b, k, h, w), generator=g)
    target = torch.cat(
        [torch.nn.functional.one_hot(labels[:, i], classes).permute(0, 3, 1, 2) for i in range(k)],
        dim=1,
    ).float().to(device)

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = net(_prep(x, channels_last))
        losses = [
            _dice_loss(lg, tg) for lg, tg in zip(net.split(logits), net.split(t), strict=True)
        ]
        return torch.stack(losses).sum()

    return net, step, (x, target)


def _hours(plan: list[dict[str, Any]], ms: dict[str, float], ft_ratio: float = 1.0) -> float:
    total_ms = 0.0
    for row in plan:
        total_ms += row["stage1"] * ms["1"] + row["stage2"] * ms["2"]
        total_ms += row["joint"] * (ms["1"] + ms["2"])
        total_ms += row["finetune"] * ms["3"] / ft_ratio
    return total_ms * ITERATIONS / 3.6e6


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--compile", action="store_true", help="also torch.compile(reduce-overhead)")
    p.add_argument("--size", type=int, default=192, help="image size (default: the paper's 192)")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="UNet channels")
    p.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="numbers of concurrent fine-tuning cells (default 1 2 4 8)")
    args = p.parse_args()
    # --quick on a shared 2-core machine: one thread (two spin against other load)
    set_threads(1 if args.quick and "--threads" not in sys.argv else args.threads)
    torch.manual_seed(0)
    dev = args.device
    device = torch.device(dev)
    cuda = device.type == "cuda"
    repeat = args.repeat or (2 if args.quick else (5 if not cuda else 50))
    cfg = _config(args)
    setting = f"{cfg.model.image_size[0]}x{cfg.model.image_size[1]}, channels {cfg.model.channels}"

    modes = ["eager"] + (["cuda_graph"] if cuda else []) + (["compile"] if args.compile else [])
    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    stages = _stage_steps(cfg, device, cuda)
    for name, (module, params, fn, inputs) in stages.items():
        row: dict[str, Any] = {"stage": name, "rows": int(inputs[0].shape[0])}
        res: dict[str, Any] = {}
        for mode in modes:
            res[mode] = _time_step(module, params, fn, inputs, mode, dev, repeat)
        row["eager_ms"] = res["eager"]["ms"]
        row["graphed_ms"] = res["cuda_graph"]["ms"] if cuda else "n/a on CPU"
        if cuda and res["cuda_graph"]["ms"] is None:
            row["graphed_ms"] = "failed"
        if cuda and res["cuda_graph"]["ms"]:
            row["graph_speed-up"] = res["eager"]["ms"] / res["cuda_graph"]["ms"]
        if args.compile:
            row["compiled_ms"] = res["compile"]["ms"] or "failed"
            row["compile_s"] = res["compile"].get("setup_s")
        rows.append(row)
        results[name] = res
    aug = _aug_ms(cfg, device, repeat, dev)
    rows[2]["aug_ms"] = aug
    columns = ["stage", "rows", "eager_ms", "graphed_ms", "graph_speed-up", "aug_ms"]
    if args.compile:
        columns += ["compiled_ms", "compile_s"]
    print_table(rows, columns, title=f"Training step per stage on {dev} ({setting})")
    for name, res in results.items():
        for mode, r in res.items():
            if r.get("error"):
                print(f"  {name}, {mode}: {r['error']}")

    # concurrent fine-tuning cells against one run alone, timed in alternation (shared machines)
    single_module, single_params, single_fn, single_inputs = stages["3 fine-tune"]
    single_graphed = rows[2]["graphed_ms"] if isinstance(rows[2]["graphed_ms"], float) else None
    single_step = TrainStep(single_module, single_fn,
                            torch.optim.Adam(single_params, lr=1e-3), single_inputs)
    est = estimate_concurrent(cfg, device)
    crow: list[dict[str, Any]] = []
    for k in args.concurrent:
        if k > est.max_cells:
            crow.append({"K": k, "eager_ms": f"does not fit ({est.max_cells} max)"})
            continue
        net, fn, inputs = _grouped_step(cfg, k, device, cuda)
        grouped_step = TrainStep(net, fn, torch.optim.Adam(net.parameters(), lr=1e-3), inputs)
        t_one, t_k = _alternate(
            [lambda: single_step(*single_inputs), lambda n=grouped_step, i=inputs: n(*i)],
            repeat, dev,
        )
        r: dict[str, Any] = {"K": k, "one_run_ms": t_one, "eager_ms": t_k}
        best_one, best_k = t_one, t_k
        if cuda:
            gr = _time_step(net, list(net.parameters()), fn, inputs, "cuda_graph", dev, repeat)
            r["graphed_ms"] = gr["ms"] if gr["ms"] is not None else "failed"
            if gr["ms"] is not None:
                best_k = min(best_k, gr["ms"])
            if single_graphed is not None:
                best_one = min(best_one, single_graphed)
            r["peak_MiB"] = cuda_peak_mib(lambda s=grouped_step, i=inputs: s(*i))
        else:
            r["graphed_ms"] = "n/a on CPU"
        r["estimate_MiB"] = k * est.per_cell_bytes / 2**20
        r["ms_per_cell"] = best_k / k
        r["throughput_x"] = k * best_one / best_k
        r["with_aug_x"] = k * (best_one + aug) / (best_k + k * aug)
        crow.append(r)
    print_table(
        crow,
        ["K", "one_run_ms", "eager_ms", "graphed_ms", "ms_per_cell", "throughput_x", "with_aug_x",
         "estimate_MiB", "peak_MiB"],
        title="Concurrent fine-tuning cells (GroupedUNet step for K cells) vs one run alone "
        f"(best of eager / graphed; one_run_ms timed in alternation with eager_ms); "
        f"{est.describe()}",
    )

    # projection
    def ms_of(key: str) -> dict[str, float]:
        out = {}
        for i, r in enumerate(rows, start=1):
            v = r.get(key)
            out[str(i)] = v if isinstance(v, float) else r["eager_ms"]
        out["3"] += aug
        return out

    eager = ms_of("eager_ms")
    graphed = ms_of("graphed_ms")
    # one run at a time (K = 1, ratio 1) unless some K measured faster
    ratios = [{"K": 1, "with_aug_x": 1.0}] + [
        r for r in crow if isinstance(r.get("with_aug_x"), float)
    ]
    best_k = max(ratios, key=lambda r: r["with_aug_x"])
    table6 = [r for r in PLAN if r["table"] == "6" and r["dataset"] == "acdc"]
    unit = "GPU" if cuda else "CPU"
    proj = []
    for label, plan in (("Table 6, ACDC", table6), ("all tables (1-8)", PLAN)):
        proj.append({
            "grid": label,
            "runs": sum(r["stage1"] + r["stage2"] + r["joint"] + r["finetune"] for r in plan),
            f"eager_{unit}_h": _hours(plan, eager),
            f"graphed_{unit}_h": _hours(plan, graphed),
            f"graphed+K={best_k['K']}_{unit}_h": _hours(plan, graphed, best_k["with_aug_x"]),
        })
    print_table(PLAN, ["table", "dataset", "stage1", "stage2", "joint", "finetune", "what"],
                title=f"Plan: runs per table, {ITERATIONS} iterations each")
    print_table(proj, list(proj[0]), title=f"Projected {unit}-hours ({setting} on {dev})")
    write_json(args.json, {
        "meta": metadata(dev), "setting": setting, "stages": rows, "stage_details": results,
        "concurrent": crow, "augment_ms": aug, "estimate": est.describe(), "plan": PLAN,
        "projection": proj, "iterations_per_run": ITERATIONS,
    })


if __name__ == "__main__":
    main()
