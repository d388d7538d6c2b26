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
import importlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ._records import Case
from .cache import CacheWriter, cache_path
from .preprocess import PREPROCESS_PRESETS, PreprocessConfig, preprocess_case
from .registry import PREPARABLE, get_dataset
from .splits import DatasetSplits, make_cityscapes_split, resolve_split

__all__ = [
    "DATASETS",
    "ReaderLike",
    "add_prepare_arguments",
    "prepare_cases",
    "prepare_dataset",
    "run_prepare",
]

#: Datasets ``prepare`` knows (those of the registry read from files).
DATASETS: tuple[str, ...] = PREPARABLE


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

    def read(self, case_id: str) -> Case:
        self._get()
        if case_id not in self._owner:
            msg = f"`case_id` {case_id!r} is not a case of {self.name!r} under {self.root!r}."
            raise ValueError(msg)
        case: Case = self._owner[case_id].read(case_id)
        return case


# ---- worker side -------------------------------------------------------------------------------

_WORKER_SOURCE: Any = None


def _init_worker(source: Any, threads: int) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        sitk: Any = importlib.import_module("SimpleITK")
    except ImportError:  # pragma: no cover - medical extra missing
        return
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _process_one(
    source: Any, writer: CacheWriter, case_id: str, config: PreprocessConfig
) -> tuple[str, int]:
    case = source.read(case_id)
    if str(case.case_id) != case_id:
        case = replace(case, case_id=case_id)
    image, label, geometry = preprocess_case(case, config)
    writer.write_case(case_id, image, label, geometry)
    return case_id, int(image.shape[0])


def _worker_task(writer: CacheWriter, case_id: str, config: PreprocessConfig) -> tuple[str, int]:
    return _process_one(_WORKER_SOURCE, writer, case_id, config)


# ---- driver --------------------------------------------------------------------------------------


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="case", disable=not enabled)


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

    Returns
    -------
    Path
        The complete cache folder, ready for :func:`~contrastlocal.data.cache.open_cache`.

    Raises
    ------
    ValueError
        If no case is selected, or a case fails to read or process (finished cases are kept).

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
    ids = [str(c) for c in (reader.case_ids if case_ids is None else case_ids)]
    if not ids:
        msg = f"no cases to prepare for {dataset!r} split {split!r}."
        raise ValueError(msg)
    path = cache_path(out, dataset, split, config, extra)
    writer = CacheWriter(path, ids, config=config, dataset=dataset, split=split, extra=extra)
    if writer.is_complete():
        _say(progress, f"cache {path} is up to date ({len(ids)} cases); nothing to do.")
        return path
    done = set(writer.done_case_ids())
    todo = [c for c in ids if c not in done]
    if done:
        _say(progress, f"resuming {path}: {len(done)} of {len(ids)} cases already processed.")
    path.mkdir(parents=True, exist_ok=True)
    n_workers = min(os.cpu_count() or 1, len(todo)) if workers is None else int(workers)
    if n_workers < 0:
        msg = f"`workers` must be >= 0; got {workers}."
        raise ValueError(msg)
    bar = _progress_bar(len(ids), len(done), f"prepare {dataset}/{split}", progress)
    try:
        if n_workers <= 1 or len(todo) <= 1:
            for cid in todo:
                _process_one(reader, writer, cid, config)
                bar.update(1)
        else:
            _run_pool(reader, writer, todo, config, n_workers, bar.update)
    finally:
        bar.close()
    writer.finalize()
    _say(progress, f"wrote {path} ({len(ids)} cases).")
    return path


def _run_pool(
    reader: Any,
    writer: CacheWriter,
    todo: Sequence[str],
    config: PreprocessConfig,
    n_workers: int,
    on_done: Callable[[int], Any],
) -> None:
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=n_workers, mp_context=ctx, initializer=_init_worker, initargs=(reader, threads)
    ) as pool:
        futures: dict[Future[tuple[str, int]], str] = {
            pool.submit(_worker_task, writer, cid, config): cid for cid in todo
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in finished:
                err = fut.exception()
                if err is not None:
                    for other in pending:
                        other.cancel()
                    raise err
                on_done(1)


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

    Returns
    -------
    Path
        The complete cache folder.

    Raises
    ------
    ValueError
        For an unknown dataset or split, split ids missing from the folder, or a case that fails
        to read (the reader's message names the file).
    FileNotFoundError
        If `root` does not exist.

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
    )
    print(path)
    return 0
