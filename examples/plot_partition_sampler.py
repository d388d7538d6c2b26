"""
A batch of the partition sampler
================================

:class:`~contrastlocal.samplers.PartitionBatchSampler` draws the batches of the global loss:
``volumes_per_batch`` distinct volumes, and from each volume one slice in each of its S
partitions. This example builds a small synthetic dataset of cardiac-like phantom volumes
(:func:`contrastlocal.data.synthetic.make_synthetic_dataset`), draws one batch, and shows it:
one row per volume, one column per partition.
"""

# %%
# Volumes and their partitions
# ----------------------------
# Five phantom volumes with 8 to 14 slices each. Slice ``z`` of a volume with ``Z`` slices is
# in partition ``floor(z * S / Z)``; :func:`~contrastlocal.samplers.slice_metadata` gives the
# volume, slice and partition of every slice of the concatenated dataset.
import matplotlib.pyplot as plt
import numpy as np

from contrastlocal.data.synthetic import make_synthetic_dataset
from contrastlocal.samplers import PartitionBatchSampler, slice_metadata

cases = make_synthetic_dataset(5, seed=0, shape=(64, 64))
slices_per_volume = [case.image.shape[2] for case in cases]
num_partitions = 4
meta = slice_metadata(slices_per_volume, num_partitions=num_partitions)
print("slices per volume:", slices_per_volume)
for v in range(len(slices_per_volume)):
    ids = meta["partition_id"][meta["volume_index"] == v]
    print(f"volume {v}: partitions of its slices {ids.tolist()}")

# %%
# One batch
# ---------
# Three volumes × four partitions = 12 slices. The indices point into the concatenation of all
# volumes' slices; the sampler is seeded, and ``set_epoch`` reshuffles.
sampler = PartitionBatchSampler(
    slices_per_volume, num_partitions=num_partitions, volumes_per_batch=3, seed=0
)
batch = next(iter(sampler))
print("batches per epoch:", len(sampler))
print("indices:", batch)
print("volume:   ", meta["volume_index"][batch].tolist())
print("partition:", meta["partition_id"][batch].tolist())
print("slice:    ", meta["slice_index"][batch].tolist())

# %%
# The batch as pictures
# ---------------------
# Each row is a volume, each column a partition, from the base of the heart (partition 0) to
# the apex (partition 3): the slices in one column show corresponding anatomy, which is what the
# G^D loss treats as positives.
images = np.concatenate([case.image for case in cases], axis=2)  # (H, W, total slices)
volumes_in_batch = meta["volume_index"][batch].reshape(-1, num_partitions)[:, 0]
fig, axes = plt.subplots(len(volumes_in_batch), num_partitions, figsize=(6.4, 5.0))
for i, index in enumerate(batch):
    ax = axes[i // num_partitions, i % num_partitions]
    ax.imshow(images[:, :, index].T, cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])
    z, v = meta["slice_index"][index], meta["volume_index"][index]
    ax.set_title(f"slice {z} of {slices_per_volume[v]}", fontsize=8)
    if i % num_partitions == 0:
        ax.set_ylabel(f"volume {v}")
    if i < num_partitions:
        ax.text(0.5, 1.35, f"partition {i}", transform=ax.transAxes, ha="center")
fig.tight_layout()
plt.show()

# %%
# Every epoch, every replica
# --------------------------
# Under data-parallel training each process passes ``num_replicas`` and ``rank``: all processes
# compute the same shuffled order from ``(seed, epoch)`` and keep disjoint shards of it.
shards = [
    PartitionBatchSampler(
        slices_per_volume,
        num_partitions=num_partitions,
        volumes_per_batch=1,
        seed=0,
        num_replicas=2,
        rank=rank,
    )
    for rank in range(2)
]
for shard in shards:
    shard.set_epoch(3)
for rank, shard in enumerate(shards):
    volumes = [sorted(set(meta["volume_index"][b].tolist())) for b in shard]
    print(f"rank {rank}, epoch 3: volumes per batch {volumes}")
