"""The pre-processed slice cache: one memory-mappable ``.npy`` per array plus a JSON index.

Layout of one cache (one dataset, one split, one pre-processing configuration)::

    <out>/<dataset>/<split>-<key>/
        images.npy     (N, H, W) float32, or (N, 3, H, W) for RGB images
        labels.npy     (N, H, W) uint8 (absent if no case has labels; 255 = no label)
        index.json     per case: case_id, offset, num_slices, has_label, geometry;
                       per slice: case_index, slice_index, partition (S = 4, not for RGB);
                       the pre-processing config, its digest, format versions
        parts/         per-case results while the cache is being written (removed at the end)

``<key>`` is :meth:`~contrastlocal.data.preprocess.PreprocessConfig.digest` (combined with any
reader options). Every file is written to a temporary name and moved into place with
:func:`os.replace`, and ``index.json`` is written last: a cache with an ``index.json`` is
complete. A killed run leaves finished cases in ``parts/``; the next run skips them.

Random single-slice reads from a memory-mapped ``.npy`` are fast (~10^4 per second);
small caches can be loaded into RAM (``open_cache(path, in_memory=True)``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..samplers import slice_partition
from .preprocess import Geometry, PreprocessConfig

__all__ = [
    "CACHE_FORMAT_VERSION",
    "NO_LABEL",
    "CacheData",
    "CacheWriteError",
    "CacheWriter",
    "cache_key",
    "cache_os_error",
    "cache_path",
    "changed_file",
    "file_fingerprint",
    "open_cache",
]

#: Version of the on-disk layout; :func:`open_cache` refuses other versions.
CACHE_FORMAT_VERSION = 1
#: Label value filling the slices of cases without a label map in a cache that has labels.
NO_LABEL = 255
#: Number of partitions along the slice axis recorded in the index (the paper's S = 4).
INDEX_NUM_PARTITIONS = 4

_INDEX = "index.json"
_IMAGES = "images.npy"
_LABELS = "labels.npy"
_PARTS = "parts"


def cache_key(config: PreprocessConfig, extra: dict[str, Any] | None = None) -> str:
    """Key of a cache: the config digest, combined with other settings that change the content.

    Parameters
    ----------
    config : PreprocessConfig
        Pre-processing settings.
    extra : dict, optional
        JSON-serialisable settings that also change the cached arrays (e.g. reader options).

    Returns
    -------
    str
        16 hex digits; ``config.digest()`` when `extra` is empty.

    Examples
    --------
    >>> cfg = PreprocessConfig()
    >>> cache_key(cfg) == cfg.digest()
    True
    >>> cache_key(cfg, {"frames": "ed+es"}) != cfg.digest()
    True
    """
    if not extra:
        return config.digest()
    text = json.dumps({"config": config.digest(), "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(
    out: str | os.PathLike[str],
    dataset: str,
    split: str,
    config: PreprocessConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Folder of the cache of one dataset, split and configuration.

    Parameters
    ----------
    out : path
        Root folder of all caches.
    dataset : str
        Dataset name.
    split : str
        Split name.
    config : PreprocessConfig
        Pre-processing settings.
    extra : dict, optional
        Other settings keyed into the folder name (see :func:`cache_key`).

    Returns
    -------
    Path
        ``<out>/<dataset>/<split>-<key>``.

    Examples
    --------
    >>> p = cache_path("cache", "acdc", "pretrain", PreprocessConfig())
    >>> p.parent.as_posix(), p.name.startswith("pretrain-")
    ('cache/acdc', True)
    """
    return Path(out) / dataset / f"{split}-{cache_key(config, extra)}"


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _atomic_write_bytes(path: Path, writer: Any, *, needed: int | None = None) -> None:
    tmp = _tmp_name(path)
    try:
        with tmp.open("wb") as fh:
            if needed:
                _reserve(fh.fileno(), needed)
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise cache_os_error(err, path, needed) from err
    finally:
        tmp.unlink(missing_ok=True)


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate `nbytes` for a file up front: a full disk fails here, not halfway through."""
    if nbytes <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the file system cannot reserve; ordinary writes still report ENOSPC
        raise


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # pragma: no cover


class CacheWriteError(OSError):
    """Writing a cache failed for a reason outside the program: disk full, read-only, ...

    The message is one line naming the path and, for a full disk, the space needed and free;
    ``errno`` is that of the underlying error.

    Examples
    --------
    >>> import errno
    >>> err = cache_os_error(OSError(errno.EACCES, "denied"), Path("/c/index.json"))
    >>> isinstance(err, CacheWriteError), isinstance(err, OSError), str(err)
    (True, True, "cannot write '/c/index.json': permission denied.")
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def cache_os_error(err: OSError, path: Path, needed: int | None = None) -> OSError:
    """Turn an operating-system error while writing a cache into one clear line.

    Parameters
    ----------
    err : OSError
        The error raised.
    path : Path
        What was being written.
    needed : int, optional
        Bytes the write needed (named for a full disk).

    Returns
    -------
    OSError
        A :class:`CacheWriteError` with the same ``errno`` for a full disk, a read-only file
        system, a missing permission or a path component that is a file; `err` itself otherwise.

    Examples
    --------
    >>> import errno
    >>> e = cache_os_error(OSError(errno.EROFS, "Read-only"), Path("/c/images.npy"))
    >>> str(e), e.errno == errno.EROFS
    ("cannot write '/c/images.npy': the file system is read-only.", True)
    """
    if isinstance(err, CacheWriteError):
        return err
    where = os.fspath(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path.parent)
        need = f"needs {_size(needed)}, " if needed else ""
        have = f"{_size(free)} free" if free is not None else "free space unknown"
        msg = f"no space left on the device of {where!r}: the write {need}{have}."
    elif err.errno == errno.EROFS:
        msg = f"cannot write {where!r}: the file system is read-only."
    elif err.errno in (errno.EACCES, errno.EPERM):
        msg = f"cannot write {where!r}: permission denied."
    elif err.errno in (errno.EEXIST, errno.ENOTDIR):
        msg = f"cannot write {where!r}: a part of the path names an existing file, not a folder."
    else:
        return err
    out = CacheWriteError(msg)
    out.errno = err.errno
    out.filename = where
    return out


