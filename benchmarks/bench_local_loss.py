"""Local contrastive loss: forward + backward time against the loop reference and the network.

The paper's stage-2 setting: 40 images x 2 views = 80 rows, 192x192 inputs, feature maps of the
third decoder block after g_2 (C = 64, 48x48), R = 13 regions, K = 3 with the learned 9·C -> 128
projection, J = 5 negatives (L^R), and the same at 512 rows. Cases, float32 torch on the CPU (or
the GPU with ``--device cuda``, where memory is the CUDA peak above the inputs):

- ``ours/random``, ``ours/domain``: :class:`contrastlocal.LocalContrastiveLoss` (public API),
  forward + backward into the feature maps and the projection;
- ``loop/random``: the loop oracle of the tests (``tests/_reference_local.py``, one term at a
  time), NumPy, **forward only** (so its ratio understates the gap), 80 rows only;
- ``network``: forward + backward of the stage-2 network (frozen encoder, 3 decoder blocks, g_2:
  :class:`contrastlocal.models.LocalPretrainNetwork`) on the same batch with a trivial loss;
- ``network+ours``: the full step, network then :class:`LocalContrastiveLoss` (``random``).

Operator count (``ops``, printed and kept in the JSON): the top-level aten operators of one
forward + backward on the CPU (``torch.profiler``, ops not nested in another aten op) at the
stage-2 setting of L^D — 24 rows (3 volumes x 4 partitions x 2 views) of 64 x 48 x 48 maps,
K = 3 with the learned 9·C -> 128 projection, R = 13 — for ``ours/domain``, ``ours/random``,
``array-api/domain`` (the framework-agnostic code on the same tensors, ``reduction="none"``
summed and divided by the normaliser) and ``floor``: one gather of the R regions, the projection,
a normalisation, one batched (R, N, N) product and ``cross_entropy`` (a per-region InfoNCE, the
least work a local contrastive loss does). Target: ours <= 60.

``loss/net`` is the loss's median time over the network's: the target is <= 5%. Wall time is the
contract (median, IQR); the process CPU time of each call (all threads) is printed beside it,
because on a shared, oversubscribed machine it is the steadier of the two. Peak resident memory
of one loss forward + backward is measured in a fresh process.

Usage: ``python benchmarks/bench_local_loss.py [--quick] [--json PATH] [--threads 2]
[--device cuda] [--rows 80 512]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np

CHANNELS = 64
TEMPERATURE = 0.1

MEMORY_CODE = """
import torch
torch.set_num_threads({threads})
torch.manual_seed(0)
from contrastlocal import LocalContrastiveLoss
n = {n}
features = torch.randn(n, {c}, {m}, {m}, requires_grad=True)
images = torch.arange(n) % (n // 2)
loss = LocalContrastiveLoss("random", in_channels={c})
{body}
"""


def _ids(n: int) -> tuple[Any, Any, Any]:
    import torch

    images = torch.arange(n) % (n // 2)  # two views, concatenated
    volumes = images // 4  # 4 partitions per volume, as the partition sampler draws them
    partitions = images % 4
    return images, partitions, volumes


def with_cpu_clock(fn: Any) -> tuple[Any, list[float]]:
    """Wrap `fn` so that each call's process CPU time (all threads) is recorded."""
    samples: list[float] = []

    def wrapped() -> None:
        t0 = time.process_time()
        fn()
        samples.append(time.process_time() - t0)

    return wrapped, samples


def build(case: str, n: int, image_size: int, map_size: int, device: str = "cpu") -> Any:
    """A zero-argument callable doing one forward + backward of `case`."""
    import torch

    torch.manual_seed(0)
    if case == "loop/random":
        device = "cpu"  # the NumPy oracle
    images, partitions, volumes = (t.to(device) for t in _ids(n))
    features = torch.randn(n, CHANNELS, map_size, map_size).to(device).requires_grad_(True)
    if case.startswith("ours/"):
        from contrastlocal import LocalContrastiveLoss

        criterion = LocalContrastiveLoss(
            case.split("/")[1], in_channels=CHANNELS, temperature=TEMPERATURE
        ).to(device)

        def ours() -> None:
            features.grad = None
            criterion(features, images, partitions, volumes).backward()

        return ours
    if case == "loop/random":
        from contrastlocal.functional import local_region_positions
        from tests import _reference_local as ref

        # NumPy, forward only: autograd through per-pixel slices of the whole batch costs a
        # full-size gradient buffer per slice, which says nothing about the loop itself.
        positions, negatives = local_region_positions(map_size)
        weights = (images[:, None] == images[None, :]).double().numpy()
        weights[range(n), range(n)] = 0.0
        projection = torch.nn.init.xavier_uniform_(torch.empty(9 * CHANNELS, 128)).numpy()
        maps = features.detach().numpy()

        def loop() -> None:
            ref.local_loss_reference(
                maps, weights, positions, negatives, region_size=3, projection=projection,
                temperature=TEMPERATURE,
            )

        return loop
    if case.startswith("network"):
        from contrastlocal import LocalContrastiveLoss
        from contrastlocal.models import LocalPretrainNetwork, UNet, freeze_encoder

        net = LocalPretrainNetwork(UNet(in_channels=1, out_channels=4), num_decoder_blocks=3)
        freeze_encoder(net)
        net.train().to(device)
        x = torch.randn(n, 1, image_size, image_size).to(device)
        criterion = LocalContrastiveLoss(
            "random", in_channels=CHANNELS, temperature=TEMPERATURE
        ).to(device)
        with_loss = case == "network+ours"

        def step() -> None:
            net.zero_grad(set_to_none=True)
            out = net(x)
            loss = criterion(out, images) if with_loss else out.square().mean()
            loss.backward()

        return step
    raise KeyError(case)


def op_counts() -> dict[str, int]:
    """Top-level aten ops of one forward + backward at the stage-2 setting (CPU), per case."""
    import torch
    from torch.nn import functional

    from contrastlocal import LocalContrastiveLoss
    from contrastlocal.functional import local_contrastive_loss, local_region_positions

    n, m = 24, 48
    torch.manual_seed(0)
    images, partitions, volumes = _ids(n)
    features = torch.randn(n, CHANNELS, m, m, requires_grad=True)
    counts: dict[str, int] = {}
    for strategy in ("domain", "random"):
        criterion = LocalContrastiveLoss(strategy, in_channels=CHANNELS, temperature=TEMPERATURE)

        def ours(criterion: Any = criterion) -> None:
            criterion(features, images, partitions, volumes).backward()

        counts[f"ours/{strategy}"] = _common.count_aten_ops(
            ours, [features, criterion.projection])
    criterion = LocalContrastiveLoss("domain", in_channels=CHANNELS, temperature=TEMPERATURE)
    projection = criterion.projection

    def agnostic() -> None:
        terms = local_contrastive_loss(
            features, image_ids=images, partition_ids=partitions, volume_ids=volumes,
            strategy="domain", projection=projection, temperature=TEMPERATURE,
            reduction="none",
        )
        (terms.sum() / float(terms.shape[-1] * int((terms != 0).any(-1).sum()))).backward()

    counts["array-api/domain"] = _common.count_aten_ops(agnostic, [features, projection])
    positions, _ = local_region_positions(m)
    rows = torch.tensor(positions[:, 0, None, None] + np.arange(3)[None, :, None])
    cols = torch.tensor(positions[:, 1, None, None] + np.arange(3)[None, None, :])
    index = (rows * m + cols).reshape(-1)  # (R * 9,) flat pixels of the R regions
    eye = torch.eye(n) * 1e9
    target = ((torch.arange(n) + n // 2) % n).repeat(len(positions))

    def floor() -> None:
        taken = features.flatten(2).index_select(2, index)  # (N, C, R * 9)
        regions = taken.view(n, CHANNELS, -1, 9).permute(2, 0, 3, 1).reshape(-1, n, 9 * CHANNELS)
        z = functional.normalize(regions @ projection, dim=-1)
        logits = z @ z.mT / TEMPERATURE - eye
        functional.cross_entropy(logits.reshape(-1, n), target).backward()

    counts["floor"] = _common.count_aten_ops(floor, [features, projection])
    print("top-level aten ops, forward + backward, L^D stage-2 setting (24 x 64 x 48 x 48, "
          "K = 3, R = 13, 128-d projection): " + ", ".join(f"{k} {v}" for k, v in counts.items()),
          flush=True)
    return counts


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--skip-network-above", type=int, default=512,
        help="time the network only up to this many rows (it is slow on CPU)",
    )
    p.add_argument(
        "--rows", type=int, nargs="+", default=[80, 512],
        help="batch rows to time (192x192 inputs, 48x48 maps); ignored with --quick",
    )
    args = p.parse_args()
    _common.set_threads(args.threads)
    # (rows, input size, map size); --quick: tiny inputs so CI keeps the script working
    settings = [(8, 64, 16)] if args.quick else [(n, 192, 48) for n in args.rows]
    repeat = args.repeat or (3 if args.quick else 10)
    cuda = args.device.startswith("cuda")
    ops = op_counts()
    ops_rows = [{"case": k, "ops": v, "x_floor": v / ops["floor"]} for k, v in ops.items()]
    # memory first: a child's ru_maxrss starts from this process's high-water mark
    mem_rows: list[dict[str, Any]] = []
    for n, _, map_size in [] if cuda else settings:
        for case, body in (
            ("baseline", ""),
            ("ours/random", "loss(features, images).backward()"),
        ):
            code = MEMORY_CODE.format(threads=args.threads, n=n, c=CHANNELS, m=map_size,
                                      body=body)
            mem_rows.append({"N": n, "case": case,
                             "peak_MiB": _common.peak_memory_subprocess(code)})

    rows: list[dict[str, Any]] = []
    for n, image_size, map_size in settings:
        cases = ["ours/random", "ours/domain"]
        if n <= 80:
            cases.append("loop/random")
        if n <= args.skip_network_above:
            cases += ["network", "network+ours"]
        results: dict[str, dict[str, float]] = {}
        for case in cases:
            raw = build(case, n, image_size, map_size, args.device)
            fn, cpu_samples = with_cpu_clock(raw)
            slow = case.startswith(("loop", "network")) and not args.quick and not cuda
            big = n > 80 and slow
            warmup = 0 if (big or case.startswith("loop")) else 1
            results[case] = _common.time_fn(
                fn, repeat=1 if big else (2 if slow else repeat), warmup=warmup,
                device="cpu" if case.startswith("loop") else args.device,
            )
            if cuda and case.startswith("ours/"):
                mem_rows.append({"N": n, "case": case, "peak_MiB": _common.cuda_peak_mib(raw)})
            results[case]["cpu_s"] = statistics.median(cpu_samples[warmup:])
            print(f"  N={n} {case}: {results[case]['median_s']:.4f} s wall, "
                  f"{results[case]['cpu_s']:.4f} s cpu", flush=True)
        ours = results["ours/random"]["median_s"]
        net = results.get("network", {}).get("median_s")
        net_cpu = results.get("network", {}).get("cpu_s")
        for case, r in results.items():
            is_loss = case.startswith("ours/")
            rows.append({
                "N": n,
                "map": f"{CHANNELS}x{map_size}x{map_size}",
                "case": case,
                "median_ms": 1e3 * r["median_s"],
                "iqr_ms": 1e3 * r["iqr_s"],
                "cpu_ms": 1e3 * r["cpu_s"],
                "runs": int(r["n"]),
                "x_ours": r["median_s"] / ours,
                "loss/net_%": 100.0 * r["median_s"] / net if net and is_loss else None,
                "loss/net_cpu_%": 100.0 * r["cpu_s"] / net_cpu if net_cpu and is_loss else None,
            })
        print(f"N={n} done ({time.strftime('%H:%M:%S')})", flush=True)

    _common.print_table(
        rows,
        ["N", "map", "case", "median_ms", "iqr_ms", "cpu_ms", "runs", "x_ours", "loss/net_%",
         "loss/net_cpu_%"],
        title=(
            f"forward + backward, float32, R = 13, K = 3, J = 5, {args.device} "
            f"({args.threads} threads; "
            "x_ours = time / ours/random; loss/net_% = loss time / network step time, wall "
            "and process CPU time)"
        ),
    )
    _common.print_table(mem_rows, ["N", "case", "peak_MiB"],
                        title=("peak CUDA memory of one loss forward + backward above its inputs"
                               if cuda else "peak resident memory of one loss forward + backward "
                               "(fresh process)"))
    _common.print_table(ops_rows, ["case", "ops", "x_floor"],
                        title=("top-level aten ops of one forward + backward on the CPU, L^D "
                               "stage-2 setting (24 rows, 64 x 48 x 48, K = 3, R = 13)"))
    _common.write_json(args.json, {"meta": _common.metadata(args.device), "timing": rows,
                                   "memory": mem_rows, "ops": ops_rows})


if __name__ == "__main__":
    main()
