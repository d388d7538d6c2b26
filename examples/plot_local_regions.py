"""
Local regions on a phantom slice
================================

The local loss compares small regions of decoder feature maps. This example draws the paper's
default region pattern (:func:`contrastlocal.functional.local_region_positions`) on a synthetic
cardiac slice, at the resolution of the feature map the loss sees, and computes the loss on two
intensity-augmented views with :func:`contrastlocal.functional.local_contrastive_loss`.
"""

# %%
# A phantom slice and its feature-map grid
# ----------------------------------------
# With 192×192 inputs and l = 3 decoder blocks the feature maps are 48×48 (a quarter of the
# input size). Here a 96×96 phantom slice stands in, so the map is 24×24: each map cell covers
# 4×4 pixels.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from contrastlocal.data.synthetic import make_cardiac_phantom
from contrastlocal.functional import local_contrastive_loss, local_region_positions

case = make_cardiac_phantom(3, shape=(96, 96), num_slices=10)
image = case.image[:, :, 4]
image = (image - image.min()) / (image.max() - image.min())
map_size, scale = 24, 4
positions, negatives = local_region_positions(map_size, region_size=3)
print("positions (x, y) on the 24×24 map:", positions.tolist())

# %%
# The 13 regions, and the negatives of two of them
# ------------------------------------------------
# Each region is a 3×3 block of the map (12×12 pixels here) whose top-left corner is the
# position. For every region the loss uses 5 nearby *negative* regions from a fixed table:
# the anchor must be closer to the same region of the other view than to these.
fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
for ax, highlight in zip(axes, [0, 4], strict=True):
    ax.imshow(image, cmap="gray")
    for r, (x, y) in enumerate(positions):
        colour = "tab:orange" if r == highlight else "white"
        ax.add_patch(
            Rectangle(
                (y * scale - 0.5, x * scale - 0.5),
                3 * scale,
                3 * scale,
                fill=False,
                edgecolor=colour,
                linewidth=1.5 if r == highlight else 0.8,
            )
        )
    for x, y in negatives[highlight]:
        ax.add_patch(
            Rectangle(
                (y * scale - 0.5, x * scale - 0.5),
                3 * scale,
                3 * scale,
                fill=True,
                alpha=0.35,
                facecolor="tab:blue",
                edgecolor="tab:blue",
            )
        )
    ax.set_title(f"region {highlight} (orange) and its 5 negatives (blue)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()

# %%
# The loss on two views
# ---------------------
# Stand-in "feature maps": the slice, average-pooled to 24×24, with a few channels of random
# filters, for two intensity-augmented views (brightness and contrast changes keep the views
# pixel-aligned, which the local loss needs). The loss is lower when corresponding regions of
# the two views are closer to each other than to their negatives: compare with the same views
# misaligned by a shift of the second one.
rng = np.random.default_rng(0)


def feature_maps(img, weights):
    pooled = img.reshape(map_size, scale, map_size, scale).mean(axis=(1, 3))
    # a 3-channel "feature": the pooled image and two nonlinear responses
    channels = [pooled, np.tanh(weights[0] * pooled), np.cos(weights[1] * pooled)]
    return np.stack(channels)  # (C, H, W)


weights = rng.normal(size=2) * 3
views = []
for _ in range(2):
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
    views.append(feature_maps(np.clip(contrast * image + brightness, 0, None), weights))
features = np.stack(views)  # (N=2, C=3, 24, 24): view 1 and view 2 of one slice
image_ids = np.array([0, 0])
loss = local_contrastive_loss(features, image_ids=image_ids, region_size=3)
shifted = np.stack([features[0], np.roll(features[1], shift=(5, 5), axis=(1, 2))])
loss_shifted = local_contrastive_loss(shifted, image_ids=image_ids, region_size=3)
print(f"L^R on two aligned views of one slice: {float(loss):.4f}")
print(f"L^R with the second view shifted by 5 map cells: {float(loss_shifted):.4f}")

# %%
# Per-region terms (``reduction="pairwise"`` gives the (N, N, R) array of terms, zero where two rows
# are not a pair): which regions are easy and which are hard to match.
terms = local_contrastive_loss(features, image_ids=image_ids, region_size=3, reduction="pairwise")
per_region = np.asarray(terms)[0, 1]
fig, ax = plt.subplots(figsize=(5.5, 2.8))
ax.bar(range(len(per_region)), per_region, color="tab:orange")
ax.set_xlabel("region r")
ax.set_ylabel("term ℓ(view 1, view 2, r)")
ax.set_xticks(range(len(per_region)))
fig.tight_layout()
plt.show()
