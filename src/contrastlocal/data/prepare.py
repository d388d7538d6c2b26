"""Pre-process a dataset into the slice cache: process pool, progress bar, resumable, idempotent.

:func:`prepare_dataset` reads a dataset in its as-distributed layout with the matching reader
(:mod:`contrastlocal.data.readers`), selects the cases of a split
(:mod:`contrastlocal.data.splits`), pre-processes each case in a worker process
(:func:`~contrastlocal.data.preprocess.preprocess_case`) and writes the cache
(:mod:`contrastlocal.data.cache`). Each finished case is stored at once, so a killed run resumes
where it stopped; a run over a complete cache does nothing.
:func:`prepare_cases` does the same for any reader-like object or a list of
:class:`~contrastlocal.data._records.Case` (e.g. synthetic volumes).

:func:`add_prepare_arguments` and :func:`run_prepare` provide ``contrastlocal prepare``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import numpy as np

from .._deps import optional, require
from .._lock import DirectoryLock
from ._records import Case
from .cache import (
    INDEX_NUM_PARTITIONS,
    CacheWriter,
    cache_os_error,
    cache_path,
    file_fingerprint,
)
from .preprocess import PREPROCESS_PRESETS, PreprocessConfig, preprocess_case
from .registry import PREPARABLE, get_dataset
from .splits import DatasetSplits, make_cityscapes_split, resolve_split

__all__ = [
    "DATASETS",
    "NONFINITE_POLICIES",
    "PrepareInterrupted",
    "ReaderLike",
    "add_prepare_arguments",
    "check_case_input",
    "prepare_cases",
    "prepare_dataset",
    "run_prepare",
]

#: Datasets ``prepare`` knows (those of the registry read from files).
DATASETS: tuple[str, ...] = PREPARABLE
#: What ``prepare`` does with NaN or infinite voxels: refuse the case (default) or set them to 0.
NONFINITE_POLICIES: tuple[str, ...] = ("error", "zero")
NonfinitePolicy = Literal["error", "zero"]


class PrepareInterrupted(KeyboardInterrupt):
    """``prepare`` was stopped by SIGINT or SIGTERM; every finished case is kept.

    A :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it too; a command line
    exits with ``128 + signum``.

    Parameters
    ----------
    message : str
        One line: the signal, the cases kept and where.
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``).

    Examples
    --------
    >>> err = PrepareInterrupted("prepare stopped by SIGTERM", signal.SIGTERM)
    >>> isinstance(err, KeyboardInterrupt), 128 + err.signum
    (True, 143)
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class _Stop(KeyboardInterrupt):
    """Raised by the signal handlers of :func:`_stop_on_signals` in the main thread."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class ReaderLike(Protocol):
    """What :func:`prepare_cases` needs from a reader: case ids and one case at a time.

    Every reader of :mod:`contrastlocal.data.readers` satisfies it, and so does any object with
    a ``case_ids`` sequence and a ``read(case_id)`` method returning a
    :class:`~contrastlocal.data.Case`.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.data import Case
    >>> class InMemory:
    ...     case_ids = ["a"]
    ...     def read(self, case_id):
    ...         return Case(case_id, np.zeros((4, 4, 2), np.float32), None, (1.0, 1.0, 1.0))
    >>> reader: ReaderLike = InMemory()
    >>> reader.read("a").image.shape
    (4, 4, 2)
    """

    @property
    def case_ids(self) -> Sequence[str]:
        """Ids of the cases found."""
        ...

    def read(self, case_id: str) -> Case:
        """Read one case.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            The case as read from disk, before pre-processing.
        """
        ...


class _CaseList:
    """A reader over cases already in memory."""

    def __init__(self, cases: Sequence[Case]) -> None:
        self._cases = {c.case_id: c for c in cases}
        if len(self._cases) != len(cases):
            msg = "`source` holds several cases with the same `case_id`."
            raise ValueError(msg)

    @property
    def case_ids(self) -> list[str]:
        return list(self._cases)

    def read(self, case_id: str) -> Case:
        return self._cases[case_id]


class _NamedReader:
    """Picklable recipe for a dataset reader; builds it lazily in each process.

    With several ``folders`` (reader splits, e.g. Cityscapes ``train`` and ``val``) it reads
    their union; case ids must then be unique across the folders.
    """

    def __init__(
        self, name: str, root: str, options: dict[str, Any], folders: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.root = root
        self.options = options
        self.folders = tuple(folders)
        self._readers: list[Any] | None = None
        self._owner: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": self.root,
            "options": self.options,
            "folders": self.folders,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["name"], state["root"], state["options"], state["folders"]
        )

    def _get(self) -> list[Any]:
        if self._readers is None:
            readers: Any = importlib.import_module("contrastlocal.data.readers")
            if self.folders:
                built = [
                    readers.get_reader(self.name, self.root, **{**self.options, "split": f})
                    for f in self.folders
                ]
            else:
                built = [readers.get_reader(self.name, self.root, **self.options)]
            owner: dict[str, Any] = {}
            for r in built:
                for cid in r.case_ids:
                    if str(cid) in owner:
                        msg = (
                            f"case id {cid!r} occurs in several folders of {self.root!r} "
                            f"({', '.join(self.folders)})."
                        )
                        raise ValueError(msg)
                    owner[str(cid)] = r
            self._readers, self._owner = built, owner
        return self._readers

    @property
    def case_ids(self) -> list[str]:
        self._get()
        return list(self._owner)

    @property
    def origin(self) -> dict[str, Any]:
        """What the cases are read from, recorded in the cache (the folder, fully resolved)."""
        return {"reader": self.name, "root": os.path.realpath(self.root)}

    def read(self, case_id: str) -> Case:
        self._get()
        if case_id not in self._owner:
            msg = f"`case_id` {case_id!r} is not a case of {self.name!r} under {self.root!r}."
            raise ValueError(msg)
        case: Case = self._owner[case_id].read(case_id)
        return case


# ---- worker side -------------------------------------------------------------------------------

_WORKER_SOURCE: Any = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the process that started it dies (also on ``kill -9``)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:  # everywhere else, and if the parent died before prctl took effect
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="contrastlocal-parent-watch", daemon=True).start()


def _init_worker(source: Any, threads: int, parent: int | None = None) -> None:
    global _WORKER_SOURCE
    # Ctrl-C reaches the whole process group: the driver stops the workers, they do not react
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    _WORKER_SOURCE = source
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        sitk: Any = importlib.import_module("SimpleITK")
    except ImportError:  # pragma: no cover - medical extra missing
        return
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _source_file(case: Case) -> str:
    path = case.meta.get("image_path") if isinstance(case.meta, dict) else None
    return f" ({path})" if path else ""


def _read_case(source: Any, case_id: str) -> Case:
    """Read one case; any failure (and a complex image the reader would cast) names the case."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        try:
            case: Case = source.read(case_id)
        except np.exceptions.ComplexWarning:
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            try:  # read again, only to name the file in the message
                where = _source_file(source.read(case_id))
            except Exception:
                where = ""
            msg = (
                f"case {case_id!r}{where}: the image is complex-valued; reading it would drop "
                "the imaginary part. Store the magnitude (a real-valued image) instead."
            )
            raise ValueError(msg) from None
        except (ValueError, TypeError) as err:
            if case_id in str(err):
                raise
            root = getattr(source, "root", None)
            under = f" (under {root!r})" if root else ""
            msg = f"case {case_id!r}{under}: {err}"
            if "Cannot cast array data from dtype([" in str(err):
                msg = (
                    f"case {case_id!r}{under}: the image has structured voxels (e.g. RGB stored in "
                    f"NIfTI); a grey-level image is needed ({err})."
                )
            try:
                named = type(err)(msg)
            except Exception:  # an error type with other constructor arguments
                named = ValueError(msg)
            raise named from err
    if str(case.case_id) != case_id:
        case = replace(case, case_id=case_id)
    return case


