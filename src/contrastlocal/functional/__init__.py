"""Framework-agnostic loss core, written once against the array API standard.

Every function takes arrays of any array-API library (NumPy, PyTorch with autograd, JAX with
``jax.grad``, CuPy, array-api-strict) and returns arrays of the same library and device. This
package imports only the standard library, NumPy and array-api-compat.
"""

from __future__ import annotations

from ._global import global_contrastive_loss, global_contrastive_loss_shard, global_pairing
from ._kernel import masked_contrastive_loss
from ._local import local_contrastive_loss, local_contrastive_loss_shard, original_local_pairing
from ._original import original_global_layout, original_global_loss, original_global_pairing
from ._regions import extract_regions, local_region_positions

__all__ = [
    "extract_regions",
    "global_contrastive_loss",
    "global_contrastive_loss_shard",
    "global_pairing",
    "local_contrastive_loss",
    "local_contrastive_loss_shard",
    "local_region_positions",
    "masked_contrastive_loss",
    "original_global_layout",
    "original_global_loss",
    "original_global_pairing",
    "original_local_pairing",
]
