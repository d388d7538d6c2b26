"""The base class of the dataset readers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from .._records import Case

__all__ = ["DatasetReader"]


class DatasetReader:
    """Base class of the readers: ``case_ids``, ``read(case_id)``, ``len`` and iteration.

    Attributes
    ----------
    root : pathlib.Path
        The dataset folder actually read.
    split : str
        The split read.
    case_ids : list of str
        Sorted case ids of the split.
    name : str
        Dataset name (key of :data:`READERS`).
    num_classes : int
        Number of label classes, background included.
    class_names : tuple of str
        Name of each label value.

    Examples
    --------
    Every reader is a sequence-like collection of cases (here the ACDC reader on a tiny copy of
    the ACDC layout):

    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_acdc_fixture
    >>> from contrastlocal.data.readers import ACDCReader, DatasetReader
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = ACDCReader(write_acdc_fixture(tmp, num_patients=2))
    ...     cases = [case.case_id for case in reader]
    >>> isinstance(reader, DatasetReader), len(reader), cases, reader.num_classes
    (True, 2, ['001', '002'], 4)
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    class_names: ClassVar[tuple[str, ...]]

    root: Path
    split: str
    case_ids: list[str]

    def read(self, case_id: str) -> Case:  # pragma: no cover - overridden
        """Read the case `case_id` (one of `case_ids`); implemented by each reader.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            The image, label map, spacing, affine and provenance of the case.
        """
        raise NotImplementedError

    def _check_id(self, case_id: str) -> None:
        if case_id not in self._id_set:
            shown = ", ".join(self.case_ids[:5]) + (", ..." if len(self.case_ids) > 5 else "")
            msg = (
                f"`case_id` {case_id!r} is not a case of the {self.name} {self.split!r} split "
                f"under {self.root}; known ids: {shown or 'none'}."
            )
            raise ValueError(msg)

    @property
    def _id_set(self) -> set[str]:
        return set(self.case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[Case]:
        for case_id in self.case_ids:
            yield self.read(case_id)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"num_cases={len(self)})"
        )