def check_case_input(case: Case, nonfinite: NonfinitePolicy = "error") -> Case:
    """Refuse image data that pre-processing cannot use, naming the case and its file.

    Parameters
    ----------
    case : Case
        As read.
    nonfinite : {"error", "zero"}
        NaN or infinite voxels: refuse the case (default) or set them to 0 (before the
        normalisation, whose percentiles then count them as 0).

    Returns
    -------
    Case
        `case`, or a copy with non-finite voxels set to 0 under ``nonfinite="zero"``.

    Raises
    ------
    ValueError
        For a complex-valued, structured (e.g. RGB NIfTI), boolean or non-numeric image, or
        non-finite voxels under ``nonfinite="error"``.

    Examples
    --------
    >>> case = Case("007", np.array([[[1.0, np.nan]]]), None, (1.0, 1.0, 1.0))
    >>> check_case_input(case)
    Traceback (most recent call last):
    ...
    ValueError: case '007': 1 of 2 voxels are NaN or infinite; fix the file, or prepare with `--nonfinite zero` to set them to 0.
    >>> check_case_input(case, "zero").image.tolist()
    [[[1.0, 0.0]]]
    """  # noqa: E501
    if nonfinite not in NONFINITE_POLICIES:
        msg = f"`nonfinite` must be one of {list(NONFINITE_POLICIES)}; got {nonfinite!r}."
        raise ValueError(msg)
    image = np.asarray(case.image)
    where = f"case {case.case_id!r}{_source_file(case)}"
    kind = image.dtype.kind
    if kind == "c":
        msg = (
            f"{where}: the image is complex-valued (dtype {image.dtype}); store its magnitude "
            "(a real-valued image) instead."
        )
        raise ValueError(msg)
    if kind == "V":
        msg = (
            f"{where}: the image has structured voxels (dtype {image.dtype}, e.g. RGB stored "
            "in NIfTI); a grey-level image is needed."
        )
        raise ValueError(msg)
    if kind not in "iuf":
        msg = f"{where}: unusable image dtype {image.dtype}; a real-valued numeric image is needed."
        raise ValueError(msg)
    if kind == "f":
        bad = ~np.isfinite(image)
        count = int(bad.sum())
        if count:
            if nonfinite == "error":
                msg = (
                    f"{where}: {count} of {image.size} voxels are NaN or infinite; fix the file, "
                    "or prepare with `--nonfinite zero` to set them to 0."
                )
                raise ValueError(msg)
            case = replace(case, image=np.where(bad, 0, image).astype(image.dtype))
    return case


