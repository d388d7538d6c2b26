"""Images/s (forward + backward) of the three stage networks.

Stage 1: encoder + g_1 (batch 80), stage 2: frozen encoder + 3 decoder blocks + g_2 (batch 80),
stage 3: the full segmentation UNet (batch 20); 192×192 single-channel images, 4 classes.

Baseline: each network in float32 with the default (contiguous) memory format. Variants:
channels-last (CPU and CUDA) and, on CUDA, bf16 autocast + channels-last. The table gives
images/s and the speed ratio against the baseline of the same network, measured in the same run.

    python benchmarks/bench_unet.py            # CPU, float32, 2 threads
    python benchmarks/bench_unet.py --quick    # seconds (CI)
    python benchmarks/bench_unet.py --device cuda
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import _common  # type: ignore[import-not-found]


def build(stage: str, image_size: int) -> Any:
    import torch

    from contrastlocal.models import (
        GlobalPretrainNetwork,
        LocalPretrainNetwork,
        UNet,
        freeze_encoder,
    )

    torch.manual_seed(0)
    backbone = UNet(in_channels=1, out_channels=4)
    if stage == "stage 1 (encoder + g_1)":
        return GlobalPretrainNetwork(backbone, image_size=image_size)
    if stage == "stage 2 (frozen enc + 3 dec + g_2)":
        net = LocalPretrainNetwork(backbone, num_decoder_blocks=3)
        freeze_encoder(net, batchnorm="batch_stats")
        return net
    return backbone


def make_step(
    net: Any, x: Any, *, channels_last: bool, bf16: bool, device: str
) -> Callable[[], None]:
    import torch

    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        ctx = (
            torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext()
        )
        with ctx:
            out = net(x)
        out.float().square().mean().backward()

    return step


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=192)
    args = p.parse_args()
    _common.set_threads(args.threads)
    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        msg = "--device cuda requested but CUDA is not available"
        raise SystemExit(msg)
    quick = args.quick
    size = 64 if quick else args.image_size
    repeat = args.repeat or (2 if quick else 3)
    warmup = 1
    batches = {
        "stage 1 (encoder + g_1)": 2 if quick else 80,
        "stage 2 (frozen enc + 3 dec + g_2)": 2 if quick else 80,
        "stage 3 (UNet, 4 classes)": 2 if quick else 20,
    }
    variants: list[tuple[str, bool, bool]] = [("float32", False, False)]
    variants.append(("float32 channels-last", True, False))
    if device.startswith("cuda"):
        variants.append(("bf16 autocast + channels-last", True, True))
        torch.backends.cudnn.benchmark = True

    rows: list[dict[str, Any]] = []
    for stage, batch in batches.items():
        baseline = None
        for name, channels_last, bf16 in variants:
            net = build(stage, size).to(device)
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(batch, 1, size, size, generator=gen).to(device)
            step = make_step(net, x, channels_last=channels_last, bf16=bf16, device=device)
            t = _common.time_fn(step, repeat=repeat, warmup=warmup, device=device)
            ips = batch / t["median_s"]
            print(f"  {stage}, {name}: {t['median_s'] * 1e3:.1f} ms/step", flush=True)
            if baseline is None:
                baseline = ips
            rows.append(
                {
                    "network": stage,
                    "batch": batch,
                    "variant": name,
                    "step_s (median)": t["median_s"],
                    "IQR_s": t["iqr_s"],
                    "images/s": ips,
                    "vs float32": ips / baseline,
                }
            )
            del net, x, step
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    meta = _common.metadata(device)
    title = (
        f"forward + backward, {size}×{size}, device={meta.get('device')}, "
        f"threads={args.threads}{' (quick)' if quick else ''}"
    )
    _common.print_table(
        rows,
        ["network", "batch", "variant", "step_s (median)", "IQR_s", "images/s", "vs float32"],
        title,
    )
    _common.write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
