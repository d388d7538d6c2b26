"""The two losses and the partition sampler in your own PyTorch loop, with your own model.

Nothing from ``contrastlocal.models`` or ``contrastlocal.training``: a tiny encoder-decoder
written here, a plain loop, and three pieces of contrastlocal:

- :class:`contrastlocal.samplers.PartitionBatchSampler` draws, per batch, a few volumes and one
  slice from each of their S partitions (the batch the global loss G^D needs);
- :class:`contrastlocal.GlobalContrastiveLoss` (``strategy="domain"``, G^D) on embeddings of
  the encoder, with ``image_ids`` (the two views of a slice share one) and ``partition_ids``;
- :class:`contrastlocal.LocalContrastiveLoss` (``strategy="domain"``, L^D) on decoder feature
  maps of two pixel-aligned views.

The stage-1/stage-2 split of the paper is kept: first the encoder and its projection head with
the global loss, then the decoder (encoder frozen) with the local loss. The volumes are
synthetic phantoms (no download).

Usage::

    python examples/own_trainer.py              # 300 + 300 iterations (about a minute)
    python examples/own_trainer.py --smoke      # a few iterations
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from contrastlocal import GlobalContrastiveLoss, LocalContrastiveLoss
from contrastlocal.data.synthetic import make_synthetic_dataset
from contrastlocal.samplers import PartitionBatchSampler

S = 4  # partitions per volume


class TinyEncoder(nn.Module):
    """Three conv blocks, 64x64 -> 16x16, and a projection head for the global loss."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block2 = nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.block3 = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 32)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.block1(x)
        f2 = self.block2(f1)
        return [f1, f2, self.block3(f2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


class TinyDecoder(nn.Module):
    """One up-sampling block with a skip connection and a 1x1 projection (g_2)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(32 + 16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.g2 = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(feats[2], scale_factor=2.0, mode="nearest")
        return self.g2(self.up(torch.cat([x, feats[1]], dim=1)))


def intensity_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness and contrast per image (pixel-aligned: usable by the local loss)."""
    n = x.shape[0]
    delta = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.6
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x + delta - mean) * contrast + mean).clamp(0.0, 1.5)


def crop_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop of 3/4 of the side, resized back, then intensity (for the global loss)."""
    h, w = x.shape[-2:]
    ch, cw = 3 * h // 4, 3 * w // 4
    out = []
    for img in x:
        top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        crop = img[None, :, top : top + ch, left : left + cw]
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return intensity_view(torch.cat(out), gen)


def load_slices(num_volumes: int) -> tuple[torch.Tensor, list[int]]:
    """Synthetic volumes as one (N, 1, 64, 64) tensor of slices, volume-major."""
    slices, counts = [], []
    for case in make_synthetic_dataset(num_volumes, seed=0, shape=(64, 64)):
        vol = np.asarray(case.image, dtype=np.float32)  # (H, W, Z)
        lo, hi = np.percentile(vol, [1, 99])
        vol = ((vol - lo) / (hi - lo)).astype(np.float32)
        slices.append(np.moveaxis(vol, -1, 0))
        counts.append(vol.shape[-1])
    return torch.from_numpy(np.concatenate(slices))[:, None], counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=300, help="per stage")
    parser.add_argument("--smoke", action="store_true", help="3 iterations per stage")
    args = parser.parse_args()
    iterations = 3 if args.smoke else args.iterations
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    images, counts = load_slices(6)
    # per-slice metadata: volume index and partition floor(z * S / Z)
    volume_of = torch.cat([torch.full((z,), v) for v, z in enumerate(counts)])
    partition_of = torch.cat([torch.arange(z) * S // z for z in counts])
    sampler = PartitionBatchSampler(counts, num_partitions=S, volumes_per_batch=3, seed=0)

    def batches():  # endless: one epoch after another, reshuffled
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from sampler
            epoch += 1

    encoder, decoder = TinyEncoder(), TinyDecoder()
    global_loss = GlobalContrastiveLoss(strategy="domain", temperature=0.1)
    local_loss = LocalContrastiveLoss(
        strategy="domain",
        region_size=3,
        num_regions=13,
        in_channels=16,
        projection_dim=32,
        temperature=0.1,
    )

    # stage 1: encoder + head with G^D; two cropped views per slice
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    stream = batches()
    for it in range(iterations):
        idx = torch.as_tensor(next(stream))
        x = images[idx]
        views = torch.cat([crop_view(x, gen), crop_view(x, gen)])
        image_ids = torch.arange(len(idx)).repeat(2)  # the two views of a slice share an id
        loss = global_loss(encoder(views), image_ids, partition_of[idx].repeat(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0 or it == iterations - 1:
            print(f"stage 1 iteration {it + 1}: global loss {float(loss.detach()):.4f}")

    # stage 2: decoder + g_2 with L^D on top of the frozen encoder; intensity-only views
    encoder.requires_grad_(False)
    opt = torch.optim.Adam([*decoder.parameters(), *local_loss.parameters()], lr=1e-3)
    for it in range(iterations):
        idx = torch.as_tensor(next(stream))
        x = images[idx]
        views = torch.cat([intensity_view(x, gen), intensity_view(x, gen)])
        image_ids = torch.arange(len(idx)).repeat(2)
        feats = decoder(encoder.features(views))
        loss = local_loss(feats, image_ids, partition_of[idx].repeat(2), volume_of[idx].repeat(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0 or it == iterations - 1:
            print(f"stage 2 iteration {it + 1}: local loss {float(loss.detach()):.4f}")
    if not bool(torch.isfinite(loss.detach())):
        print("the loss is not finite")
        return 1
    print("done: encoder and decoder pre-trained; fine-tune them with your segmentation loss")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