def _process_one(
    source: Any,
    writer: CacheWriter,
    case_id: str,
    config: PreprocessConfig,
    nonfinite: NonfinitePolicy = "error",
) -> tuple[str, int]:
    case = check_case_input(_read_case(source, case_id), nonfinite)
    meta = case.meta if isinstance(case.meta, dict) else {}
    files = [
        file_fingerprint(meta[k])
        for k in ("image_path", "label_path")
        if meta.get(k) and Path(meta[k]).is_file()
    ]
    try:
        image, label, geometry = preprocess_case(case, config)
    except ValueError as err:
        if case_id in str(err):
            raise
        msg = f"case {case_id!r}{_source_file(case)}: {err}"
        raise ValueError(msg) from err
    writer.write_case(case_id, image, label, geometry, files=files)
    return case_id, int(image.shape[0])


def _worker_task(
    writer: CacheWriter, case_id: str, config: PreprocessConfig, nonfinite: NonfinitePolicy
) -> tuple[str, int]:
    return _process_one(_WORKER_SOURCE, writer, case_id, config, nonfinite)


# ---- driver --------------------------------------------------------------------------------------


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    tqdm_auto = optional("tqdm.auto", extra="torch", purpose="the progress bar of prepare")
    if tqdm_auto is None:
        return _NoBar()
    return tqdm_auto.tqdm(total=total, initial=initial, desc=desc, unit="case")


