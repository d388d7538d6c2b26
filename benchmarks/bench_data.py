"""Slices/s of the batched augmentation paths and of the whole stage-1 loader.

Each augmentation path of :mod:`contrastlocal.data.augment` (batch of 40 at 192×192 by default)
is timed against a per-sample NumPy/SciPy implementation of the same transform written from
DATA.md §4 (crop + ``ndimage.zoom``; ``ndimage.rotate``/``zoom``/flip then a 3×3 elastic field
upsampled with ``ndimage.zoom(order=3)`` and applied with ``map_coordinates`` to the image and
the one-hot labels, as the original did). The loader (PartitionBatchSampler + SliceDataset +
``two_views``) is compared with one stage-1 training step (GlobalPretrainNetwork + G^D loss +
Adam, 2 × 40 rows) on the same device: the loader keeps up when its time per batch is below the
step's.

Both sides produce a batch: the RGB baseline stacks its crops (the batched path copies the
windows into one tensor; slicing alone would be a view). "copy floor" is one copy of the path's
input tensors (read every input byte once, write as many): no out-of-place transform of those
inputs can cost less, so ``per-sample / copy floor`` bounds the speed-up any batched
implementation could reach on this machine. On glibc the process's malloc is set to keep freed
memory (no trimming, no per-allocation mmap) before timing: otherwise multi-MB temporaries and
outputs are re-faulted from the kernel on every call, at a cost that depends on the process's
allocation history (it inflated the per-sample mixup/RGB baselines up to 3x); ``--system-malloc``
keeps the default.

    python benchmarks/bench_data.py            # CPU, 2 threads, batch 40 at 192x192
    python benchmarks/bench_data.py --quick    # seconds (CI)
    python benchmarks/bench_data.py --json results/data.json
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _common  # type: ignore[import-not-found]
import numpy as np

# ----------------------------------------------------------------------------- per-sample baselines


def np_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    d = rng.uniform(-0.3, 0.3)
    c = rng.uniform(0.7, 1.3)
    s = x + d
    mu = s.mean()
    return np.clip((s - mu) * c + mu, 0.0, 1.5)


def np_global_view(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    h, w = x.shape
    ch, cw = round(h * 100 / 192), round(w * 100 / 192)
    y0 = rng.integers(round(h * 10 / 192), round(h * 69 / 192) + 1)
    x0 = rng.integers(round(w * 10 / 192), round(w * 69 / 192) + 1)
    crop = x[y0 : y0 + ch, x0 : x0 + cw]
    out = ndimage.zoom(crop, (h / ch, w / cw), order=1, mode="nearest", grid_mode=True)
    return np_intensity(out, rng)


def np_geometric(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    h, w = x.shape
    option = rng.integers(0, 5)
    if option == 0:
        a = rng.uniform(-15, 15)
        x = ndimage.rotate(x, a, reshape=False, order=1)
        y = ndimage.rotate(y, a, reshape=False, order=0)
    elif option == 1:
        s = round(rng.uniform(0.95, 1.05), 2)
        xz, yz = ndimage.zoom(x, s, order=1), ndimage.zoom(y, s, order=0)
        x, y = np.zeros_like(x), np.zeros_like(y)
        zh, zw = xz.shape
        oy, ox = (zh - h) // 2, (zw - w) // 2
        sy, sx = (
            slice(max(oy, 0), max(oy, 0) + min(h, zh)),
            slice(max(ox, 0), max(ox, 0) + min(w, zw)),
        )
        dy, dx = (
            slice(max(-oy, 0), max(-oy, 0) + min(h, zh)),
            slice(max(-ox, 0), max(-ox, 0) + min(w, zw)),
        )
        x[dy, dx], y[dy, dx] = xz[sy, sx], yz[sy, sx]
    elif option == 2:
        if rng.random() < 0.5:
            x, y = x[:, ::-1].copy(), y[:, ::-1].copy()
    elif option == 3:
        a = 45.0 * rng.integers(0, 8)
        x = ndimage.rotate(x, a, reshape=False, order=1)
        y = ndimage.rotate(y, a, reshape=False, order=0)
    # elastic: 3x3 N(0, 5^2) per axis, bicubic upsampling, bilinear warp of image and one-hot
    coarse = rng.normal(0.0, 5.0, size=(2, 3, 3))
    field = np.stack(
        [ndimage.zoom(c, (h / 3, w / 3), order=3, mode="reflect", grid_mode=True) for c in coarse]
    )
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rr + field[0], cc + field[1]])
    xw = ndimage.map_coordinates(x, coords, order=1, mode="constant")
    onehot = np.eye(num_classes, dtype=np.float32)[y].transpose(2, 0, 1)
    yw = np.stack([ndimage.map_coordinates(o, coords, order=1, mode="constant") for o in onehot])
    return xw, yw


def np_mixup(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    perm = rng.permutation(len(x))
    xs, ys = [], []
    for i in range(len(x)):
        lam = rng.beta(0.2, 0.2)
        xs.append(lam * x[i] + (1 - lam) * x[perm[i]])
        ys.append(lam * y[i] + (1 - lam) * y[perm[i]])
    return np.stack(xs), np.stack(ys)


def np_rgb(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, size: int) -> tuple:
    b, c, s = rng.uniform(0.8, 1.2, 3)
    out = x * b
    grey = np.tensordot(np.array([0.299, 0.587, 0.114]), out, axes=1)
    out = c * out + (1 - c) * grey.mean()
    grey = np.tensordot(np.array([0.299, 0.587, 0.114]), out, axes=1)
    out = np.clip(s * out + (1 - s) * grey, 0, 1)
    oy = rng.integers(0, x.shape[1] - size + 1)
    ox = rng.integers(0, x.shape[2] - size + 1)
    return out[:, oy : oy + size, ox : ox + size], y[oy : oy + size, ox : ox + size]


def collate(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-sample (image, label) pairs into one batch, as a data loader's collate does."""
    return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])