def _partitions(num_slices: int, num_partitions: int) -> list[int]:
    return [int(p) for p in slice_partition(np.arange(num_slices), num_slices, num_partitions)]


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identify a source file by absolute path, size, modification time and SHA-256.

    Parameters
    ----------
    path : path
        A file.

    Returns
    -------
    dict
        ``path`` (absolute), ``size`` (bytes), ``mtime_ns``, ``sha256`` (hex).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     f = Path(tmp) / "a.txt"
    ...     _ = f.write_bytes(b"abc")
    ...     fp = file_fingerprint(f)
    >>> fp["size"], fp["sha256"][:8]
    (3, 'ba7816bf')
    """
    p = Path(path).absolute()
    st = p.stat()
    return {
        "path": os.fspath(p),
        "size": int(st.st_size),
        "mtime_ns": int(st.st_mtime_ns),
        "sha256": _sha256(p),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def changed_file(files: Sequence[dict[str, Any]]) -> str | None:
    """Name the first recorded source file that is gone or changed, or return None.

    A file whose size or modification time differs is hashed again: same content counts as
    unchanged (e.g. after ``touch``).

    Parameters
    ----------
    files : sequence of dict
        Fingerprints from :func:`file_fingerprint`.

    Returns
    -------
    str or None
        What changed, e.g. ``"source file '/d/a.nii.gz' changed (size 10 -> 12 bytes)"``.

    Examples
    --------
    >>> changed_file([{"path": "/no/such/file", "size": 1, "mtime_ns": 0, "sha256": ""}])
    "source file '/no/such/file' is missing"
    """
    for rec in files:
        p = Path(rec["path"])
        try:
            st = p.stat()
        except OSError:
            return f"source file {rec['path']!r} is missing"
        if st.st_size == rec["size"] and st.st_mtime_ns == rec["mtime_ns"]:
            continue
        if rec.get("sha256") and _sha256(p) == rec["sha256"]:
            continue
        if st.st_size != rec["size"]:
            return f"source file {rec['path']!r} changed (size {rec['size']} -> {st.st_size} bytes)"
        return f"source file {rec['path']!r} changed (modified since it was cached)"
    return None


@dataclass(frozen=True)
class _PartInfo:
    """What :meth:`CacheWriter.finalize` learns from one part file before writing."""

    case_id: str
    shape: tuple[int, ...]
    has_label: bool
    geometry: dict[str, Any]
    files: list[dict[str, Any]]


class CacheWriter:
    """Write a cache case by case (resumable), then concatenate it.

    Parameters
    ----------
    path : path
        The cache folder (see :func:`cache_path`).
    case_ids : sequence of str
        Cases of the split, in the order of the final arrays.
    config : PreprocessConfig
        Settings the cases are processed with (recorded in the index).
    dataset : str
        Dataset name (recorded).
    split : str
        Split name (recorded).
    extra : dict, optional
        Other recorded settings (e.g. reader options).
    source : dict, optional
        What the cases are read from (e.g. ``{"root": "/abs/ACDC", "reader": "acdc"}``),
        recorded in the index and in each part; a cache or part made from another source is
        out of date (see :meth:`stale_reason`).

    Raises
    ------
    ValueError
        If `case_ids` is empty or has duplicates.

    Notes
    -----
    The source files of each case (``files`` of :meth:`write_case`, fingerprinted with
    :func:`file_fingerprint`) are recorded too: a cache whose source files changed since is
    out of date, and so is a part.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.preprocess import preprocess_case
    >>> from contrastlocal.data._records import Case
    >>> case = Case("a", np.ones((8, 8, 2)), np.zeros((8, 8, 2), np.uint8), (1.0, 1.0, 1.0))
    >>> cfg = PreprocessConfig(image_size=(8, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     writer = CacheWriter(Path(tmp) / "c", ["a"], config=cfg)
    ...     part = writer.write_case("a", *preprocess_case(case, cfg))
    ...     data = open_cache(writer.finalize())
    ...     data.images.shape, data.slices_per_volume
    ((2, 8, 8), (2,))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        case_ids: Sequence[str],
        *,
        config: PreprocessConfig,
        dataset: str = "",
        split: str = "",
        extra: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        ids = [str(c) for c in case_ids]
        if not ids:
            msg = f"`case_ids` must not be empty (cache {os.fspath(path)!r})."
            raise ValueError(msg)
        if len(set(ids)) != len(ids):
            dup = sorted({c for c in ids if ids.count(c) > 1})
            msg = f"`case_ids` must be unique; got duplicates {dup}."
            raise ValueError(msg)
        self.path = Path(path)
        self.case_ids = ids
        self.config = config
        self.dataset = dataset
        self.split = split
        self.extra = dict(extra or {})
        self.source = None if source is None else json.loads(json.dumps(source, default=str))

    @property
    def parts_dir(self) -> Path:
        """Folder of the per-case intermediate results."""
        return self.path / _PARTS

    def part_path(self, case_id: str) -> Path:
        """Path of the intermediate result of one case.

        Parameters
        ----------
        case_id : str
            The case.

        Returns
        -------
        Path
            ``parts/<case_id>.npz`` (characters other than letters, digits, ``._-`` replaced).
        """
        return self.parts_dir / f"{_safe_name(case_id)}.npz"

    def _read_index(self) -> dict[str, Any] | None:
        index = self.path / _INDEX
        if not index.is_file():
            return None
        try:
            meta = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    def stale_reason(self) -> str | None:
        """Say why an existing complete cache does not match this writer; None if it does.

        Returns
        -------
        str or None
            None when there is no index (nothing cached yet) or the cache is up to date; else
            what changed: format version, pre-processing settings, case ids, the source, or a
            source file (see :func:`changed_file`).
        """
        meta = self._read_index()
        if meta is None:
            return None
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            return f"it has format version {meta.get('format_version')!r}"
        if meta.get("config_digest") != self.config.digest():
            return "the pre-processing settings changed"
        cases = meta.get("cases", [])
        if [c["case_id"] for c in cases] != self.case_ids:
            return "the case ids changed"
        if meta.get("source") != self.source:
            return _source_change(meta.get("source"), self.source)
        for c in cases:
            change = changed_file(c.get("files", []))
            if change is not None:
                return f"{change} (case {c['case_id']!r})"
        if not (self.path / _IMAGES).is_file():
            return f"{_IMAGES} is missing"
        return None

    def is_complete(self) -> bool:
        """Whether a complete cache for exactly these cases, settings and sources is present.

        Returns
        -------
        bool
            True if ``index.json`` exists and records the same case ids, config digest and
            source, and no recorded source file changed since.
        """
        return self._read_index() is not None and self.stale_reason() is None

    def invalidate(self) -> None:
        """Remove the index and the final arrays (the parts stay; stale ones are redone)."""
        for name in (_INDEX, _IMAGES, _LABELS):
            (self.path / name).unlink(missing_ok=True)

    def remove_temporary_files(self) -> list[Path]:
        """Delete temporary files left by killed writers (call while holding the cache lock).

        Returns
        -------
        list of Path
            The files removed.
        """
        removed = []
        for folder in (self.path, self.parts_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp-*"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    def part_problem(self, case_id: str) -> str | None:
        """Say why the part of a case cannot be reused, or None if it can.

        Parameters
        ----------
        case_id : str
            The case.

        Returns
        -------
        str or None
            ``"missing"``, ``"unreadable"``, a source change, or None.
        """
        part = self.part_path(case_id)
        if not part.is_file():
            return "missing"
        try:
            with np.load(part, allow_pickle=False) as data:
                record = json.loads(str(data["source"])) if "source" in data.files else {}
        except (OSError, ValueError, KeyError):
            return "unreadable"
        if record.get("source") != self.source:
            return _source_change(record.get("source"), self.source)
        return changed_file(record.get("files", []))

    def done_case_ids(self) -> list[str]:
        """Return the cases whose intermediate result is on disk and still matches its source.

        Returns
        -------
        list of str
            In the order of `case_ids`.
        """
        return [c for c in self.case_ids if self.part_problem(c) is None]

    def write_case(
        self,
        case_id: str,
        image: npt.NDArray[np.float32],
        label: npt.NDArray[np.uint8] | None,
        geometry: Geometry,
        *,
        files: Sequence[dict[str, Any]] = (),
    ) -> Path:
        """Store the processed arrays of one case atomically.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.
        image : ndarray of shape (Z, H, W) or (1, 3, H, W), float32
            Processed image slices.
        label : ndarray of shape (Z, H, W) or (1, H, W), uint8, or None
            Processed label slices.
        geometry : Geometry
            Native geometry of the case.
        files : sequence of dict
            Fingerprints (:func:`file_fingerprint`) of the files the case was read from.

        Returns
        -------
        Path
            The part file.

        Raises
        ------
        ValueError
            If `case_id` is not one of the writer's cases or the shapes disagree.
        CacheWriteError
            If the disk is full or not writable (one line, see :func:`cache_os_error`).
        """
        if case_id not in self.case_ids:
            msg = f"`case_id` {case_id!r} is not one of this cache's cases."
            raise ValueError(msg)
        img = np.ascontiguousarray(image, dtype=np.float32)
        if img.ndim not in (3, 4):
            msg = f"`image` of case {case_id!r} must be (Z, H, W) or (Z, C, H, W); got {img.shape}."
            raise ValueError(msg)
        record = {"source": self.source, "files": list(files)}
        arrays: dict[str, Any] = {
            "image": img,
            "geometry": np.array(json.dumps(geometry.to_dict())),
            "source": np.array(json.dumps(record)),
        }
        if label is not None:
            lab = np.ascontiguousarray(label, dtype=np.uint8)
            if lab.shape != (img.shape[0], *img.shape[-2:]):
                msg = (
                    f"`label` of case {case_id!r} must have shape "
                    f"{(img.shape[0], *img.shape[-2:])}; got {lab.shape}."
                )
                raise ValueError(msg)
            arrays["label"] = lab
        try:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise cache_os_error(err, self.parts_dir) from err
        target = self.part_path(case_id)
        needed = sum(a.nbytes for a in arrays.values()) + 4096
        _atomic_write_bytes(target, lambda fh: np.savez(fh, **arrays), needed=needed)
        return target

    def finalize(self, *, keep_parts: bool = False) -> Path:
        """Concatenate the per-case results into the final arrays and write the index.

        Parameters
        ----------
        keep_parts : bool
            Keep the ``parts/`` folder (default: removed once the index is written).

        Returns
        -------
        Path
            The cache folder.

        Raises
        ------
        ValueError
            If cases are missing or their slice shapes differ.
        CacheWriteError
            If the disk is full (the message names the space needed and free) or not writable;
            no temporary file is left behind.

        Notes
        -----
        The arrays are written with ordinary file writes into space reserved up front
        (``posix_fallocate``), never through a memory map: a full disk is an error, not a bus
        error.
        """
        self._check_parts_present()
        infos = self._scan_parts()
        slice_shape = self._common_slice_shape(infos)
        any_label = any(i.has_label for i in infos)
        self._write_images(infos, slice_shape)
        if any_label:
            self._write_labels(infos, slice_shape[-2:])
        else:
            (self.path / _LABELS).unlink(missing_ok=True)
        index = self._build_index(infos, slice_shape, any_label)
        text = json.dumps(index, indent=1).encode()
        _atomic_write_bytes(self.path / _INDEX, lambda fh: fh.write(text), needed=len(text))
        if not keep_parts and self.parts_dir.exists():
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        return self.path

    # ---- steps of finalize -------------------------------------------------------------------

    def _check_parts_present(self) -> None:
        missing = [c for c in self.case_ids if not self.part_path(c).is_file()]
        if missing:
            msg = f"cannot finalize cache {os.fspath(self.path)!r}: cases {missing} are missing."
            raise ValueError(msg)

    def _scan_parts(self) -> list[_PartInfo]:
        infos = []
        for cid in self.case_ids:
            with np.load(self.part_path(cid), allow_pickle=False) as part:
                record = json.loads(str(part["source"])) if "source" in part.files else {}
                infos.append(
                    _PartInfo(
                        case_id=cid,
                        shape=tuple(part["image"].shape),
                        has_label="label" in part.files,
                        geometry=json.loads(str(part["geometry"])),
                        files=list(record.get("files", [])),
                    )
                )
        return infos

    @staticmethod
    def _common_slice_shape(infos: Sequence[_PartInfo]) -> tuple[int, ...]:
        slice_shape = infos[0].shape[1:]
        bad = [i.case_id for i in infos if i.shape[1:] != slice_shape]
        if bad:
            msg = (
                f"cases {bad} have slices of another shape than {slice_shape} "
                f"(case {infos[0].case_id!r}); all cases of a cache must share it."
            )
            raise ValueError(msg)
        return slice_shape

    def _write_npy(
        self, name: str, dtype: type[np.generic], shape: tuple[int, ...], rows: Any
    ) -> None:
        """Write ``name`` (an ``.npy`` of `shape`) from the row blocks yielded by `rows`."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                "fortran_order": False,
                "shape": shape,
            },
        )
        needed = header.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize

        def write(fh: Any) -> None:
            fh.write(header.getvalue())
            for block in rows:
                fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())

        _atomic_write_bytes(self.path / name, write, needed=needed)

    def _write_images(self, infos: Sequence[_PartInfo], slice_shape: tuple[int, ...]) -> None:
        def rows() -> Any:
            for info in infos:
                with np.load(self.part_path(info.case_id), allow_pickle=False) as part:
                    yield part["image"]

        total = sum(i.shape[0] for i in infos)
        self._write_npy(_IMAGES, np.float32, (total, *slice_shape), rows())

    def _write_labels(self, infos: Sequence[_PartInfo], hw: tuple[int, ...]) -> None:
        def rows() -> Any:
            for info in infos:
                if not info.has_label:
                    yield np.full((info.shape[0], *hw), NO_LABEL, dtype=np.uint8)
                    continue
                with np.load(self.part_path(info.case_id), allow_pickle=False) as part:
                    yield part["label"]

        total = sum(i.shape[0] for i in infos)
        self._write_npy(_LABELS, np.uint8, (total, *hw), rows())

    def _build_index(
        self, infos: Sequence[_PartInfo], slice_shape: tuple[int, ...], any_label: bool
    ) -> dict[str, Any]:
        counts = [i.shape[0] for i in infos]
        is_rgb = bool(infos[0].geometry.get("is_rgb", False))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        case_index: list[int] = []
        slice_index: list[int] = []
        partition: list[int] = []
        for i, n in enumerate(counts):
            case_index.extend([i] * n)
            slice_index.extend(range(n))
            partition.extend(_partitions(n, INDEX_NUM_PARTITIONS))
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "dataset": self.dataset,
            "split": self.split,
            "config": self.config.to_dict(),
            "config_digest": self.config.digest(),
            "extra": self.extra,
            "source": self.source,
            "num_slices": int(sum(counts)),
            "slice_shape": list(slice_shape),
            "is_rgb": is_rgb,
            "has_labels": any_label,
            "num_partitions": None if is_rgb else INDEX_NUM_PARTITIONS,
            "cases": [
                {
                    "case_id": info.case_id,
                    "offset": off,
                    "num_slices": info.shape[0],
                    "has_label": info.has_label,
                    "geometry": info.geometry,
                    "files": info.files,
                }
                for info, off in zip(infos, offsets, strict=True)
            ],
            "slices": {
                "case_index": case_index,
                "slice_index": slice_index,
                "partition": None if is_rgb else partition,
            },
        }


def _source_change(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
        return f"the source changed ({shown})"
    return f"the source changed ({old!r} -> {new!r})"


@dataclass
class CacheData:
    """A loaded cache: the slice arrays and what they are.

    Attributes
    ----------
    path : Path
        The cache folder.
    images : ndarray of shape (N, H, W) or (N, 3, H, W), float32
        All slices, concatenated case by case (``np.memmap`` unless loaded in memory).
    labels : ndarray of shape (N, H, W), uint8, or None
        Label slices (:data:`NO_LABEL` for cases without labels), None if no case has labels.
    case_ids : tuple of str
        Case of each volume, in order.
    slices_per_volume : tuple of int
        Number of slices of each case (sums to N).
    offsets : tuple of int
        First slice of each case.
    geometries : tuple of Geometry
        Native geometry of each case (for :func:`~contrastlocal.data.preprocess.to_native`).
    has_label : tuple of bool
        Whether each case came with a label map.
    case_index : ndarray of shape (N,), int64
        Case (volume) index of every slice.
    slice_index : ndarray of shape (N,), int64
        Position of every slice in its volume.
    partition : ndarray of shape (N,), int64, or None
        Partition of every slice for S = 4 (``floor(z * 4 / Z)``); None for RGB images.
    config : PreprocessConfig
        Settings the cache was made with.
    meta : dict
        The rest of the index (dataset, split, extra settings).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from contrastlocal.data import Case
    >>> from contrastlocal.data.cache import CacheWriter, open_cache
    >>> from contrastlocal.data.preprocess import PreprocessConfig, preprocess_case
    >>> case = Case("a", np.ones((8, 8, 3)), np.zeros((8, 8, 3), np.uint8), (1.0, 1.0, 1.0))
    >>> cfg = PreprocessConfig(image_size=(8, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     writer = CacheWriter(Path(tmp) / "c", ["a"], config=cfg)
    ...     _ = writer.write_case("a", *preprocess_case(case, cfg))
    ...     data = open_cache(writer.finalize(), in_memory=True)
    >>> data.images.shape, data.case_ids, data.partition.tolist()
    ((3, 8, 8), ('a',), [0, 1, 2])
    """

    path: Path
    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8] | None
    case_ids: tuple[str, ...]
    slices_per_volume: tuple[int, ...]
    offsets: tuple[int, ...]
    geometries: tuple[Geometry, ...]
    has_label: tuple[bool, ...]
    case_index: npt.NDArray[np.int64]
    slice_index: npt.NDArray[np.int64]
    partition: npt.NDArray[np.int64] | None
    config: PreprocessConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        """Total number of slices N."""
        return int(self.images.shape[0])

    @property
    def num_volumes(self) -> int:
        """Number of cases."""
        return len(self.case_ids)

    def volume(
        self, case: str | int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None, Geometry]:
        """Slices, labels and geometry of one case.

        Parameters
        ----------
        case : str or int
            Case id or position.

        Returns
        -------
        image : ndarray of shape (Z, H, W) or (Z, 3, H, W)
            Its slices (a view of `images`).
        label : ndarray of shape (Z, H, W) or None
            Its label slices, None if the case has no labels.
        geometry : Geometry
            Its native geometry.

        Raises
        ------
        ValueError
            If the case is not in the cache.
        """
        i = self._position(case)
        lo, n = self.offsets[i], self.slices_per_volume[i]
        lab = None if self.labels is None or not self.has_label[i] else self.labels[lo : lo + n]
        return self.images[lo : lo + n], lab, self.geometries[i]

    def _position(self, case: str | int) -> int:
        if isinstance(case, (int, np.integer)) and not isinstance(case, bool):
            if not 0 <= int(case) < self.num_volumes:
                msg = f"`case` index must be in [0, {self.num_volumes}); got {case}."
                raise ValueError(msg)
            return int(case)
        if case not in self.case_ids:
            msg = f"`case` {case!r} is not in the cache {os.fspath(self.path)!r}."
            raise ValueError(msg)
        return self.case_ids.index(str(case))

    def select(self, case_ids: Sequence[str]) -> CacheData:
        """Restrict the cache to some cases (arrays copied into memory).

        Parameters
        ----------
        case_ids : sequence of str
            Cases to keep, in the wanted order.

        Returns
        -------
        CacheData
            The subset (``path`` unchanged).

        Raises
        ------
        ValueError
            If a case is not in the cache.
        """
        pos = [self._position(str(c)) for c in case_ids]
        rows = (
            np.concatenate(
                [
                    np.arange(self.offsets[i], self.offsets[i] + self.slices_per_volume[i])
                    for i in pos
                ]
            )
            if pos
            else np.zeros(0, dtype=np.int64)
        )
        counts = tuple(self.slices_per_volume[i] for i in pos)
        offsets = (
            tuple(int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])) if pos else ()
        )
        return CacheData(
            path=self.path,
            images=np.asarray(self.images[rows]),
            labels=None if self.labels is None else np.asarray(self.labels[rows]),
            case_ids=tuple(self.case_ids[i] for i in pos),
            slices_per_volume=counts,
            offsets=offsets,
            geometries=tuple(self.geometries[i] for i in pos),
            has_label=tuple(self.has_label[i] for i in pos),
            case_index=np.repeat(np.arange(len(pos), dtype=np.int64), counts),
            slice_index=np.asarray(self.slice_index[rows], dtype=np.int64),
            partition=None if self.partition is None else np.asarray(self.partition[rows]),
            config=self.config,
            meta=dict(self.meta),
        )

    def slice_dataset(self, **kwargs: Any) -> Any:
        """Wrap the arrays in a :class:`~contrastlocal.data.slices.SliceDataset` (needs torch).

        Parameters
        ----------
        **kwargs
            Passed on (e.g. ``num_partitions``); ``volume_ids`` defaults to the integer case ids
            when every id is a number.

        Returns
        -------
        SliceDataset
            Dataset over `images`, `labels` and `slices_per_volume`.
        """
        from .slices import SliceDataset

        if "volume_ids" not in kwargs and all(c.isdigit() for c in self.case_ids):
            ids = [int(c) for c in self.case_ids]
            if len(set(ids)) == len(ids):
                kwargs["volume_ids"] = ids
        return SliceDataset(
            self.images, self.labels, slices_per_volume=list(self.slices_per_volume), **kwargs
        )


def _load_array(root: Path, name: str, mmap: Literal["r"] | None) -> Any:
    """Load the array file `name` of the cache `root` (memory-mapped with ``mmap="r"``)."""
    path = root / name
    if not path.is_file():
        msg = f"cache {os.fspath(root)!r} is incomplete: {name} is missing."
        raise FileNotFoundError(msg)
    return np.load(path, mmap_mode=mmap, allow_pickle=False)


def open_cache(path: str | os.PathLike[str], *, in_memory: bool = False) -> CacheData:
    """Open a complete cache.

    Parameters
    ----------
    path : path
        The cache folder (``<out>/<dataset>/<split>-<key>``).
    in_memory : bool
        Load the arrays into RAM instead of memory-mapping them read-only.

    Returns
    -------
    CacheData
        Arrays and index.

    Raises
    ------
    FileNotFoundError
        If the folder or its ``index.json`` / ``images.npy`` is missing (an unfinished cache).
    ValueError
        If the index and the arrays disagree or the format version is unknown.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from contrastlocal.data import Case
    >>> from contrastlocal.data.cache import CacheWriter, open_cache
    >>> from contrastlocal.data.preprocess import PreprocessConfig, preprocess_case
    >>> case = Case("a", np.ones((8, 8, 3)), np.zeros((8, 8, 3), np.uint8), (1.0, 1.0, 1.0))
    >>> cfg = PreprocessConfig(image_size=(8, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     writer = CacheWriter(Path(tmp) / "c", ["a"], config=cfg)
    ...     _ = writer.write_case("a", *preprocess_case(case, cfg))
    ...     data = open_cache(writer.finalize(), in_memory=True)
    >>> data.images.shape, data.case_ids, data.partition.tolist()
    ((3, 8, 8), ('a',), [0, 1, 2])
    """
    root = Path(path)
    if not root.is_dir():
        msg = f"cache folder {os.fspath(root)!r} does not exist."
        raise FileNotFoundError(msg)
    index_path = root / _INDEX
    if not index_path.is_file():
        msg = (
            f"cache {os.fspath(root)!r} is incomplete: {_INDEX} is missing "
            "(run `contrastlocal prepare` again to finish it)."
        )
        raise FileNotFoundError(msg)
    try:
        meta = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{os.fspath(index_path)!r} is not valid JSON: {err}."
        raise ValueError(msg) from None
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        msg = (
            f"cache {os.fspath(root)!r} has format version {meta.get('format_version')!r}; "
            f"expected {CACHE_FORMAT_VERSION}."
        )
        raise ValueError(msg)
    mmap: Literal["r"] | None = None if in_memory else "r"
    images = _load_array(root, _IMAGES, mmap)
    labels = None
    if meta.get("has_labels"):
        labels = _load_array(root, _LABELS, mmap)
    cases = meta["cases"]
    counts = tuple(int(c["num_slices"]) for c in cases)
    total = int(sum(counts))
    if images.shape[0] != total or images.dtype != np.float32:
        msg = (
            f"{os.fspath(root / _IMAGES)!r} must hold {total} float32 slices as the index says; "
            f"got shape {images.shape}, dtype {images.dtype}."
        )
        raise ValueError(msg)
    if labels is not None and (
        labels.shape != (total, *images.shape[-2:]) or labels.dtype != np.uint8
    ):
        msg = (
            f"{os.fspath(root / _LABELS)!r} must have shape {(total, *images.shape[-2:])} "
            f"uint8; got shape {labels.shape}, dtype {labels.dtype}."
        )
        raise ValueError(msg)
    slices = meta["slices"]
    partition = slices.get("partition")
    rest = {
        k: v for k, v in meta.items() if k not in ("cases", "slices", "config", "format_version")
    }
    return CacheData(
        path=root,
        images=images,
        labels=labels,
        case_ids=tuple(str(c["case_id"]) for c in cases),
        slices_per_volume=counts,
        offsets=tuple(int(c["offset"]) for c in cases),
        geometries=tuple(Geometry.from_dict(c["geometry"]) for c in cases),
        has_label=tuple(bool(c.get("has_label", True)) for c in cases),
        case_index=np.asarray(slices["case_index"], dtype=np.int64),
        slice_index=np.asarray(slices["slice_index"], dtype=np.int64),
        partition=None if partition is None else np.asarray(partition, dtype=np.int64),
        config=PreprocessConfig.from_dict(meta["config"]),
        meta=rest,
    )