def _require_for(config: PreprocessConfig, dataset: str | None) -> None:
    """Fail at the start, naming the extra, if prepare would need a missing package later."""
    needed: list[str] = []
    if dataset in ("acdc", "prostate", "mmwhs"):
        needed.append("nibabel")
    if dataset == "cityscapes":
        needed.append("PIL")
    if config.target_spacing is not None:
        needed.append("scipy")
    if config.n4 != "none":
        needed.append("SimpleITK")
    if needed:
        what = f"prepare {dataset}" if dataset else "prepare"
        require(needed, extra="medical", purpose=what)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`_Stop` in the main thread while preparing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C must not interrupt the stopping of the workers
            return
        stopping = True
        raise _Stop(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _lock_cache(writer: CacheWriter, dataset: str, split: str) -> DirectoryLock | None:
    """Lock the cache folder; None for a complete cache on a read-only or foreign file system."""
    lock = DirectoryLock(writer.path, purpose=f"prepare {dataset}/{split}")
    try:
        return lock.acquire()
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and writer.is_complete():
            return None  # nothing to write: reading a read-only cache needs no lock
        raise cache_os_error(err, lock.path) from err


def _check_out(out: str | os.PathLike[str]) -> None:
    root = Path(out)
    if root.exists() and not root.is_dir():
        msg = f"`out` {os.fspath(root)!r} names an existing file; it must be a folder."
        raise NotADirectoryError(msg)


def prepare_cases(
    source: ReaderLike | Sequence[Case],
    out: str | os.PathLike[str],
    *,
    dataset: str,
    split: str = "all",
    case_ids: Sequence[str] | None = None,
    config: PreprocessConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    nonfinite: NonfinitePolicy = "error",
) -> Path:
    """Pre-process cases from a reader (or a list of cases) into a cache; resumable.

    Parameters
    ----------
    source : reader-like or sequence of Case
        An object with ``case_ids`` and ``read(case_id) -> Case`` (picklable when
        ``workers > 1``), or the cases themselves.
    out : path
        Root folder of the caches.
    dataset : str
        Dataset name (first level under `out`).
    split : str
        Split name (in the cache folder name).
    case_ids : sequence of str, optional
        Cases to process, in cache order; default all of ``source.case_ids``.
    config : PreprocessConfig, optional
        Settings; default the preset of `dataset` if there is one, else ``PreprocessConfig()``.
    workers : int, optional
        Worker processes; default ``min(os.cpu_count(), cases to do)``. ``0`` or ``1`` process
        the cases in this process.
    progress : bool
        Show a progress bar and say what was done on stderr.
    extra : dict, optional
        Other settings that change the content (keyed into the folder name and recorded).
    nonfinite : {"error", "zero"}
        NaN or infinite voxels: refuse the case naming it (default), or set them to 0 (keyed
        into the folder name); see :func:`check_case_input`.

    Returns
    -------
    Path
        The complete cache folder, ready for :func:`~contrastlocal.data.cache.open_cache`.

    Raises
    ------
    ValueError
        If no case is selected, or a case fails to read or process (the message names the
        case; finished cases are kept).
    contrastlocal._lock.LockHeldError
        If another live process is writing the same cache (one line naming it).
    contrastlocal.data.cache.CacheWriteError
        If the disk is full (naming the space needed and free), read-only or not writable.
    NotADirectoryError
        If `out` names an existing file.
    PrepareInterrupted
        On SIGINT or SIGTERM: the workers are stopped at once, finished cases are kept.

    Notes
    -----
    A cache is reused only if it was made from the same source: for a dataset reader the
    folder read, and for every case the files it was read from (size and modification time,
    their SHA-256 when these differ). Otherwise prepare says what changed and recomputes.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.cache import open_cache
    >>> from contrastlocal.data.synthetic import make_synthetic_dataset
    >>> cases = make_synthetic_dataset(2, seed=0, shape=(32, 32))
    >>> cfg = PreprocessConfig(image_size=(32, 32))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = prepare_cases(
    ...         cases, tmp, dataset="synthetic", config=cfg, workers=0, progress=False
    ...     )
    ...     open_cache(path).num_volumes
    2
    """
    reader: Any = _CaseList(list(source)) if isinstance(source, (list, tuple)) else source
    if config is None:
        config = PREPROCESS_PRESETS.get(dataset, PreprocessConfig())
    if nonfinite not in NONFINITE_POLICIES:
        msg = f"`nonfinite` must be one of {list(NONFINITE_POLICIES)}; got {nonfinite!r}."
        raise ValueError(msg)
    if workers is not None and int(workers) < 0:
        msg = f"`workers` must be >= 0; got {workers}."
        raise ValueError(msg)
    _require_for(config, dataset if isinstance(reader, _NamedReader) else None)
    ids = [str(c) for c in (reader.case_ids if case_ids is None else case_ids)]
    if not ids:
        msg = f"no cases to prepare for {dataset!r} split {split!r}."
        raise ValueError(msg)
    _check_out(out)
    if nonfinite != "error":
        extra = {**(extra or {}), "nonfinite": nonfinite}
    path = cache_path(out, dataset, split, config, extra)
    origin = reader.origin if isinstance(reader, _NamedReader) else None
    writer = CacheWriter(
        path, ids, config=config, dataset=dataset, split=split, extra=extra, source=origin
    )
    lock = _lock_cache(writer, dataset, split)
    try:
        with _stop_on_signals():
            _prepare_locked(reader, writer, config, workers, progress, nonfinite)
    except _Stop as stop:
        name = signal.Signals(stop.signum).name
        kept = len(writer.done_case_ids())
        msg = (
            f"prepare stopped by {name}: {kept} of {len(ids)} cases are kept in "
            f"{os.fspath(path)!r}; run it again to resume."
        )
        raise PrepareInterrupted(msg, stop.signum) from None
    finally:
        if lock is not None:
            lock.release()
    return path


def _prepare_locked(
    reader: Any,
    writer: CacheWriter,
    config: PreprocessConfig,
    workers: int | None,
    progress: bool,
    nonfinite: NonfinitePolicy,
) -> None:
    path, ids = writer.path, writer.case_ids
    if writer.is_complete():
        _say(progress, f"cache {path} is up to date ({len(ids)} cases); nothing to do.")
        return
    stale = writer.stale_reason()
    if stale is not None:
        _say(progress, f"cache {path} is out of date: {stale}; recomputing.")
        writer.invalidate()
    writer.remove_temporary_files()
    done = set(writer.done_case_ids())
    redo = [c for c in ids if c not in done and writer.part_path(c).is_file()]
    if redo:
        shown = ", ".join(repr(c) for c in redo[:5]) + (", ..." if len(redo) > 5 else "")
        why = writer.part_problem(redo[0])
        _say(progress, f"redoing {len(redo)} case(s) whose source changed ({shown}: {why}).")
    todo = [c for c in ids if c not in done]
    if done:
        _say(progress, f"resuming {path}: {len(done)} of {len(ids)} cases already processed.")
    n_workers = min(os.cpu_count() or 1, len(todo)) if workers is None else int(workers)
    bar = _progress_bar(len(ids), len(done), f"prepare {writer.dataset}/{writer.split}", progress)
    try:
        if n_workers <= 1 or len(todo) <= 1:
            for cid in todo:
                _process_one(reader, writer, cid, config, nonfinite)
                bar.update(1)
        else:
            _run_pool(reader, writer, todo, config, n_workers, bar.update, nonfinite)
    finally:
        bar.close()
    writer.finalize()
    _say_thin_volumes(writer, progress)
    _say(progress, f"wrote {path} ({len(ids)} cases).")


def _say_thin_volumes(writer: CacheWriter, progress: bool) -> None:
    """Name (by case id) the volumes too thin for the global stage's partitions."""
    from .cache import open_cache

    data = open_cache(writer.path)
    if data.partition is None:
        return
    thin = [
        f"{cid!r} ({n} slice{'s' if n != 1 else ''})"
        for cid, n in zip(data.case_ids, data.slices_per_volume, strict=True)
        if n < INDEX_NUM_PARTITIONS
    ]
    if thin:
        shown = ", ".join(thin[:8]) + (", ..." if len(thin) > 8 else "")
        _say(
            progress,
            f"note: case(s) {shown} have fewer than {INDEX_NUM_PARTITIONS} slices; the global "
            f"contrastive stage (S = {INDEX_NUM_PARTITIONS} partitions per volume) cannot use "
            "them.",
        )


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: queued tasks dropped, running workers terminated (then killed)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.monotonic() + 1.0
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
    pool.shutdown(wait=True)


def _run_pool(
    reader: Any,
    writer: CacheWriter,
    todo: Sequence[str],
    config: PreprocessConfig,
    n_workers: int,
    on_done: Callable[[int], Any],
    nonfinite: NonfinitePolicy = "error",
) -> None:
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(reader, threads, os.getpid()),
    )
    try:
        futures: dict[Future[tuple[str, int]], str] = {
            pool.submit(_worker_task, writer, cid, config, nonfinite): cid for cid in todo
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for fut in finished:
                err = fut.exception()
                if err is not None:
                    raise err
                on_done(1)
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _reader_options(options: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (options or {}).items() if v is not None}


def prepare_dataset(
    name: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "all",
    config: PreprocessConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    reader_options: dict[str, Any] | None = None,
    seed: int = 0,
    nonfinite: NonfinitePolicy = "error",
) -> Path:
    """Read, pre-process and cache one split of a dataset as distributed.

    Parameters
    ----------
    name : {"acdc", "prostate", "mmwhs", "cityscapes"}
        Dataset.
    root : path
        The dataset folder as distributed (see :mod:`contrastlocal.data.readers`).
    out : path
        Root folder of the caches; the cache goes to ``<out>/<name>/<split>-<key>``.
    split : str
        ``"all"`` (every case found), ``"pretrain"``, ``"test"``, ``"pretrain_val"``,
        ``"trall"``, ``"tr{N}_c{K}"`` or ``"tr{N}_c{K}_val"`` (see
        :func:`~contrastlocal.data.splits.resolve_split`); for Cityscapes the split of
        :func:`~contrastlocal.data.splits.make_cityscapes_split` over the images found.
    config : PreprocessConfig, optional
        Settings; default ``PREPROCESS_PRESETS[name]``.
    workers : int, optional
        Worker processes (default: one per CPU, at most one per case; 0 or 1: in-process).
    progress : bool
        Show a progress bar and messages on stderr.
    reader_options : dict, optional
        Keyword arguments of the reader (part of the cache key), e.g. ``{"split": "testing"}``
        to read ACDC's testing patients or ``{"frames": ("ED", "ES")}``. For Cityscapes without
        a reader ``split`` the ``train`` and ``val`` folders are read together (3475 images).
    seed : int
        Seed of the Cityscapes split (part of the cache key for Cityscapes).
    nonfinite : {"error", "zero"}
        NaN or infinite voxels: refuse the case (default) or set them to 0 (opt-in, keyed into
        the cache folder name).

    Returns
    -------
    Path
        The complete cache folder.

    Raises
    ------
    ValueError
        For an unknown dataset or split, split ids missing from the folder, or a case that fails
        to read or holds unusable voxels (the message names the case and the file).
    FileNotFoundError
        If `root` does not exist.
    contrastlocal._deps.MissingDependencyError
        At the start, if a package the dataset or settings need is missing (naming the extra).

    See :func:`prepare_cases` for the other errors (lock held, disk full, interrupted).

    Notes
    -----
    Resumable and idempotent: finished cases are stored one by one, a rerun after a kill
    processes only the rest, and a rerun over a complete cache returns at once.

    Examples
    --------
    >>> prepare_dataset("acdc", "ACDC/database", "cache", split="pretrain")  # doctest: +SKIP
    PosixPath('cache/acdc/pretrain-...')
    """
    if name not in DATASETS:
        msg = f"`name` must be one of {list(DATASETS)}; got {name!r}."
        raise ValueError(msg)
    _require_for(config if config is not None else PREPROCESS_PRESETS[name], name)
    root_path = Path(root)
    if not root_path.is_dir():
        msg = f"dataset folder {os.fspath(root_path)!r} does not exist or is not a folder."
        raise FileNotFoundError(msg)
    options = _reader_options(reader_options)
    # Cityscapes: the splits are drawn from the train + val folders together
    folders = ("train", "val") if name == "cityscapes" and "split" not in options else ()
    reader = _NamedReader(name, os.fspath(root_path), options, folders)
    available = reader.case_ids
    splits: DatasetSplits | None = None
    extra: dict[str, Any] = dict(options)
    if name == "cityscapes" and split != "all":
        splits = make_cityscapes_split(available, seed=seed)
        extra["split_seed"] = seed
    ids = resolve_split(name, split, available, splits=splits)
    return prepare_cases(
        reader,
        out,
        dataset=name,
        split=split,
        case_ids=ids,
        config=config if config is not None else PREPROCESS_PRESETS[name],
        workers=workers,
        progress=progress,
        extra=extra or None,
        nonfinite=nonfinite,
    )


# ---- command line ----------------------------------------------------------------------------


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``contrastlocal prepare`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub-command) parser.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_prepare_arguments(p)
    >>> args = p.parse_args(["acdc", "--data", "ACDC", "--out", "cache", "--n4", "none"])
    >>> args.dataset, args.data, args.n4, args.split
    ('acdc', PosixPath('ACDC'), 'none', 'all')
    """
    parser.add_argument("dataset", choices=DATASETS, help="dataset to pre-process")
    folder = parser.add_mutually_exclusive_group(required=True)
    folder.add_argument(
        "--data", type=Path, metavar="PATH", help="dataset folder as distributed"
    )
    folder.add_argument(
        "--root", dest="data", type=Path, action=_DeprecatedAlias, help=argparse.SUPPRESS
    )
    parser.add_argument("--out", required=True, type=Path, help="root folder of the caches")
    parser.add_argument(
        "--split",
        default="all",
        help="all (default), pretrain, test, pretrain_val, trall, tr{N}_c{K} or tr{N}_c{K}_val",
    )
    parser.add_argument(
        "--n4",
        choices=("none", "default", "legacy"),
        default=None,
        help="N4 bias correction (default: the dataset preset; ACDC default, others none); "
        "legacy = the original's slow settings",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per CPU)"
    )
    parser.add_argument(
        "--reader-split",
        default=None,
        help="folder of the release to read (the reader's split: ACDC training|testing, "
        "prostate training|test, MM-WHS train|test, Cityscapes train|val|test; default: the "
        "labelled training folder, for Cityscapes train + val)",
    )
    parser.add_argument(
        "--nonfinite",
        choices=NONFINITE_POLICIES,
        default="error",
        help="NaN or infinite voxels: error (default: refuse the case, naming it) or zero "
        "(set them to 0; a separate cache)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores like the new one, warns once on stderr."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use --data "
            "(the same word as the other commands)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``contrastlocal prepare`` with parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser set up by :func:`add_prepare_arguments`.

    Returns
    -------
    int
        0 on success (errors are raised: ``ValueError`` / ``FileNotFoundError``).

    Examples
    --------
    >>> import argparse, tempfile
    >>> from contrastlocal.data.fixtures import write_acdc_fixture
    >>> parser = argparse.ArgumentParser()
    >>> add_prepare_arguments(parser)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_acdc_fixture(f"{tmp}/acdc", num_patients=2)
    ...     args = parser.parse_args(["acdc", "--data", str(root), "--out", f"{tmp}/cache",
    ...                               "--n4", "none", "--workers", "0", "--no-progress"])
    ...     status = run_prepare(args)  # doctest: +ELLIPSIS
    /.../acdc/all-...
    >>> status
    0
    """
    config = get_dataset(args.dataset).preprocess_config(n4=getattr(args, "n4", None))
    path = prepare_dataset(
        args.dataset,
        args.data,
        args.out,
        split=args.split,
        config=config,
        workers=args.workers,
        progress=not getattr(args, "no_progress", False),
        reader_options={"split": getattr(args, "reader_split", None)},
        nonfinite=getattr(args, "nonfinite", "error"),
    )
    print(path)
    return 0