def steady_malloc() -> bool:
    """Make glibc malloc keep freed memory (no trim, no mmap per allocation); False elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(
            libc.mallopt(m_mmap_threshold, 1 << 30)
        )
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="slices per batch (default 40)")
    p.add_argument("--size", type=int, default=None, help="image size (default 192)")
    p.add_argument(
        "--system-malloc", action="store_true", help="keep the default malloc (see the docstring)"
    )
    args = p.parse_args()
    malloc_tuned = False if args.system_malloc else steady_malloc()
    _common.set_threads(args.threads)
    import torch

    from contrastlocal.data import augment as A  # noqa: N812
    from contrastlocal.data.slices import SliceDataset, collate_slices

    quick = args.quick
    n = args.batch or (8 if quick else 40)
    size = args.size or (64 if quick else 192)
    repeat = args.repeat or (2 if quick else 7)
    device = args.device
    num_classes = 4
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    x_np = rng.random((n, size, size), dtype=np.float32)
    y_np = rng.integers(0, num_classes, (n, size, size)).astype(np.int64)
    x = torch.from_numpy(x_np)[:, None].to(device)
    y = torch.from_numpy(y_np).to(device)
    y1h = torch.nn.functional.one_hot(y, num_classes).permute(0, 3, 1, 2).float()
    rgb_np = rng.random((n, 3, size, size), dtype=np.float32)
    rgb = torch.from_numpy(rgb_np).to(device)
    crop = size * 3 // 4

    y1h_np = np.eye(num_classes, dtype=np.float32)[y_np]

    def copy(*tensors: Any) -> Callable[[], Any]:
        return lambda: [t.clone() for t in tensors]

    cases: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = [
        (
            "global view (crop+resize+intensity)",
            lambda: A.global_views(x, g),
            lambda: [np_global_view(x_np[i], rng) for i in range(n)],
            copy(x),
        ),
        (
            "local view (intensity only)",
            lambda: A.intensity_views(x, g),
            lambda: [np_intensity(x_np[i], rng) for i in range(n)],
            copy(x),
        ),
        (
            "geometric, labels nearest",
            lambda: A.geometric_augment(x, y, g),
            lambda: [np_geometric(x_np[i], y_np[i], rng, num_classes) for i in range(n)],
            copy(x, y),
        ),
        (
            "geometric, labels one-hot (as original)",
            lambda: A.geometric_augment(x, y, g, label_mode="onehot", num_classes=num_classes),
            lambda: [np_geometric(x_np[i], y_np[i], rng, num_classes) for i in range(n)],
            copy(x, y),
        ),
        (
            "mixup",
            lambda: A.mixup(x, y1h, g),
            lambda: np_mixup(x_np, y1h_np, rng),
            copy(x, y1h),
        ),
        (
            "RGB colour jitter + random crop",
            lambda: A.random_crop(A.color_jitter(rgb, g), y, g, size=(crop, crop)),
            lambda: collate([np_rgb(rgb_np[i], y_np[i], rng, crop) for i in range(n)]),
            copy(rgb, y),
        ),
    ]
    rows: list[dict[str, Any]] = []
    for name, fast, slow, floor in cases:
        tf = _common.time_fn(fast, repeat=repeat, device=device)
        ts = _common.time_fn(slow, repeat=max(2, repeat // 2), warmup=1)
        tc = _common.time_fn(floor, repeat=repeat, device=device)
        rows.append(
            {
                "path": name,
                "batched ms": 1e3 * tf["median_s"],
                "batched IQR ms": 1e3 * tf["iqr_s"],
                "copy floor ms": 1e3 * tc["median_s"],
                "per-sample ms": 1e3 * ts["median_s"],
                "batched slices/s": n / tf["median_s"],
                "per-sample slices/s": n / ts["median_s"],
                "speed-up": ts["median_s"] / tf["median_s"],
                "per-sample / copy floor": ts["median_s"] / tc["median_s"],
            }
        )
    _common.print_table(
        rows,
        [
            "path",
            "batched ms",
            "batched IQR ms",
            "copy floor ms",
            "per-sample ms",
            "batched slices/s",
            "speed-up",
            "per-sample / copy floor",
        ],
        title=f"Augmentation, batch {n} x {size}x{size}, {device}, {args.threads} threads, "
        f"malloc {'steady' if malloc_tuned else 'system default'} "
        "(speed-up = per-sample NumPy/SciPy time / batched torch time; copy floor = one copy "
        "of the inputs)",
    )

    # ------------------------------------------------------------------ loader vs stage-1 step
    num_volumes = 12 if quick else 40
    counts = rng.integers(6, 16, num_volumes).tolist()
    images = rng.random((sum(counts), size, size), dtype=np.float32)
    ds = SliceDataset(images, slices_per_volume=counts, num_partitions=4)
    vpb = max(1, n // 4)
    sampler = ds.batch_sampler(volumes_per_batch=min(vpb, num_volumes))
    it = {"epoch": 0, "iter": iter(sampler)}

    def next_indices() -> list[int]:
        try:
            return next(it["iter"])  # type: ignore[call-overload, no-any-return]
        except StopIteration:
            it["epoch"] += 1
            sampler.set_epoch(it["epoch"])
            it["iter"] = iter(sampler)
            return next(it["iter"])  # type: ignore[call-overload, no-any-return]

    def loader_fast() -> Any:
        batch = ds.get_batch(next_indices())
        batch = {k: v.to(device) for k, v in batch.items()}
        return A.two_views(batch, g, kind="global")

    def loader_items() -> Any:
        batch = collate_slices([ds[i] for i in next_indices()])
        batch = {k: v.to(device) for k, v in batch.items()}
        return A.two_views(batch, g, kind="global")

    rows_b = sampler.batch_size
    lrows: list[dict[str, Any]] = []
    for name, fn in [
        ("loader: sampler + get_batch + two_views", loader_fast),
        ("loader: sampler + items + collate + two_views", loader_items),
        ("sampler + get_batch only", lambda: ds.get_batch(next_indices())),
    ]:
        t = _common.time_fn(fn, repeat=repeat, device=device)
        lrows.append(
            {
                "what": name,
                "ms/batch": 1e3 * t["median_s"],
                "IQR ms": 1e3 * t["iqr_s"],
                "slices/s": rows_b / t["median_s"],
            }
        )
    step_ms = None
    try:
        from contrastlocal.models import GlobalPretrainNetwork, UNet
        from contrastlocal.nn import GlobalContrastiveLoss

        torch.manual_seed(0)
        net = GlobalPretrainNetwork(UNet(), image_size=size).to(device)
        loss_fn = GlobalContrastiveLoss("domain")
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        views = loader_fast()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(views["images"]), views["image_ids"], views["partition_ids"])
            loss.backward()
            opt.step()

        t = _common.time_fn(step, repeat=max(2, repeat // 2), warmup=1, device=device)
        step_ms = 1e3 * t["median_s"]
        lrows.append(
            {
                "what": f"stage-1 training step ({2 * rows_b} rows)",
                "ms/batch": step_ms,
                "IQR ms": 1e3 * t["iqr_s"],
                "slices/s": rows_b / t["median_s"],
            }
        )
    except ImportError as exc:  # pragma: no cover - depends on other packages
        print(f"stage-1 step not measured: {exc}")
    if step_ms is not None:
        for r in lrows[:-1]:
            r["step / loader"] = step_ms / r["ms/batch"]
    _common.print_table(
        lrows,
        ["what", "ms/batch", "IQR ms", "slices/s", "step / loader"],
        title=f"Loader, {rows_b} slices per batch ({rows_b * 2} rows), {size}x{size}, {device} "
        "(step / loader > 1: the loader is faster than a stage-1 step consumes batches)",
    )
    _common.write_json(
        args.json,
        {
            "metadata": {**_common.metadata(device), "malloc_steady": malloc_tuned},
            "batch": n,
            "size": size,
            "augmentation": rows,
            "loader": lrows,
        },
    )


if __name__ == "__main__":
    main()
