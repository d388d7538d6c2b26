"""Readers of the real datasets in the layouts their users download.

Each reader takes the dataset folder as distributed, lists its cases in
``case_ids`` (sorted) and returns one :class:`~contrastlocal.data._records.Case` per
``read(case_id)``: the image, the label map already in the class convention of the paper, the
voxel spacing from the header zooms (never the affine diagonal), the affine and provenance in
``meta``. Bad input fails with an error that names the file or folder and what was expected.

- :class:`ACDCReader`: ``training/patientNNN/`` with ``Info.cfg`` and the ED (optionally ES)
  frame and its ``_gt``; classes background, RV, Myo, LV.
- :class:`ProstateReader`: MSD ``Task05_Prostate`` resolved through ``dataset.json``; the T2
  channel (last axis of the 4D images); classes background, PZ, TZ.
- :class:`MMWHSReader`: ``mr_train/mr_train_10NN_{image,label}.nii.gz``, reoriented to RAS+;
  raw codes 205...850 mapped to 1-7 (and the stray 421 to the left atrium).
- :class:`CityscapesReader`: ``leftImg8bit/`` + ``gtFine/`` labelIds mapped to background + 12
  classes, downscaled x4.

nibabel (NIfTI) and Pillow (PNG) are imported on first use: install the ``medical`` extra.

Each reader lives in its own private module (``_acdc``, ``_prostate``, ``_mmwhs``,
``_cityscapes``) on the shared base class (``_base``) and helpers (``_common``, ``_nifti``);
every public name is imported from here, ``contrastlocal.data.readers``, its one public path.
:data:`READERS` and :func:`get_reader` pick a reader by dataset name.
"""

from __future__ import annotations

from typing import Any

from ._acdc import ACDCReader
from ._base import DatasetReader
from ._cityscapes import CITYSCAPES_LABEL_LUT, CityscapesReader
from ._common import PathLike
from ._mmwhs import MMWHS_LABEL_CODES, MMWHSReader
from ._prostate import ProstateReader

__all__ = [
    "CITYSCAPES_LABEL_LUT",
    "MMWHS_LABEL_CODES",
    "READERS",
    "ACDCReader",
    "CityscapesReader",
    "DatasetReader",
    "MMWHSReader",
    "ProstateReader",
    "get_reader",
]


# The label tables are documented here, where they are exported (autodoc reads a constant's
# ``#:`` comment in the module that documents it).
#: Cityscapes ``labelIds`` value -> class of the paper (0 background, 1 road ... 12 bus).
CITYSCAPES_LABEL_LUT = CITYSCAPES_LABEL_LUT
#: Raw MM-WHS label codes in class order: index ``k`` of the tuple is class ``k`` (0 = background).
MMWHS_LABEL_CODES = MMWHS_LABEL_CODES

READERS: dict[str, type[DatasetReader]] = {
    "acdc": ACDCReader,
    "prostate": ProstateReader,
    "mmwhs": MMWHSReader,
    "cityscapes": CityscapesReader,
}


def get_reader(name: str, root: PathLike, **kwargs: Any) -> DatasetReader:
    """Construct the reader of dataset `name` on folder `root`.

    Parameters
    ----------
    name : {"acdc", "prostate", "mmwhs", "cityscapes"}
        Dataset name (a key of :data:`READERS`).
    root : str or os.PathLike
        Dataset folder as distributed.
    **kwargs
        Reader options (``split``, ``frames``, ``modality``, ``downscale``, ...).

    Returns
    -------
    ACDCReader or ProstateReader or MMWHSReader or CityscapesReader
        The reader, with ``case_ids`` and ``read(case_id)``.

    Raises
    ------
    ValueError
        If `name` is unknown (and as the reader's constructor).

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_mmwhs_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = get_reader("mmwhs", write_mmwhs_fixture(tmp), split="test")
    >>> type(reader).__name__, reader.case_ids, reader.num_classes
    ('MMWHSReader', ['2001'], 8)
    """
    if name not in READERS:
        msg = f"`name` must be one of {sorted(READERS)}; got {name!r}."
        raise ValueError(msg)
    return READERS[name](root, **kwargs)  # type: ignore[call-arg]
