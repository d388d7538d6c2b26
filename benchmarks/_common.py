"""Shared benchmark utilities: timing with warm-up, median and IQR, metadata, JSON output.

Methodology (see README.md here): every case is warmed up, then timed ``repeat`` times; we report
the median and the inter-quartile range. Work on CUDA is synchronised inside the timed region.
Threads are pinned (``--threads``, default 2). ``--quick`` runs tiny sizes so CI keeps the scripts
working; real figures are produced by hand on a named machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (for CI)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--threads", type=int, default=2, help="torch/BLAS threads (default 2)")
    p.add_argument("--repeat", type=int, default=None, help="timed repetitions per case")
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    return p


def set_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], Any], *, repeat: int = 10, warmup: int = 2, device: str = "cpu",
    min_time: float = 0.0,
) -> dict[str, float]:
    """Median, IQR, min of the wall time of ``fn()`` in seconds (device-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeat:
            break
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "iqr_s": q[2] - q[0],
        "min_s": min(times),
        "n": float(len(times)),
    }


def peak_memory_subprocess(code: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process running ``code``.

    Reads the child's own ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` is inherited from
    the parent on Linux and would report the parent's high-water mark.
    """
    wrapper = (
        code
        + "\nimport re\n"
        + "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
        + " / 1024.0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    return float(out.stdout.strip().splitlines()[-1])


def cuda_peak_mib(fn: Callable[[], Any]) -> float:
    """Peak CUDA memory (MiB) that one call of ``fn()`` allocates above what was allocated before.

    Measured in-process with the caching allocator's statistics (the CUDA analogue of the fresh
    subprocess's resident-set peak used on the CPU).
    """
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def metadata(device: str = "cpu") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        meta["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, check=False,
        ).stdout.strip()
    except OSError:
        meta["commit"] = None
    try:
        import numpy

        meta["numpy"] = numpy.__version__
        import torch

        meta["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            meta["device"] = torch.cuda.get_device_name()
        else:
            meta["device"] = "cpu"
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        meta["loadavg"] = os.getloadavg()
    return meta


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> None:
    """Print rows (dicts) as an aligned Markdown table."""
    if title:
        print(f"\n{title}")
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    print(f"\nwrote {path}")


def count_aten_ops(fn: Callable[[], Any], leaves: Sequence[Any] = ()) -> int:
    """Top-level aten operators of one call of ``fn()`` (e.g. a forward + backward), on the CPU.

    Counted with :mod:`torch.profiler` after one warm-up call: every ``aten::`` event that is
    not nested in another ``aten::`` event (ops a composite op dispatches to are not counted
    again; the backward's ops are counted, they run under autograd-engine events). The
    gradients of `leaves` are reset to None before the counted call, as a training step's
    ``zero_grad(set_to_none=True)`` does, so gradient accumulation adds no op.
    """
    import torch

    fn()
    for leaf in leaves:
        leaf.grad = None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    count = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count
