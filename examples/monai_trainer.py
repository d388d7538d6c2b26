"""Our losses on MONAI's BasicUNet: global and local contrastive pre-training via forward hooks.

MONAI's ``BasicUNet`` returns only its segmentation logits; contrastive pre-training needs the
encoder's bottleneck (for the global loss) and a decoder block's output (for the local loss).
Forward hooks collect them without changing the network:

- a hook on ``down_4`` (the bottleneck) feeds a small projection head g_1 and
  :class:`contrastlocal.GlobalContrastiveLoss` (G^D, with partition ids);
- a hook on ``upcat_3`` (a decoder block) feeds a 1x1 head g_2 and
  :class:`contrastlocal.LocalContrastiveLoss` (L^D).

Batches come from :class:`contrastlocal.samplers.PartitionBatchSampler` over synthetic phantom
volumes. Stage 1 trains the encoder with the global loss, stage 2 the decoder with the local
loss (encoder frozen); the pre-trained BasicUNet is then fine-tuned like any MONAI network.

MONAI is an optional dependency (``pip install "contrastlocal[examples]"``).

Usage::

    python examples/monai_trainer.py              # 200 + 200 iterations
    python examples/monai_trainer.py --smoke      # a few iterations
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn

from contrastlocal import GlobalContrastiveLoss, LocalContrastiveLoss
from contrastlocal.data.augment import two_views
from contrastlocal.data.slices import SliceDataset
from contrastlocal.data.synthetic import make_synthetic_dataset
from contrastlocal.samplers import PartitionBatchSampler

S = 4
SIZE = 64


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=200, help="per stage")
    parser.add_argument("--smoke", action="store_true", help="3 iterations per stage")
    args = parser.parse_args()
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        print(
            "monai_trainer.py: MONAI is not installed; install it with "
            "`pip install monai` (or the `examples` extra) to run this example.",
            file=sys.stderr,
        )
        return 3
    iterations = 3 if args.smoke else args.iterations
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    # data: synthetic volumes -> a slice dataset with volume and partition ids per slice
    volumes = []
    for case in make_synthetic_dataset(6, seed=0, shape=(SIZE, SIZE)):
        vol = np.moveaxis(np.asarray(case.image, dtype=np.float32), -1, 0)  # (Z, H, W)
        lo, hi = np.percentile(vol, [1, 99])
        volumes.append(((vol - lo) / (hi - lo)).astype(np.float32))
    dataset = SliceDataset.from_volumes(volumes, num_partitions=S)
    sampler = PartitionBatchSampler(
        dataset.slices_per_volume, num_partitions=S, volumes_per_batch=3, seed=0
    )

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            for idx in sampler:
                yield dataset.get_batch(np.asarray(idx))
            epoch += 1

    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=4, features=(8, 16, 32, 64, 64, 8))
    taps: dict[str, torch.Tensor] = {}
    for name in ("down_4", "upcat_3"):
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: taps.__setitem__(name, out)
        )
    bottleneck = 64 * (SIZE // 16) ** 2
    g1 = nn.Sequential(nn.Flatten(), nn.Linear(bottleneck, 128), nn.ReLU(), nn.Linear(128, 64))
    g2 = nn.Sequential(nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1))
    global_loss = GlobalContrastiveLoss(strategy="domain", temperature=0.1)
    local_loss = LocalContrastiveLoss(
        strategy="domain", in_channels=32, projection_dim=32, temperature=0.1
    )
    encoder = [net.conv_0, net.down_1, net.down_2, net.down_3, net.down_4]
    stream = batches()

    # stage 1: encoder + g_1 with G^D (crop + intensity views)
    params = [p for m in encoder for p in m.parameters()] + list(g1.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    for it in range(iterations):
        views = two_views(next(stream), gen, kind="global")
        net(views["images"])  # the hook stores the bottleneck
        loss = global_loss(g1(taps["down_4"]), views["image_ids"], views["partition_ids"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0 or it == iterations - 1:
            print(f"stage 1 iteration {it + 1}: global loss {float(loss.detach()):.4f}")

    # stage 2: decoder blocks up to upcat_3 + g_2 with L^D, encoder frozen
    for m in encoder:
        m.requires_grad_(False)
    params = [
        *net.upcat_4.parameters(),
        *net.upcat_3.parameters(),
        *g2.parameters(),
        *local_loss.parameters(),
    ]
    opt = torch.optim.Adam(params, lr=1e-3)
    for it in range(iterations):
        views = two_views(next(stream), gen, kind="local")
        net(views["images"])
        feats = g2(taps["upcat_3"])
        loss = local_loss(feats, views["image_ids"], views["partition_ids"], views["volume_ids"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0 or it == iterations - 1:
            print(f"stage 2 iteration {it + 1}: local loss {float(loss.detach()):.4f}")
    for m in encoder:
        m.requires_grad_(True)
    ok = bool(torch.isfinite(loss.detach()))
    print(
        "done: BasicUNet pre-trained; fine-tune it with e.g. monai.losses.DiceLoss"
        if ok
        else "the loss is not finite"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
