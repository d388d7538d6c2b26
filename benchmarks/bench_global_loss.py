"""Global contrastive loss: forward + backward time and peak memory against baselines.

Cases, all float32 torch on the chosen device, D = 128, two views per image, S = 4 partitions:

- ``ours/random``, ``ours/domain``: :class:`contrastlocal.GlobalContrastiveLoss` (public API);
- ``floor``: normalise + one matmul + ``cross_entropy`` in plain torch (NT-Xent's minimum work);
- ``array-api/domain``: the framework-agnostic kernel (the code NumPy, JAX, CuPy run) on the
  same torch tensors, with autograd's backward: what the fused torch path saves;
- ``loop``: the loop-based NumPy oracle of the tests (value and analytic gradient), small N only;
- ``pml/random``, ``pml/domain``: pytorch-metric-learning's ``NTXentLoss`` with labels = image ids
  / partition ids, where its (pairs x pairs) intermediate fits in memory.

Operator count: the top-level aten operators of one forward + backward at N = 80 on the CPU
(``torch.profiler``, ops not nested in another aten op; ``ops`` in the table and the JSON), for
the floor and ours: a proxy for the kernel launches and host work a GPU step pays.

Peak memory (resident set, MiB) of one forward + backward is measured in a fresh subprocess;
``baseline`` is the same process doing nothing but the imports and the input tensors. With
``--device cuda`` the tensors live on the GPU, N goes up to 32768, and the peak is the CUDA memory
one forward + backward allocates above its inputs (``above_baseline_MiB``).

Usage: ``python benchmarks/bench_global_loss.py [--quick] [--json PATH] [--threads 2]
[--device cuda]``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

D = 128
TEMPERATURE = 0.1
# (num_pos_pairs x num_neg_pairs) floats PML materialises; skip it above this many bytes
PML_LIMIT_BYTES = 1.5e9

SETUP = """
import torch
torch.set_num_threads({threads})
torch.manual_seed(0)
n, d = {n}, {d}
images = torch.arange(n) % (n // 2)
partitions = images % 4
z = torch.randn(n, d, requires_grad=True)
"""

CASES: dict[str, str] = {
    "baseline": "",
    "floor": """
import torch.nn.functional as F
zn = F.normalize(z, dim=1)
logits = zn @ zn.T / {temperature}
logits = logits - 1e9 * torch.eye(n)
target = (torch.arange(n) + n // 2) % n
F.cross_entropy(logits, target).backward()
""",
    "ours/random": """
from contrastlocal import GlobalContrastiveLoss
GlobalContrastiveLoss("random", temperature={temperature})(z, images, partitions).backward()
""",
    "ours/domain": """
from contrastlocal import GlobalContrastiveLoss
GlobalContrastiveLoss("domain", temperature={temperature})(z, images, partitions).backward()
""",
    "pml/random": """
from pytorch_metric_learning.losses import NTXentLoss
NTXentLoss(temperature={temperature})(z, images).backward()
""",
    "pml/domain": """
from pytorch_metric_learning.losses import NTXentLoss
NTXentLoss(temperature={temperature})(z, partitions).backward()
""",
}


def peak_memory_mib(code: str) -> float:
    """Peak resident memory (MiB) of a fresh process running `code` (its own VmHWM).

    ``ru_maxrss`` is not used: Linux carries it over from the parent through fork and exec, so a
    child of a large parent would report the parent's peak.
    """
    wrapper = code + (
        "\nfor line in open('/proc/self/status'):\n"
        "    if line.startswith('VmHWM:'):\n"
        "        print(float(line.split()[1]) / 1024.0)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def pml_bytes(case: str, n: int) -> float:
    if case == "pml/random":
        pos, neg = n, n * (n - 2)
    else:
        per = n // 4
        pos, neg = n * (per - 1), n * (n - per)
    return 4.0 * pos * neg


def build(case: str, n: int, threads: int, device: str = "cpu",
          leaves: list[Any] | None = None) -> Any:
    """A zero-argument callable doing one forward + backward of `case` (its input in `leaves`)."""
    import torch

    torch.manual_seed(0)
    images = (torch.arange(n) % (n // 2)).to(device)
    partitions = images % 4
    z = torch.randn(n, D).to(device).requires_grad_(True)
    if leaves is not None:
        leaves.append(z)

    if case == "floor":
        from torch.nn import functional

        eye = torch.eye(n, device=device) * 1e9
        target = ((torch.arange(n) + n // 2) % n).to(device)

        def floor() -> None:
            zn = functional.normalize(z, dim=1)
            logits = zn @ zn.T / TEMPERATURE - eye
            functional.cross_entropy(logits, target).backward()

        return floor
    if case.startswith("ours/"):
        from contrastlocal import GlobalContrastiveLoss

        loss = GlobalContrastiveLoss(case.split("/")[1], temperature=TEMPERATURE)
        return lambda: loss(z, images, partitions).backward()
    if case.startswith("array-api/"):
        from array_api_compat import array_namespace

        from contrastlocal.functional import global_pairing
        from contrastlocal.functional._kernel import _masked_contrastive_impl

        positives, negatives = global_pairing(images, partitions, strategy=case.split("/")[1])
        xp = array_namespace(z)

        def agnostic() -> None:
            _masked_contrastive_impl(z, positives, negatives, temperature=TEMPERATURE,
                                     normalizer=None, reduction="mean", xp=xp,
                                     use_fast_path=False).backward()

        return agnostic
    if case.startswith("pml/"):
        from pytorch_metric_learning.losses import NTXentLoss

        pml = NTXentLoss(temperature=TEMPERATURE)
        labels = images if case == "pml/random" else partitions
        return lambda: pml(z, labels).backward()
    if case.startswith("loop/"):
        from tests import _reference as ref

        zn = z.detach().double().cpu().numpy()
        strategy = case.split("/")[1]
        images, partitions = images.cpu(), partitions.cpu()
        return lambda: ref.global_loss_and_grad(zn, images.numpy(), partitions.numpy(),
                                                strategy, TEMPERATURE)
    raise KeyError(case)


def op_counts(threads: int) -> dict[str, int]:
    """Top-level aten ops of one forward + backward at N = 80 on the CPU, per case."""
    counts = {}
    for case in ("floor", "ours/random", "ours/domain", "array-api/domain"):
        leaves: list[Any] = []
        fn = build(case, 80, threads, "cpu", leaves)
        counts[case] = _common.count_aten_ops(fn, leaves)
    print("top-level aten ops, forward + backward, N = 80: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return counts


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    _common.set_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sizes = [80, 256] if args.quick else [80, 512, 2048, 8192] + ([32768] if cuda else [])
    repeat = args.repeat or (3 if args.quick else 10)
    rows: list[dict[str, Any]] = []
    mem_rows: list[dict[str, Any]] = []
    for n in sizes:
        cases = ["floor", "ours/random", "ours/domain", "array-api/domain"]
        if n <= 80:
            cases += ["loop/random", "loop/domain"]
        limit = 2e7 if args.quick else PML_LIMIT_BYTES
        cases += [c for c in ("pml/random", "pml/domain") if pml_bytes(c, n) < limit]
        results: dict[str, dict[str, float]] = {}
        for case in cases:
            fn = build(case, n, args.threads, "cpu" if case.startswith("loop/") else args.device)
            slow = case.startswith("loop/")
            few = not cuda and (n >= 8192 or (case.startswith("pml/") and n >= 512))
            reps = 1 if slow else (max(3, repeat // 3) if few else repeat)
            results[case] = _common.time_fn(fn, repeat=reps, warmup=0 if slow else 2,
                                            min_time=0.0, device=args.device)
            if cuda and not slow:
                mem_rows.append({"N": n, "case": case, "peak_MiB": None,
                                 "above_baseline_MiB": _common.cuda_peak_mib(fn)})
        floor = results["floor"]["median_s"]
        ops = op_counts(args.threads) if n == 80 and not cuda else {}
        for case, r in results.items():
            rows.append({
                "N": n, "case": case, "median_ms": 1e3 * r["median_s"],
                "iqr_ms": 1e3 * r["iqr_s"], "x_floor": r["median_s"] / floor,
                "x_ours_same": (r["median_s"] / results[f"ours/{case.split('/')[1]}"]["median_s"]
                                if "/" in case else None),
                "ops": ops.get(case), "ops_x_floor": (ops[case] / ops["floor"]
                                                      if case in ops else None),
            })
        print(f"N={n} done ({time.strftime('%H:%M:%S')})", flush=True)

    # peak memory, one fresh process per (case, N) — skipped in --quick mode except one case
    mem_sizes = [] if cuda else ([80] if args.quick else sizes)
    mem_cases = (("baseline", "ours/domain") if args.quick else
                 ("baseline", "floor", "ours/random", "ours/domain", "pml/random", "pml/domain"))
    for n in mem_sizes:
        for case in mem_cases:
            if case.startswith("pml/") and pml_bytes(case, n) >= PML_LIMIT_BYTES:
                continue
            code = SETUP.format(threads=args.threads, n=n, d=D) + CASES[case].format(
                temperature=TEMPERATURE)
            peak = peak_memory_mib(code)
            if case == "baseline":
                base = peak
            mem_rows.append({"N": n, "case": case, "peak_MiB": peak, "above_baseline_MiB":
                             peak - base})

    _common.print_table(rows, ["N", "case", "median_ms", "iqr_ms", "x_floor", "x_ours_same",
                               "ops", "ops_x_floor"],
                        title=f"forward + backward, float32, D = 128, {args.device} "
                              f"({args.threads} threads; x_ours_same = time / ours, same strategy;"
                              " ops = top-level aten ops of one forward + backward, CPU)")
    _common.print_table(mem_rows, ["N", "case", "peak_MiB", "above_baseline_MiB"],
                        title=("peak CUDA memory of one forward + backward above its inputs"
                               if cuda else
                               "peak resident memory of one forward + backward (fresh process)"))
    _common.write_json(args.json, {"meta": _common.metadata(args.device), "timing": rows,
                                   "memory": mem_rows})


if __name__ == "__main__":
    main()
