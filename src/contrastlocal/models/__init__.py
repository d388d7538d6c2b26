"""The paper's UNet, its projection heads, the stage networks and the hand-over between stages.

Requires torch. The UNet exposes its encoder and decoder blocks separately
(:meth:`UNet.encode`, :meth:`UNet.decode`), so the global loss can read the encoder output and the
local loss the output of the first l decoder blocks.
"""

from __future__ import annotations

from ._grouped import GroupedUNet
from ._heads import GlobalProjectionHead, LocalProjectionHead
from ._stages import (
    GlobalPretrainNetwork,
    LocalPretrainNetwork,
    decoder_block_keys,
    encoder_keys,
    freeze_encoder,
    transfer_decoder,
    transfer_encoder,
    unfreeze_encoder,
)
from ._unet import UNet

__all__ = [
    "GlobalPretrainNetwork",
    "GlobalProjectionHead",
    "GroupedUNet",
    "LocalPretrainNetwork",
    "LocalProjectionHead",
    "UNet",
    "decoder_block_keys",
    "encoder_keys",
    "freeze_encoder",
    "transfer_decoder",
    "transfer_encoder",
    "unfreeze_encoder",
]
