"""
The global loss on NumPy and PyTorch
====================================

:func:`contrastlocal.functional.global_contrastive_loss` is written once against the array API
standard: the same call works on NumPy arrays, PyTorch tensors (with autograd), JAX arrays and
CuPy arrays, and returns an array of the library it was given. This example computes the three
global strategies of the paper on one small batch with NumPy and with PyTorch, checks that they
agree, and takes a gradient with PyTorch.
"""

# %%
# A batch of two views of 12 slices
# ---------------------------------
# Three volumes × four partitions, one slice per partition, two views each: N = 24 rows. The
# metadata says which view shows which slice (``image_ids``) and which partition the slice comes
# from (``partition_ids``); the loss never looks at the order of the rows.
import numpy as np

from contrastlocal.functional import global_contrastive_loss, global_pairing

num_volumes, num_partitions, num_views, dim = 3, 4, 2, 16
image = np.tile(np.arange(num_volumes * num_partitions), num_views)  # (24,)
partition = image % num_partitions  # slice k of volume k // 4 is in partition k % 4
rng = np.random.default_rng(0)
# embeddings with some structure: each partition has its own mean direction
centres = rng.normal(size=(num_partitions, dim))
z = centres[partition] + 0.8 * rng.normal(size=(len(image), dim))
print("embeddings", z.shape, "image ids", image.tolist())

# %%
# The three strategies with NumPy
# -------------------------------
# ``"random"`` is the paper's G^R (SimCLR's NT-Xent with two views), ``"domain_negatives"`` is
# G^{D−} and ``"domain"`` (the default) is G^D.
strategies = ["random", "domain_negatives", "domain"]
numpy_losses = {}
for strategy in strategies:
    loss = global_contrastive_loss(z, image_ids=image, partition_ids=partition, strategy=strategy)
    numpy_losses[strategy] = float(loss)
    positive, negative = global_pairing(image, partition, strategy=strategy)
    print(
        f"{strategy:>16}: loss {float(loss):.4f}  ({int(positive.sum())} terms, "
        f"{int(negative.sum(axis=1).mean())} negatives per anchor)"
    )

# %%
# The same call with PyTorch, with a gradient
# -------------------------------------------
# Tensors in, a tensor out: autograd flows through the loss. The values agree with NumPy to
# float64 rounding.
import torch

z_torch = torch.tensor(z, requires_grad=True)
image_t, partition_t = torch.from_numpy(image), torch.from_numpy(partition)
for strategy in strategies:
    loss_t = global_contrastive_loss(
        z_torch, image_ids=image_t, partition_ids=partition_t, strategy=strategy
    )
    assert abs(loss_t.item() - numpy_losses[strategy]) < 1e-10
loss_t.backward()
print(f"torch G^D loss {loss_t.item():.4f}; gradient norm {z_torch.grad.norm().item():.4f}")

# %%
# The module form holds the settings, as a PyTorch loss usually does:
from contrastlocal.nn import GlobalContrastiveLoss

criterion = GlobalContrastiveLoss(strategy="domain", temperature=0.1)
print(criterion, round(criterion(z_torch, image_t, partition_t).item(), 4))

# %%
# How the temperature shapes the loss
# -----------------------------------
# A smaller τ sharpens the softmax over the denominator. Here: the three strategies over τ, with
# NumPy (float64), on the same batch.
import matplotlib.pyplot as plt

temperatures = np.geomspace(0.03, 1.0, 15)
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for strategy, label in zip(strategies, ["$G^R$", "$G^{D-}$", "$G^D$"], strict=True):
    values = [
        float(
            global_contrastive_loss(
                z, image_ids=image, partition_ids=partition, strategy=strategy, temperature=t
            )
        )
        for t in temperatures
    ]
    ax.plot(temperatures, values, marker="o", markersize=3, label=f"{label} ({strategy})")
ax.set_xscale("log")
ax.set_xlabel("temperature τ")
ax.set_ylabel("loss (mean over terms)")
ax.legend(frameon=False)
fig.tight_layout()
plt.show()
