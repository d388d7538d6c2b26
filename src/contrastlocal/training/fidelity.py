"""Fidelity to the paper's text or to the authors' code: one setting, switchable item by item.

``fidelity = "paper"`` (the default) keeps the clean definitions the package follows;
``fidelity = "authors"`` reproduces every behaviour of the authors' code that changes training
(docs/differences.md lists them, with the key of each item). :class:`FidelityConfig` holds one
field per item; :meth:`FidelityConfig.preset` builds either preset with item-by-item overrides and
:meth:`FidelityConfig.from_dict` / :meth:`FidelityConfig.to_dict` read and write it as plain data
(a config file section or ``--set fidelity.ITEM=VALUE`` overrides).

Where the paper's text and the authors' code disagree on a setting (the fine-tuning batch: 40 in
the supplement, 20 in the code), ``"paper"`` follows the text and ``"authors"`` the code;
:data:`TEXT_AND_CODE` says which value comes from where.

The building blocks that implement the items live next to the code they change: the authors'
batches in the private ``_authors_batches`` module (re-exported here), the augmentations
in :mod:`contrastlocal.data.augment`, the losses in :mod:`contrastlocal.functional`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._authors_batches import (
    authors_batch_indices,
    authors_batch_views,
    authors_global_batch,
    authors_local_batch,
    authors_local_loss_arguments,
    authors_partition_slices,
)

__all__ = [
    "FIDELITIES",
    "FIDELITY_ITEMS",
    "TEXT_AND_CODE",
    "FidelityConfig",
    "authors_batch_indices",
    "authors_batch_views",
    "authors_global_batch",
    "authors_local_batch",
    "authors_local_loss_arguments",
    "authors_partition_slices",
]

Fidelity = Literal["paper", "authors"]

#: The two presets.
FIDELITIES: tuple[str, ...] = ("paper", "authors")

#: Settings on which the paper's text and the authors' code disagree: item -> ((paper value,
#: where the text says it), (authors' value, where the code has it)).
TEXT_AND_CODE: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {
    "finetune_batch": (
        (40, "supplement §1.2: batch size 40"),
        (20, "fine-tuning scripts: mtask_bs = 20 slices"),
    ),
    "global_batch": (
        (40, "supplement: pre-training batch size 40 (Table 2: 40 / 250 / 450)"),
        (12, "README: --bt_size=12 (G^D: 48 rows, 32 of them real)"),
    ),
    "global_hidden_features": (
        (3200, "supplement: g_1 = dense 3200 -> dense 128"),
        (1024, "models.py: dense 1024 -> dense 128 (3200 is the flattened 160 x 160 input)"),
    ),
}

#: One line per item: what ``True`` (the authors' behaviour) does. Integer items: see
#: :data:`TEXT_AND_CODE`.
FIDELITY_ITEMS: dict[str, str] = {
    "blank_rows": "G^D batch keeps the all-zero rows the authors' stitching loop leaves "
    "(needs global_loss)",
    "global_loss": "stage 1 uses the authors' batch layout (original + augmented view of each "
    "slice, two sets of volumes) and their loss (original_global_loss: ring positives, "
    "index-arithmetic denominators, their normalisers)",
    "random_slices": "G^R batches draw B slices uniformly with replacement from all volumes "
    "(two interleaved views)",
    "local_loss": "stage 2 uses the authors' local pairing: L^D with view-1 anchors, 2 cyclic "
    "partner volumes, J = 4 and the 24·R normaliser; L^R with J = 5, mean over anchors "
    "(needs local_batch)",
    "local_batch": "stage-2 batches as the authors build them: L^R on 10 random slices "
    "(20 interleaved rows), L^D on 3 volumes x 4 partitions (24 concatenated rows)",
    "shared_intensity": "one random number per call gives the brightness δ and the contrast "
    "c = 1 + δ of every image of the call",
    "fixed_crop": "global views crop 100 x 100 pixels with an integer corner in [10, 69], "
    "whatever the image size (MM-WHS 160 x 160 too)",
    "elastic_tail": "fine-tuning deforms only a random tail of 2 to N - 1 slices of the batch",
    "soft_label_warp": "fine-tuning labels: affine step by nearest neighbour, then the elastic "
    "field warps their one-hot encoding bilinearly (soft labels)",
    "skip_running_stats": "stage hand-over copies no batch-norm running averages",
    "float32": "training in float32 (no mixed precision)",
    "n4": "the authors' N4 bias-correction settings on every dataset",
    "finetune_batch": "fine-tuning batch in slices (paper 40, authors 20)",
    "global_batch": "global pre-training batch B in slices (paper 40, authors 12)",
    "global_hidden_features": "hidden width of g_1 (paper 3200, authors 1024)",
}


@dataclass(frozen=True)
class FidelityConfig:
    """Which behaviours of the authors' code training reproduces (``True`` = the authors').

    Build it with :meth:`preset` (``"paper"``: every switch off and the settings of the paper's
    text; ``"authors"``: every switch on and the settings of their code) and item-by-item
    overrides; the field names are the keys of docs/differences.md's switch column.

    Parameters
    ----------
    blank_rows : bool
        Difference 1: the G^D batch keeps the authors' all-zero rows
        (:func:`~contrastlocal.functional.original_global_layout`). Needs `global_loss`.
    global_loss : bool
        Differences 2-4: stage 1 on the authors' batch (:func:`authors_global_batch`) with their
        loss (:func:`~contrastlocal.functional.original_global_loss`).
    random_slices : bool
        Difference 5: G^R batches of B slices drawn uniformly with replacement from all volumes
        (:func:`authors_global_batch` with ``strategy="random"``).
    local_loss : bool
        Differences 4, 7: the authors' local pairing, negatives and normaliser
        (:func:`authors_local_loss_arguments`). Needs `local_batch`.
    local_batch : bool
        Difference 7: the authors' stage-2 batches (:func:`authors_local_batch`).
    shared_intensity : bool
        Difference 6: one correlated (δ, c = 1 + δ) draw per call
        (``shared=True`` of :func:`~contrastlocal.data.augment.intensity_views` and
        :func:`~contrastlocal.data.augment.global_views`).
    fixed_crop : bool
        Difference 16: a crop of 100 pixels with an integer corner in [10, 69], whatever the
        image size (``crop_pixels=100, corner_pixels=(10, 69)`` of
        :func:`~contrastlocal.data.augment.global_views`).
    elastic_tail : bool
        Fine-tuning deforms a random tail of the batch (``elastic_tail=True`` of
        :func:`~contrastlocal.data.augment.geometric_augment`).
    soft_label_warp : bool
        Fine-tuning as :func:`~contrastlocal.data.augment.authors_geometric_augment`: affine
        step with nearest-neighbour labels, then bilinear warping of one-hot labels.
    skip_running_stats : bool
        Difference 17: ``include_buffers=False`` of the weight transfer functions.
    float32 : bool
        Float32 training: ``runtime.amp = "none"``.
    n4 : bool
        The authors' N4 settings on every dataset: ``PreprocessConfig(n4="legacy")`` (the
        ``--n4 legacy`` option of ``contrastlocal.data.prepare``).
    finetune_batch : int
        Fine-tuning batch in slices (:data:`TEXT_AND_CODE`).
    global_batch : int
        Global pre-training batch B in slices (:data:`TEXT_AND_CODE`).
    global_hidden_features : int
        Hidden width of g_1 (:data:`TEXT_AND_CODE`).

    Raises
    ------
    TypeError
        If a switch is not a bool or a setting not an int.
    ValueError
        If a setting is below 1, `blank_rows` is on without `global_loss` or `local_loss`
        without `local_batch`.

    Notes
    -----
    The stages read the switches from ``ExperimentConfig.fidelity``. The three integer settings
    are not read by the stages: on the paper's datasets, setting the fidelity of an
    :class:`~contrastlocal.training.ExperimentConfig` writes them into the sections the stages
    read (``finetune.batch_size``, ``global_stage.volumes_per_batch`` = B / S,
    ``model.global_hidden_features``), so each setting has one home.

    Examples
    --------
    >>> from contrastlocal.training.fidelity import FidelityConfig
    >>> cfg = FidelityConfig.preset("authors", blank_rows=False)
    >>> cfg.global_loss, cfg.blank_rows, cfg.finetune_batch
    (True, False, 20)
    >>> FidelityConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    blank_rows: bool = False
    global_loss: bool = False
    random_slices: bool = False
    local_loss: bool = False
    local_batch: bool = False
    shared_intensity: bool = False
    fixed_crop: bool = False
    elastic_tail: bool = False
    soft_label_warp: bool = False
    skip_running_stats: bool = False
    float32: bool = False
    n4: bool = False
    finetune_batch: int = TEXT_AND_CODE["finetune_batch"][0][0]
    global_batch: int = TEXT_AND_CODE["global_batch"][0][0]
    global_hidden_features: int = TEXT_AND_CODE["global_hidden_features"][0][0]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in TEXT_AND_CODE:
                if isinstance(value, bool) or not isinstance(value, int):
                    msg = f"`fidelity.{f.name}` must be an integer; got {value!r}."
                    raise TypeError(msg)
                if value < 1:
                    msg = f"`fidelity.{f.name}` must be >= 1; got {value}."
                    raise ValueError(msg)
            elif not isinstance(value, bool):
                msg = f"`fidelity.{f.name}` must be a bool; got {value!r}."
                raise TypeError(msg)
        if self.blank_rows and not self.global_loss:
            msg = ("`fidelity.blank_rows` needs `fidelity.global_loss`: the blank rows belong "
                   "to the authors' G^D batch layout; set both or neither.")
            raise ValueError(msg)
        if self.local_loss and not self.local_batch:
            msg = ("`fidelity.local_loss` needs `fidelity.local_batch`: the authors' local "
                   "pairing is defined on their stage-2 batch layout; set both or neither.")
            raise ValueError(msg)

    @classmethod
    def preset(cls, fidelity: str = "paper", **overrides: Any) -> FidelityConfig:
        """Return the ``"paper"`` or ``"authors"`` preset with item-by-item overrides.

        Parameters
        ----------
        fidelity : {"paper", "authors"}, default "paper"
            ``"paper"``: every switch off, the settings of the paper's text; ``"authors"``:
            every switch on, the settings of the authors' code.
        **overrides
            Items (field names) and their values.

        Returns
        -------
        FidelityConfig

        Raises
        ------
        ValueError
            If `fidelity` or an item is unknown (the message lists the accepted names and
            suggests the closest one).

        Examples
        --------
        >>> FidelityConfig.preset("authors").finetune_batch
        20
        >>> FidelityConfig.preset("paper", elastic_tail=True).elastic_tail
        True
        """
        if fidelity not in FIDELITIES:
            msg = (f"`fidelity` must be one of 'paper', 'authors'{_suggest(fidelity, FIDELITIES)}; "
                   f"got {fidelity!r}.")
            raise ValueError(msg)
        for name in overrides:
            _check_item(name)
        authors = fidelity == "authors"
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in TEXT_AND_CODE:
                values[f.name] = TEXT_AND_CODE[f.name][1 if authors else 0][0]
            else:
                values[f.name] = authors
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: str | Mapping[str, Any]) -> FidelityConfig:
        """Read a fidelity setting: a preset name, or a mapping of ``fidelity`` and items.

        Parameters
        ----------
        data : str or mapping
            ``"paper"`` / ``"authors"``, or a mapping with an optional ``"fidelity"`` key (the
            preset, default ``"paper"``) and item overrides (as :meth:`to_dict` writes).

        Returns
        -------
        FidelityConfig

        Raises
        ------
        ValueError
            If the preset or an item is unknown.
        TypeError
            If `data` is neither a string nor a mapping, or a value has the wrong type.

        Examples
        --------
        >>> FidelityConfig.from_dict({"fidelity": "authors", "n4": False}).n4
        False
        """
        if isinstance(data, str):
            return cls.preset(data)
        if not isinstance(data, Mapping):
            msg = f"a fidelity setting must be 'paper', 'authors' or a mapping; got {data!r}."
            raise TypeError(msg)
        items = {str(k): v for k, v in data.items() if k != "fidelity"}
        return cls.preset(data.get("fidelity", "paper"), **items)

    def to_dict(self) -> dict[str, Any]:
        """Write the setting as plain data: the closer preset and every item.

        Returns
        -------
        dict
            ``"fidelity"`` (the preset that shares most items with this config) and every item
            with its value; :meth:`from_dict` reads it back.

        Examples
        --------
        >>> d = FidelityConfig.preset("authors").to_dict()
        >>> d["fidelity"], d["global_loss"], d["finetune_batch"]
        ('authors', True, 20)
        """
        values = dataclasses.asdict(self)
        authors = FidelityConfig.preset("authors")
        same = sum(values[k] == getattr(authors, k) for k in values)
        base = "authors" if 2 * same > len(values) else "paper"
        return {"fidelity": base, **values}

    @property
    def name(self) -> str:
        """``"paper"`` or ``"authors"`` when the config equals that preset, else ``"custom"``.

        Examples
        --------
        >>> FidelityConfig().name, FidelityConfig.preset("authors", n4=False).name
        ('paper', 'custom')
        """
        for fidelity in FIDELITIES:
            if self == FidelityConfig.preset(fidelity):
                return fidelity
        return "custom"


def _suggest(name: object, accepted: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(name), accepted, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_item(name: str) -> None:
    accepted = tuple(f.name for f in dataclasses.fields(FidelityConfig))
    if name not in accepted:
        msg = (f"unknown fidelity item {name!r}{_suggest(name, accepted)}; accepted: "
               f"{', '.join(accepted)}.")
        raise ValueError(msg)
