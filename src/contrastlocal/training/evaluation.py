"""Slice-wise prediction and the paper's evaluation at native resolution.

:func:`evaluate` follows the authors' code without its label-shift quirk: every volume is
predicted slice by slice at the processed resolution, the softmax probabilities are mapped back
to the native grid (:func:`contrastlocal.data.preprocess.to_native`: undo the crop/pad, resize
linearly, argmax), and per-class 3D Dice (and HD95 in mm with the native spacing) are computed
over the whole volume, one explicit entry per class. See :mod:`contrastlocal.training.metrics`
for the empty-mask policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..data.volumes import Volume, load_volumes
from ._loop import autocast_context
from .metrics import (
    DICE_DEFINITIONS,
    ImageSetDice,
    dice_over_images,
    dice_per_class,
    hd95_per_class,
)

# Volume and load_volumes live in contrastlocal.data.volumes; re-exported here for compatibility
__all__ = [
    "DATASET_DICE_DEFINITIONS",
    "EvaluationResult",
    "Volume",
    "evaluate",
    "load_volumes",
    "predict_volume",
]

#: Datasets scored over a test set of 2D images, with the definition of their Dice
#: (:data:`~contrastlocal.training.DICE_DEFINITIONS`): Cityscapes per image, a class
#: absent from both the prediction and the truth of an image not counted. Datasets not listed are
#: scored per volume (3D Dice, mean over volumes), as the paper's medical tables.
DATASET_DICE_DEFINITIONS: dict[str, str] = {"cityscapes": "per_image"}


def predict_volume(
    model: nn.Module,
    image: npt.NDArray[Any],
    *,
    batch_size: int = 20,
    device: str | torch.device = "cpu",
    amp: str = "none",
    channels_last: bool = False,
) -> npt.NDArray[np.float32]:
    """Softmax probabilities of every slice of a volume (batch norm in inference mode).

    Parameters
    ----------
    model : torch.nn.Module
        Segmentation network mapping (B, C_in, H, W) to (B, K, H, W) logits.
    image : ndarray of shape (Z, H, W) or (Z, C_in, H, W)
        Processed slices.
    batch_size : int, default 20
        Slices per forward pass.
    device : str or torch.device, default "cpu"
        Where to run.
    amp : {"none", "auto", "bf16", "fp16"}, default "none"
        Autocast on CUDA.
    channels_last : bool, default False
        Feed channels-last batches.

    Returns
    -------
    ndarray of shape (Z, K, H, W), float32
        Class probabilities.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from contrastlocal.models import UNet
    >>> from contrastlocal.training import predict_volume
    >>> _ = torch.manual_seed(0)
    >>> net = UNet(out_channels=3, channels=(4, 8))
    >>> probabilities = predict_volume(net, np.zeros((5, 16, 16), np.float32))
    >>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5))
    ((5, 3, 16, 16), True)
    """
    dev = torch.device(device)
    x_all = np.asarray(image, dtype=np.float32)
    if x_all.ndim == 3:
        x_all = x_all[:, None]
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad(), autocast_context(dev, amp):
            for start in range(0, x_all.shape[0], batch_size):
                x = torch.from_numpy(x_all[start : start + batch_size]).to(dev)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                probs = torch.softmax(model(x).float(), dim=1)
                outs.append(probs.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs, axis=0).astype(np.float32, copy=False)


@dataclass
class EvaluationResult:
    """Per-volume, per-class metrics of :func:`evaluate`.

    Attributes
    ----------
    case_ids : list of str
        One per volume.
    dice : ndarray of shape (V, K)
        3D Dice of class k of volume v (background at k = 0).
    hd95 : ndarray of shape (V, K) or None
        HD95 in mm (background NaN); None when not computed.
    image_set : ImageSetDice or None
        The Dice over the test set as 2D images (``dice_definition`` of :func:`evaluate`,
        Cityscapes); when set, :attr:`mean_dice` and :meth:`summary` report it.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import EvaluationResult
    >>> result = EvaluationResult(["001", "002"], np.array([[1.0, 0.8, 0.6], [1.0, 0.6, 0.4]]))
    >>> result.volume_dice.tolist(), round(result.mean_dice, 3)
    ([0.7, 0.5], 0.6)
    """

    case_ids: list[str]
    dice: npt.NDArray[np.float64]
    hd95: npt.NDArray[np.float64] | None = None
    image_set: ImageSetDice | None = None

    @property
    def volume_dice(self) -> npt.NDArray[np.float64]:
        """Mean foreground Dice of each volume, shape (V,)."""
        return np.asarray(self.dice[:, 1:].mean(axis=1), dtype=np.float64)

    @property
    def mean_dice(self) -> float:
        """The paper's number: the test-set Dice of ``image_set``, else the volumes' mean."""
        if self.image_set is not None:
            return float(self.image_set.mean)
        return float(self.volume_dice.mean())

    def summary(self) -> dict[str, Any]:
        """Mean ± std over volumes, overall and per class.

        Returns
        -------
        dict
            ``dice_mean``, ``dice_std`` (over volumes of the per-volume foreground mean),
            ``dice_per_class_mean``/``_std`` (lists over classes 1…K-1) and the same for
            ``hd95`` when computed. Standard deviations are population (ddof = 0).
        """
        out: dict[str, Any] = {
            "num_volumes": len(self.case_ids),
            "dice_mean": self.mean_dice,
            "dice_std": float(self.volume_dice.std()),
            "dice_per_class_mean": self.dice[:, 1:].mean(axis=0).tolist(),
            "dice_per_class_std": self.dice[:, 1:].std(axis=0).tolist(),
        }
        if self.hd95 is not None:
            per_volume = self.hd95[:, 1:].mean(axis=1)
            out["hd95_mean"] = float(per_volume.mean())
            out["hd95_std"] = float(per_volume.std())
            out["hd95_per_class_mean"] = self.hd95[:, 1:].mean(axis=0).tolist()
            out["hd95_per_class_std"] = self.hd95[:, 1:].std(axis=0).tolist()
        if self.image_set is not None:  # the test-set Dice replaces the per-volume mean
            out.update(self.image_set.metadata())
            out["dice_std"] = float(np.nanstd(self.image_set.per_image)) if (
                self.image_set.per_image is not None
            ) else None
        return out

    def per_volume(self) -> list[dict[str, Any]]:
        """One record per volume: case id, per-class Dice (and HD95) lists, foreground mean.

        Returns
        -------
        list of dict
            JSON-friendly records.
        """
        rows = []
        for i, cid in enumerate(self.case_ids):
            row: dict[str, Any] = {
                "case_id": cid,
                "dice": self.dice[i].tolist(),
                "dice_foreground_mean": float(self.dice[i, 1:].mean()),
            }
            if self.hd95 is not None:
                row["hd95"] = self.hd95[i].tolist()
            rows.append(row)
        return rows


def _reference_and_prediction(
    volume: Volume, probs: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    if volume.geometry is not None and volume.native_label is not None:
        from ..data.preprocess import to_native

        return to_native(probs, volume.geometry), np.asarray(volume.native_label)
    if volume.label is None:
        msg = f"volume {volume.case_id!r} has no labels to evaluate against."
        raise ValueError(msg)
    return np.argmax(probs, axis=1).astype(np.uint8), np.asarray(volume.label)


def evaluate(
    model: nn.Module,
    volumes: Sequence[Volume],
    *,
    num_classes: int,
    batch_size: int = 20,
    device: str | torch.device = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    compute_hd95: bool = True,
    dice_definition: str | None = None,
) -> EvaluationResult:
    """Per-class 3D Dice (and HD95) of `model` on labelled volumes, at native resolution.

    Parameters
    ----------
    model : torch.nn.Module
        Segmentation network (logits with `num_classes` channels).
    volumes : sequence of Volume
        Labelled volumes; those with a geometry and native labels are scored on the native grid.
    num_classes : int
        K, classes including background.
    batch_size : int, default 20
        Slices per forward pass.
    device : str or torch.device, default "cpu"
        Where to run.
    amp : str, default "none"
        Autocast on CUDA.
    channels_last : bool, default False
        Channels-last batches.
    compute_hd95 : bool, default True
        Also compute HD95 (slower; validation during fine-tuning skips it).
    dice_definition : {"per_image", "pooled"}, optional
        Also score the test set as a set of 2D images (every slice of every volume one image)
        with :func:`~contrastlocal.training.dice_over_images` of this definition: the result's
        ``image_set``, ``mean_dice`` and ``summary()`` (which then records the definition) use
        it. :data:`~contrastlocal.training.evaluation.DATASET_DICE_DEFINITIONS` gives the
        dataset's (Cityscapes: ``"per_image"``).

    Returns
    -------
    EvaluationResult
        Per-volume per-class metrics with ``summary()`` (mean ± std).

    Raises
    ------
    ValueError
        If `volumes` is empty or a volume has no labels.

    References
    ----------
    Chaitanya et al., "Contrastive learning of global and local features for medical image
    segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from contrastlocal.models import UNet
    >>> from contrastlocal.training import Volume, evaluate
    >>> _ = torch.manual_seed(0)
    >>> vol = Volume(np.zeros((2, 32, 32), np.float32), np.zeros((2, 32, 32), np.uint8))
    >>> res = evaluate(UNet(out_channels=2, channels=(4, 8)), [vol], num_classes=2)
    >>> res.dice.shape
    (1, 2)
    """
    if len(volumes) == 0:
        msg = "`volumes` must hold at least one labelled volume; got none."
        raise ValueError(msg)
    if dice_definition is not None and dice_definition not in DICE_DEFINITIONS:
        msg = (f"`dice_definition` must be None or one of {sorted(DICE_DEFINITIONS)}; got "
               f"{dice_definition!r}.")
        raise ValueError(msg)
    dice_rows = []
    hd_rows = []
    images: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = []
    for volume in volumes:
        probs = predict_volume(
            model,
            volume.image,
            batch_size=batch_size,
            device=device,
            amp=amp,
            channels_last=channels_last,
        )
        pred, ref = _reference_and_prediction(volume, probs)
        dice_rows.append(dice_per_class(pred, ref, num_classes))
        if dice_definition is not None:
            flat = zip(
                pred.reshape(-1, *pred.shape[-2:]), ref.reshape(-1, *ref.shape[-2:]), strict=True
            )
            images.extend(flat)
        if compute_hd95:
            spacing = volume.spacing if volume.geometry is not None else (1.0,) * pred.ndim
            hd_rows.append(hd95_per_class(pred, ref, num_classes, spacing))
    return EvaluationResult(
        case_ids=[v.case_id for v in volumes],
        dice=np.stack(dice_rows),
        hd95=np.stack(hd_rows) if compute_hd95 else None,
        image_set=None if dice_definition is None else dice_over_images(
            [p for p, _ in images], [r for _, r in images], num_classes,
            definition=dice_definition,  # type: ignore[arg-type]
        ),
    )
