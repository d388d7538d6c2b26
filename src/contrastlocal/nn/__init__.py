"""PyTorch modules: thin :class:`torch.nn.Module` wrappers over :mod:`contrastlocal.functional`.

They hold and validate settings; ``forward`` is one call into the framework-agnostic core.
"""

from __future__ import annotations

from ._distributed import all_gather_with_grad
from ._global import GlobalContrastiveLoss
from ._local import LocalContrastiveLoss

__all__ = ["GlobalContrastiveLoss", "LocalContrastiveLoss", "all_gather_with_grad"]
