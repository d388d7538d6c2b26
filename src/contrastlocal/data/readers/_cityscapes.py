"""Cityscapes: ``leftImg8bit/`` + ``gtFine/`` labelIds, downscaled (Pillow imported on use)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from .._records import Case
from ._base import DatasetReader
from ._common import (
    PathLike,
    _check_label_values,
    _check_split,
    _is_hidden,
    _require_dir,
    _UInt8Array,
)

__all__ = ["CITYSCAPES_LABEL_LUT", "CityscapesReader"]


def _cityscapes_lut() -> _UInt8Array:
    lut = np.zeros(256, dtype=np.uint8)
    groups = {7: 1, 8: 2, 11: 3, 12: 4, 21: 5, 22: 6, 23: 7, 24: 8, 25: 8, 26: 9, 32: 10, 33: 10}
    groups |= {27: 11, 28: 12}
    for label_id, cls in groups.items():
        lut[label_id] = cls
    return lut


# documented where it is exported: contrastlocal.data.readers.CITYSCAPES_LABEL_LUT
CITYSCAPES_LABEL_LUT: _UInt8Array = _cityscapes_lut()


_CITYSCAPES_MAX_ID = 33  # gtFine labelIds PNGs hold ids 0-33


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "Reading Cityscapes PNG files needs Pillow: install contrastlocal[medical]."
        raise ImportError(msg) from err


def _find_top(root: Path, name: str) -> Path | None:
    """``root/name`` or, as some zips unpack, ``root/<one level>/name``."""
    if (root / name).is_dir():
        return root / name
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / name).is_dir():
            return child / name
    return None


class CityscapesReader(DatasetReader):
    """Reader of Cityscapes fine annotations (``leftImg8bit/``, ``gtFine/``).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``leftImg8bit/`` and ``gtFine/`` (directly or one level down, as the
        download zips sometimes unpack).
    split : {"train", "val", "test"}, optional
        Split folder to read. Test labels are not public: ``label`` is None for ``"test"``.
    downscale : int, optional
        Integer downscaling factor (default 4: 1024 x 2048 -> 256 x 512, the paper's
        resolution); 1 keeps the native size. The output size is ``(H // f, W // f)``.

    Attributes
    ----------
    case_ids : list of str
        Sorted image stems, e.g. ``"aachen_000000_000019"``.
    name : str
        ``"cityscapes"``.
    num_classes : int
        13.
    class_names : tuple of str
        Background and the 12 classes of the paper (:data:`CITYSCAPES_LABEL_LUT`).

    Raises
    ------
    FileNotFoundError
        If `root`, ``leftImg8bit``/``gtFine`` or the split folder is missing, or a labelIds
        file of a train/val image is missing.
    ValueError
        If `split` or `downscale` is invalid or the split holds no ``*_leftImg8bit.png``.

    See Also
    --------
    contrastlocal.data.fixtures.write_cityscapes_fixture : A tiny folder in this layout.

    Notes
    -----
    Labels come from ``*_gtFine_labelIds.png`` (ids 0-33), mapped by a 256-entry lookup table
    to 0 background, 1 road (7), 2 sidewalk (8), 3 building (11), 4 wall (12), 5 vegetation
    (21), 6 terrain (22), 7 sky (23), 8 person + rider (24, 25), 9 car (26), 10 motorcycle +
    bicycle (32, 33), 11 truck (27), 12 bus (28). The RGB image is downscaled with Pillow's
    antialiased bilinear filter, the label map with nearest neighbour (after the lookup).
    ``image`` is uint8 (H, W, 3), ``is_rgb`` is True, ``spacing`` is (1, 1, 1).

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_cityscapes_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = CityscapesReader(write_cityscapes_fixture(tmp), split="val")
    ...     case = reader.read(reader.case_ids[0])
    >>> case.case_id, case.image.shape, case.label.shape, case.is_rgb
    ('frankfurt_000000_000019', (16, 32, 3), (16, 32), True)
    """

    name: ClassVar[str] = "cityscapes"
    num_classes: ClassVar[int] = 13
    class_names: ClassVar[tuple[str, ...]] = (
        "background", "road", "sidewalk", "building", "wall", "vegetation", "terrain", "sky",
        "person+rider", "car", "motorcycle+bicycle", "truck", "bus",
    )  # fmt: skip

    def __init__(
        self,
        root: PathLike,
        *,
        split: Literal["train", "val", "test"] = "train",
        downscale: int = 4,
    ) -> None:
        self.split = _check_split(split, ("train", "val", "test"))
        if isinstance(downscale, bool) or not isinstance(downscale, (int, np.integer)):
            msg = f"`downscale` must be a positive int; got {downscale!r}."
            raise TypeError(msg)
        if downscale < 1:
            msg = f"`downscale` must be a positive int; got {downscale}."
            raise ValueError(msg)
        self.downscale = int(downscale)
        self.root = _require_dir(Path(root), "Cityscapes `root`")
        images_top = _find_top(self.root, "leftImg8bit")
        labels_top = _find_top(self.root, "gtFine")
        for top, what in ((images_top, "leftImg8bit"), (labels_top, "gtFine")):
            if top is None:
                msg = (
                    f"Cityscapes `root`: expected a folder {self.root / what} (or one level "
                    "below), but it does not exist."
                )
                raise FileNotFoundError(msg)
        if images_top is None or labels_top is None:  # pragma: no cover - raised above
            raise FileNotFoundError(self.root)
        image_dir = images_top / self.split
        if not image_dir.is_dir():
            msg = f"Cityscapes split: expected a folder {image_dir}, but it does not exist."
            raise FileNotFoundError(msg)
        self._entries: dict[str, tuple[Path, Path | None]] = {}
        suffix = "_leftImg8bit.png"
        for path in sorted(image_dir.glob(f"*/*{suffix}")):
            if _is_hidden(path.name):
                continue
            stem = path.name[: -len(suffix)]
            label: Path | None = None
            if self.split != "test":
                label = labels_top / self.split / path.parent.name / f"{stem}_gtFine_labelIds.png"
                if not label.is_file():
                    msg = f"Expected the label file {label} for {path}; it does not exist."
                    raise FileNotFoundError(msg)
            self._entries[stem] = (path, label)
        if not self._entries:
            msg = (
                f"Cityscapes split {self.split!r} is empty: expected <city>/*{suffix} files "
                f"under {image_dir}."
            )
            raise ValueError(msg)
        self.case_ids = sorted(self._entries)

    def _open(self, path: Path) -> Any:
        image_mod = _pil_image()
        im = None
        try:
            im = image_mod.open(path)
            im.load()
        except Exception as err:  # Pillow raises OSError, SyntaxError, ... on bad files
            if im is not None:
                im.close()
            msg = f"Cannot read {path}: expected a complete PNG image; {type(err).__name__}: {err}"
            raise ValueError(msg) from err
        return im

    def read(self, case_id: str) -> Case:
        """Read one image and its mapped, downscaled label map.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            ``image`` uint8 (H, W, 3), ``label`` uint8 (H, W) with 0-12 (None for ``"test"``),
            ``(H, W) = (H0 // downscale, W0 // downscale)``.

        Raises
        ------
        ValueError
            If `case_id` is unknown, a PNG cannot be read, the label PNG is not single-channel
            8-bit, its size differs from the image's, or it holds ids above 33.
        """
        self._check_id(case_id)
        image_path, label_path = self._entries[case_id]
        image_mod = _pil_image()
        im = self._open(image_path)
        native = (im.height, im.width)
        size = (max(1, im.width // self.downscale), max(1, im.height // self.downscale))
        if im.mode != "RGB":
            im = im.convert("RGB")
        if self.downscale != 1:
            im = im.resize(size, image_mod.Resampling.BILINEAR)
        image = np.asarray(im, dtype=np.uint8)
        label: _UInt8Array | None = None
        if label_path is not None:
            lab = self._open(label_path)
            if lab.mode not in ("L", "P"):
                msg = (
                    f"{label_path}: expected a single-channel 8-bit labelIds PNG (mode 'L'); "
                    f"got mode {lab.mode!r}."
                )
                raise ValueError(msg)
            if (lab.height, lab.width) != native:
                msg = (
                    f"Image/label shape mismatch: {image_path} is {native} (H, W) but "
                    f"{label_path} is {(lab.height, lab.width)}."
                )
                raise ValueError(msg)
            ids = np.asarray(lab, dtype=np.uint8)
            _check_label_values(ids, range(_CITYSCAPES_MAX_ID + 1), label_path)
            mapped = CITYSCAPES_LABEL_LUT[ids]
            if self.downscale != 1:
                small = image_mod.fromarray(mapped).resize(size, image_mod.Resampling.NEAREST)
                mapped = np.asarray(small, dtype=np.uint8)
            label = mapped
        meta: dict[str, Any] = {
            "dataset": self.name,
            "city": image_path.parent.name,
            "split": self.split,
            "native_size": native,
            "downscale": self.downscale,
            "image_path": str(image_path),
            "label_path": None if label_path is None else str(label_path),
        }
        return Case(
            case_id=case_id,
            image=image,
            label=label,
            spacing=(1.0, 1.0, 1.0),
            affine=np.eye(4),
            meta=meta,
            is_rgb=True,
        )
