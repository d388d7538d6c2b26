"""Pre-processing seconds per volume (without N4, N4 default, N4 legacy) and cache slice reads/s.

Volumes are phantom volumes (contrastlocal.data.synthetic) of each dataset's typical size
(DATA.md §1, §3.1): ACDC 232x256x10 @ 1.5625 mm, prostate 320x320x20 @ 0.625 mm, MM-WHS
256x256x130 @ 1.2 mm (a 13-slice phantom repeated along z), Cityscapes 256x512 RGB. The N4
"legacy" setting (the original's: no mask, full resolution) is slow, so it runs once on a small
ACDC-like volume (128x128x8) next to the default setting on the same volume.

Cache reads: random single slices (image + label) from a cache of ACDC-like size, memory-mapped
vs loaded in RAM vs one uncompressed .npz per volume (the baseline), and random batches of 40.

    python benchmarks/bench_prepare.py [--quick] [--json out.json] [--skip-mmwhs-n4]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

from contrastlocal.data._records import Case
from contrastlocal.data.cache import CacheWriter, open_cache
from contrastlocal.data.preprocess import (
    PREPROCESS_PRESETS,
    Geometry,
    PreprocessConfig,
    preprocess_case,
)
from contrastlocal.data.synthetic import make_cardiac_phantom


def _phantom(shape, num_slices, spacing, seed=0, repeat_z=1):
    case = make_cardiac_phantom(seed, shape=shape, num_slices=num_slices, spacing=spacing)
    if repeat_z > 1:
        image = np.repeat(case.image, repeat_z, axis=2)
        label = np.repeat(case.label, repeat_z, axis=2)
        case = Case(case.case_id, image, label, spacing, case.affine)
    return case


def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_preprocess(quick: bool, repeat: int, skip_mmwhs_n4: bool) -> list[dict]:
    if quick:
        volumes = {
            "acdc": ((64, 72), 4, (1.5625, 1.5625, 10.0), 1),
            "prostate": ((80, 80), 4, (0.6, 0.6, 3.6), 1),
            "mmwhs": ((64, 64), 6, (1.2, 1.2, 1.2), 1),
        }
        legacy_shape, legacy_slices = (32, 32), 3
    else:
        volumes = {
            "acdc": ((232, 256), 10, (1.5625, 1.5625, 10.0), 1),
            "prostate": ((320, 320), 20, (0.6, 0.6, 3.6), 1),
            "mmwhs": ((256, 256), 13, (1.2, 1.2, 1.2), 10),
        }
        legacy_shape, legacy_slices = (128, 128), 8
    rows: list[dict] = []
    for name, (shape, z, spacing, rep_z) in volumes.items():
        case = _phantom(shape, z, spacing, repeat_z=rep_z)
        preset = PREPROCESS_PRESETS[name]
        base = None
        for n4 in ("none", "default"):
            if n4 == "default" and name == "mmwhs" and skip_mmwhs_n4:
                continue
            cfg = PreprocessConfig(
                n4=n4, target_spacing=preset.target_spacing, image_size=preset.image_size
            )
            reps = repeat if n4 == "none" else max(1, repeat // 5)
            if name == "mmwhs" and n4 == "default":
                reps = 1
            res = _common.time_fn(
                lambda c=case, k=cfg: preprocess_case(c, k),
                repeat=reps,
                warmup=0 if n4 != "none" else 1,
            )
            base = res["median_s"] if n4 == "none" else base
            rows.append(
                {
                    "volume": f"{name} {'x'.join(map(str, case.image.shape))}",
                    "n4": n4,
                    "s/volume": res["median_s"],
                    "iqr s": res["iqr_s"],
                    "runs": int(res["n"]),
                    "x no-N4": res["median_s"] / base if base else None,
                }
            )
    # cityscapes: RGB 256x512, no N4, no resampling
    rng = np.random.default_rng(0)
    h, w = (64, 128) if quick else (256, 512)
    rgb = Case(
        "img",
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        rng.integers(0, 13, (h, w), dtype=np.uint8),
        (1.0, 1.0, 1.0),
        is_rgb=True,
    )
    cfg = PreprocessConfig(percentiles=None, image_size=(h, w))
    res = _common.time_fn(lambda: preprocess_case(rgb, cfg), repeat=repeat * 3)
    rows.append(
        {
            "volume": f"cityscapes {h}x{w}x3",
            "n4": "none",
            "s/volume": res["median_s"],
            "iqr s": res["iqr_s"],
            "runs": int(res["n"]),
            "x no-N4": 1.0,
        }
    )
    # legacy N4 once, on a small volume, next to the default on the same volume
    small = _phantom(legacy_shape, legacy_slices, (1.5625, 1.5625, 10.0), seed=1)
    times = {}
    for n4 in ("none", "default", "legacy"):
        cfg = PreprocessConfig(n4=n4, target_spacing=(1.36719, 1.36719))
        times[n4] = _time_once(lambda k=cfg: preprocess_case(small, k))
        rows.append(
            {
                "volume": f"acdc-small {'x'.join(map(str, small.image.shape))}",
                "n4": n4,
                "s/volume": times[n4],
                "iqr s": None,
                "runs": 1,
                "x no-N4": times[n4] / times["none"],
            }
        )
    return rows


def _make_cache(root: Path, num_volumes: int, hw: int) -> Path:
    rng = np.random.default_rng(0)
    ids = [f"{i:03d}" for i in range(num_volumes)]
    cfg = PreprocessConfig(image_size=(hw, hw))
    writer = CacheWriter(root / "cache", ids, config=cfg, dataset="bench", split="all")
    npz_dir = root / "npz"
    npz_dir.mkdir()
    for cid in ids:
        z = int(rng.integers(6, 19))
        image = rng.random((z, hw, hw), dtype=np.float32)
        label = rng.integers(0, 4, (z, hw, hw), dtype=np.uint8)
        geom = Geometry((hw, hw, z), (1.0, 1.0, 1.0), (hw, hw), (0, 0), (hw, hw))
        writer.write_case(cid, image, label, geom)
        np.savez(npz_dir / f"{cid}.npz", image=image, label=label)
    return writer.finalize()


def bench_reads(quick: bool) -> list[dict]:
    num_volumes, hw, n_reads = (10, 64, 500) if quick else (100, 192, 3000)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = _make_cache(Path(tmp), num_volumes, hw)
        data_mm = open_cache(path)
        data_ram = open_cache(path, in_memory=True)
        rng = np.random.default_rng(1)
        idx = rng.integers(0, data_mm.num_slices, n_reads)
        vol_slices = [(int(data_mm.case_index[i]), int(data_mm.slice_index[i])) for i in idx]

        def single(data):
            def run():
                for i in idx:
                    np.array(data.images[i])
                    np.array(data.labels[i])

            return run

        def npz_run():
            for v, z in vol_slices:
                with np.load(Path(tmp) / "npz" / f"{data_mm.case_ids[v]}.npz") as f:
                    np.array(f["image"][z])
                    np.array(f["label"][z])

        batches = rng.integers(0, data_mm.num_slices, (max(1, n_reads // 40), 40))

        def batch(data):
            def run():
                for b in batches:
                    np.asarray(data.images[np.sort(b)])
                    np.asarray(data.labels[np.sort(b)])

            return run

        results = {
            "in-RAM array (baseline)": (_common.time_fn(single(data_ram), repeat=3), n_reads),
            "cache .npy memmap": (_common.time_fn(single(data_mm), repeat=3), n_reads),
            "per-volume .npz": (_common.time_fn(npz_run, repeat=1, warmup=1), n_reads),
            "cache memmap, batch 40": (_common.time_fn(batch(data_mm), repeat=3), len(batches)),
            "in-RAM, batch 40": (_common.time_fn(batch(data_ram), repeat=3), len(batches)),
        }
        base = n_reads / results["in-RAM array (baseline)"][0]["median_s"]
        for name, (res, n) in results.items():
            per_s = n / res["median_s"]
            is_batch = "batch" in name
            rows.append(
                {
                    "reader": name,
                    "reads/s": per_s,
                    "unit": "batches" if is_batch else "slices",
                    "x in-RAM": (per_s * 40 if is_batch else per_s) / base,
                }
            )
        rows.append(
            {
                "reader": f"(cache: {data_mm.num_slices} slices {hw}x{hw}, warm page cache)",
                "reads/s": None,
                "unit": None,
                "x in-RAM": None,
            }
        )
    return rows


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--skip-mmwhs-n4", action="store_true", help="skip N4 on the MM-WHS volume")
    args = p.parse_args()
    _common.set_threads(args.threads)
    repeat = args.repeat or (2 if args.quick else 5)
    prep = bench_preprocess(args.quick, repeat, args.skip_mmwhs_n4)
    _common.print_table(
        prep,
        ["volume", "n4", "s/volume", "iqr s", "runs", "x no-N4"],
        "Pre-processing per volume (N4 single-threaded; resampling + crop/pad to the preset)",
    )
    reads = bench_reads(args.quick)
    _common.print_table(reads, ["reader", "reads/s", "unit", "x in-RAM"], "Cache random reads")
    _common.write_json(args.json, {"meta": _common.metadata(), "preprocess": prep, "reads": reads})


if __name__ == "__main__":
    main()
