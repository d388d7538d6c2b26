"""prepare under hostile conditions (issue 18): changed sources, concurrent writers, bad voxels,
full and read-only disks, signals, missing optional packages. Real files, processes and signals."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("nibabel")

import nibabel as nib

from contrastlocal._deps import MissingDependencyError, MissingOptionalWarning
from contrastlocal._lock import LOCK_NAME, LockHeldError
from contrastlocal.data._records import Case
from contrastlocal.data.cache import CacheWriteError, open_cache
from contrastlocal.data.fixtures import write_acdc_fixture
from contrastlocal.data.prepare import prepare_cases, prepare_dataset
from contrastlocal.data.preprocess import PreprocessConfig

from .._system import tmpfs

CFG = PreprocessConfig(image_size=(24, 24))
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cases(n=5, seed=0, shape=(20, 22), slices=None):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = slices or 2 + i % 3
        out.append(
            Case(
                f"{i:03d}",
                rng.normal(size=(*shape, z)),
                rng.integers(0, 4, size=(*shape, z)).astype(np.uint8),
                (1.0, 1.0, 4.0),
            )
        )
    return out


class CountingReader:
    def __init__(self, cases):
        self._cases = {c.case_id: c for c in cases}
        self.reads: list[str] = []

    @property
    def case_ids(self):
        return list(self._cases)

    def read(self, case_id):
        self.reads.append(case_id)
        return self._cases[case_id]


def _acdc_config():
    return PreprocessConfig(n4="none", image_size=(24, 24))


# ---- case 1: the cache is keyed by the source files -----------------------------------------


def test_cache_from_another_folder_with_the_same_case_ids_is_recomputed(tmp_path, capsys):
    root_a = write_acdc_fixture(tmp_path / "a", num_patients=2, num_testing=0, seed=1)
    root_b = write_acdc_fixture(tmp_path / "b", num_patients=2, num_testing=0, seed=2)
    out = tmp_path / "cache"
    path_a = prepare_dataset("acdc", root_a, out, config=_acdc_config(), workers=0)
    images_a = np.array(open_cache(path_a).images)
    capsys.readouterr()
    path_b = prepare_dataset("acdc", root_b, out, config=_acdc_config(), workers=0)
    err = capsys.readouterr().err
    assert "up to date" not in err
    assert "out of date: the source changed" in err
    assert os.path.realpath(root_b) in err
    data = open_cache(path_b)
    assert data.meta["source"]["root"] == os.path.realpath(root_b)
    assert not np.array_equal(np.asarray(data.images), images_a)
    # the same as a cache made from folder B alone
    fresh = prepare_dataset("acdc", root_b, tmp_path / "fresh", config=_acdc_config(), workers=0)
    np.testing.assert_array_equal(np.asarray(data.images), np.asarray(open_cache(fresh).images))
    # up to date now, and again out of date once a source file changes in place
    capsys.readouterr()
    prepare_dataset("acdc", root_b, out, config=_acdc_config(), workers=0)
    assert "up to date" in capsys.readouterr().err
    src = Path(json.loads((path_b / "index.json").read_text())["cases"][1]["files"][0]["path"])
    img = nib.load(src)
    arr = np.asarray(img.dataobj).astype(np.float32) * 2 + 1
    nib.save(nib.Nifti1Image(arr, img.affine), src)
    prepare_dataset("acdc", root_b, out, config=_acdc_config(), workers=0)
    err = capsys.readouterr().err
    assert f"source file {str(src)!r} changed" in err
    assert "case '002'" in err


def test_parts_from_another_source_are_not_resumed(tmp_path, capsys):
    root_a = write_acdc_fixture(tmp_path / "a", num_patients=2, num_testing=0, seed=1)
    root_b = write_acdc_fixture(tmp_path / "b", num_patients=2, num_testing=0, seed=2)
    out = tmp_path / "cache"
    path = prepare_dataset("acdc", root_a, out, config=_acdc_config(), workers=0)
    (path / "index.json").unlink()  # as if killed before the end: parts of folder A remain
    (path / "parts").mkdir(exist_ok=True)
    from contrastlocal.data.cache import CacheWriter
    from contrastlocal.data.prepare import _NamedReader, _process_one

    reader = _NamedReader("acdc", os.fspath(root_a), {})
    writer = CacheWriter(path, ["001", "002"], config=_acdc_config(), source=reader.origin)
    _process_one(reader, writer, "001", _acdc_config())
    capsys.readouterr()
    prepare_dataset("acdc", root_b, out, config=_acdc_config(), workers=0)
    err = capsys.readouterr().err
    assert "resuming" not in err
    assert "source changed" in err
    fresh = prepare_dataset("acdc", root_b, tmp_path / "fresh", config=_acdc_config(), workers=0)
    np.testing.assert_array_equal(
        np.asarray(open_cache(path).images), np.asarray(open_cache(fresh).images)
    )


# ---- case 4: two prepares into one cache ------------------------------------------------------

_SLOW = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from contrastlocal.data._records import Case
    from contrastlocal.data.prepare import PrepareInterrupted, prepare_cases
    from contrastlocal.data.preprocess import PreprocessConfig

    class SlowReader:
        def __init__(self, cases, delay):
            self._cases = {c.case_id: c for c in cases}
            self.delay = delay
        @property
        def case_ids(self):
            return list(self._cases)
        def read(self, case_id):
            time.sleep(self.delay)
            return self._cases[case_id]

    if __name__ == "__main__":
        out, n, workers, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        rng = np.random.default_rng(0)
        cases = [
            Case(f"{i:03d}", rng.normal(size=(20, 22, 2 + i % 3)),
                 rng.integers(0, 4, size=(20, 22, 2 + i % 3)).astype(np.uint8), (1.0, 1.0, 4.0))
            for i in range(n)
        ]
        try:
            prepare_cases(SlowReader(cases, delay), out, dataset="toy",
                          config=PreprocessConfig(image_size=(24, 24)), workers=workers,
                          progress=False)
        except PrepareInterrupted as err:
            print(err, file=sys.stderr)
            sys.exit(128 + err.signum)
    """
)


def _start_slow(tmp_path, out, n, workers, delay):
    script = tmp_path / "slow_prepare.py"
    script.write_text(_SLOW)
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(n), str(workers), str(delay)],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_parts(out: Path, proc, count=1, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list(out.glob("toy/*/parts/*.npz"))
        if len(parts) >= count:
            return parts
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    msg = "no case was finished in time"
    raise AssertionError(msg)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _running(p)]


@contextlib.contextmanager
def _reaped(proc):
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_second_prepare_into_the_same_cache_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with _reaped(_start_slow(tmp_path, out, 6, 0, 0.5)) as proc:
        parts = _wait_parts(out, proc)
        with pytest.raises(LockHeldError) as info:
            prepare_cases(_cases(6), out, dataset="toy", config=CFG, workers=0, progress=False)
        message = str(info.value)
        assert "\n" not in message
        assert f"PID {proc.pid}" in message
        assert "prepare toy/all" in message
        assert proc.wait(timeout=120) == 0
    path = parts[0].parent.parent
    assert not (path / "parts").exists()
    assert not (path / LOCK_NAME).exists()
    assert open_cache(path).num_volumes == 6


# ---- cases 5 and 9: input checks name the case ------------------------------------------------


def test_nonfinite_voxels_are_refused_naming_the_case_and_file(tmp_path):
    root = write_acdc_fixture(tmp_path / "a", num_patients=2, num_testing=0)
    image = root / "training" / "patient002" / "patient002_frame03.nii.gz"
    img = nib.load(image)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[1, 2, 0] = np.nan
    arr[3, 3, 1] = np.inf
    nib.save(nib.Nifti1Image(arr, img.affine), image)
    out = tmp_path / "cache"
    with pytest.raises(ValueError, match="NaN or infinite") as info:
        prepare_dataset("acdc", root, out, config=_acdc_config(), workers=0, progress=False)
    message = str(info.value)
    assert "case '002'" in message
    assert str(image) in message
    assert "2 of" in message
    assert "--nonfinite zero" in message
    path = prepare_dataset(
        "acdc", root, out, config=_acdc_config(), workers=0, progress=False, nonfinite="zero"
    )
    data = open_cache(path)
    assert np.isfinite(np.asarray(data.images)).all()
    assert data.meta["extra"]["nonfinite"] == "zero"


def test_nonfinite_voxels_in_memory_cases(tmp_path):
    cases = _cases(3)
    cases[1].image[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"case '001': 1 of \d+ voxels are NaN"):
        prepare_cases(cases, tmp_path, dataset="toy", config=CFG, workers=0, progress=False)
    with pytest.raises(ValueError, match="nonfinite"):
        prepare_cases(cases, tmp_path, dataset="toy", config=CFG, nonfinite="drop")


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (np.ones((8, 8, 2), np.complex64), "complex-valued"),
        (np.zeros((8, 8, 2), [("R", "u1"), ("G", "u1"), ("B", "u1")]), "structured voxels"),
        (np.ones((8, 8, 2), bool), "unusable image dtype bool"),
    ],
)
def test_unusable_dtypes_are_named_with_the_case(tmp_path, image, words):
    case = Case("p7", image, None, (1.0, 1.0, 1.0), meta={"image_path": "/data/p7.nii.gz"})
    with pytest.raises(ValueError, match=words) as info:
        prepare_cases([case], tmp_path, dataset="toy", config=CFG, workers=0, progress=False)
    assert "case 'p7' (/data/p7.nii.gz)" in str(info.value)


def test_a_reader_that_would_drop_the_imaginary_part_is_refused(tmp_path):
    class CastingReader:
        case_ids = ("c1",)

        def read(self, case_id):
            data = np.ones((8, 8, 2), np.complex64) * (1 + 2j)
            meta = {"image_path": "/data/c1.nii.gz"}
            return Case(case_id, data.astype(np.float32), None, (1.0, 1.0, 1.0), meta=meta)

    with pytest.raises(
        ValueError, match=r"case 'c1' \(/data/c1\.nii\.gz\): the image is complex-valued"
    ):
        prepare_cases(CastingReader(), tmp_path, dataset="toy", config=CFG, workers=0)


def test_complex_and_rgb_nifti_files_are_named_with_the_case(tmp_path):
    root = write_acdc_fixture(tmp_path / "a", num_patients=2, num_testing=0)
    image = root / "training" / "patient002" / "patient002_frame03.nii.gz"
    img = nib.load(image)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data.astype(np.complex64) * (1 + 1j), img.affine), image)
    with pytest.raises(ValueError, match="the image is complex-valued") as info:
        prepare_dataset("acdc", root, tmp_path / "c", config=_acdc_config(), workers=0)
    assert f"case '002' ({image})" in str(info.value)
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, img.affine), image)
    with pytest.raises(TypeError, match="structured voxels") as info:
        prepare_dataset("acdc", root, tmp_path / "c", config=_acdc_config(), workers=0)
    assert f"case '002' (under {str(root)!r})" in str(info.value)


def test_reader_errors_and_thin_volumes_name_the_case(tmp_path, capsys):
    class Failing:
        case_ids = ("x9",)

        def read(self, case_id):
            msg = "cannot parse the header"
            raise ValueError(msg)

    with pytest.raises(ValueError, match="case 'x9': cannot parse the header"):
        prepare_cases(Failing(), tmp_path, dataset="toy", config=CFG, workers=0)
    cases = _cases(2, slices=6)
    cases.append(Case("thin", np.ones((20, 22, 1)), None, (1.0, 1.0, 4.0)))
    prepare_cases(cases, tmp_path, dataset="toy", config=CFG, workers=0, progress=True)
    assert "'thin' (1 slice) have fewer than 4 slices" in capsys.readouterr().err


# ---- case 6: full disk, read-only folder, --out naming a file --------------------------------


_FILL = textwrap.dedent(
    """
    import sys
    import numpy as np
    from contrastlocal.data._records import Case
    from contrastlocal.data.cache import CacheWriteError
    from contrastlocal.data.prepare import prepare_cases
    from contrastlocal.data.preprocess import PreprocessConfig

    rng = np.random.default_rng(0)
    cases = [Case(f"{i:03d}", rng.normal(size=(64, 64, 12)),
                  rng.integers(0, 4, size=(64, 64, 12)).astype(np.uint8), (1.0, 1.0, 4.0))
             for i in range(6)]
    try:
        prepare_cases(cases, sys.argv[1], dataset="toy",
                      config=PreprocessConfig(image_size=(64, 64)), workers=0, progress=False)
    except CacheWriteError as err:
        print(err, file=sys.stderr)
        sys.exit(3)
    """
)


def test_full_disk_in_the_final_write_is_one_line_and_leaves_no_temporary_file(tmp_path):
    # parts need ~1.2 MiB, the final arrays as much again: 2 MiB fills during the final write
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        res = subprocess.run(
            [sys.executable, "-c", _FILL, str(mnt)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert res.returncode == 3, (res.returncode, res.stderr[-2000:])
        line = res.stderr.strip()
        assert "\n" not in line
        assert "Traceback" not in line
        assert "no space left" in line
        assert "needs 1.1 MiB" in line
        assert "free" in line
        path = next(mnt.glob("toy/*"))
        assert not list(path.rglob(".*.tmp-*")), "temporary files were left behind"
        assert not (path / "index.json").exists()
        assert len(list((path / "parts").glob("*.npz"))) == 6
        assert not (path / LOCK_NAME).exists()
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        rng = np.random.default_rng(0)
        cases = [
            Case(
                f"{i:03d}",
                rng.normal(size=(64, 64, 12)),
                rng.integers(0, 4, size=(64, 64, 12)).astype(np.uint8),
                (1.0, 1.0, 4.0),
            )
            for i in range(6)
        ]
        reader = CountingReader(cases)
        cfg = PreprocessConfig(image_size=(64, 64))
        again = prepare_cases(reader, mnt, dataset="toy", config=cfg, workers=0, progress=False)
        assert again == path
        assert reader.reads == []
        assert open_cache(path).num_slices == 72


def test_stale_temporary_files_do_not_block_a_rerun(tmp_path):
    cases = _cases(3)
    path = prepare_cases(cases, tmp_path, dataset="toy", config=CFG, workers=0, progress=False)
    (path / "index.json").unlink()
    stale = path / ".images.npy.tmp-999999"
    stale.write_bytes(b"\0" * 1000)
    assert prepare_cases(cases, tmp_path, dataset="toy", config=CFG, workers=0) == path
    assert not stale.exists()
    assert open_cache(path).num_volumes == 3


def test_read_only_output_is_one_line(tmp_path):
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        done = prepare_cases(_cases(2), mnt / "c", dataset="toy", config=CFG, workers=0)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        try:
            # a complete cache on a read-only disk is still usable
            assert prepare_cases(_cases(2), mnt / "c", dataset="toy", config=CFG) == done
            with pytest.raises(CacheWriteError) as info:
                prepare_cases(_cases(2), mnt / "d", dataset="toy", config=CFG, workers=0)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
    assert info.value.errno == errno.EROFS
    assert str(info.value).endswith("the file system is read-only.")
    assert "\n" not in str(info.value)


def test_out_naming_an_existing_file_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="names an existing file"):
        prepare_cases(_cases(2), target, dataset="toy", config=CFG, workers=0)
    assert target.read_text() == "x"


# ---- case 8: signals --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_prepare_and_its_workers_at_once_keeping_finished_cases(tmp_path, signum):
    out = tmp_path / "out"
    with _reaped(_start_slow(tmp_path, out, 40, 2, 0.4)) as proc:
        _wait_parts(out, proc, count=2)
        children = _children(proc.pid)
        assert len(children) >= 2  # the workers (and the resource tracker)
        sent = time.monotonic()
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
        err = proc.stderr.read()
    assert elapsed < 5.0, f"prepare took {elapsed:.1f} s to stop"
    assert proc.returncode == 128 + signum
    assert f"prepare stopped by {signal.Signals(signum).name}" in err
    assert not _wait_gone(children, 5.0), "workers outlived prepare"
    path = next(out.glob("toy/*"))
    kept = {p.stem for p in (path / "parts").glob("*.npz")}
    assert 2 <= len(kept) < 40
    assert f"{len(kept)} of 40 cases are kept" in err
    rng = np.random.default_rng(0)
    cases = [
        Case(
            f"{i:03d}",
            rng.normal(size=(20, 22, 2 + i % 3)),
            rng.integers(0, 4, size=(20, 22, 2 + i % 3)).astype(np.uint8),
            (1.0, 1.0, 4.0),
        )
        for i in range(40)
    ]
    reader = CountingReader(cases)
    assert prepare_cases(reader, out, dataset="toy", config=CFG, workers=0, progress=False) == path
    assert sorted(reader.reads) == sorted({f"{i:03d}" for i in range(40)} - kept)
    assert not list(path.rglob(".*.tmp-*"))


def test_kill_9_of_prepare_leaves_no_worker_or_resource_tracker(tmp_path):
    out = tmp_path / "out"
    with _reaped(_start_slow(tmp_path, out, 40, 2, 0.4)) as proc:
        _wait_parts(out, proc, count=1)
        children = _children(proc.pid)
        assert len(children) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    alive = _wait_gone(children, 10.0)
    assert not alive, f"orphans left alive: {alive}"


# ---- case 7: optional dependencies checked at the start ---------------------------------------


def test_missing_medical_packages_are_named_at_the_start(tmp_path, monkeypatch):
    root = write_acdc_fixture(tmp_path / "a", num_patients=1, num_testing=0)
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(MissingDependencyError) as info:
        prepare_dataset("acdc", root, tmp_path / "cache", config=_acdc_config(), workers=0)
    assert str(info.value) == (
        'prepare acdc needs nibabel (is missing): pip install "contrastlocal[medical]"'
    )
    assert not (tmp_path / "cache").exists()
    monkeypatch.setitem(sys.modules, "nibabel", nib)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(MissingDependencyError, match=r"SimpleITK .*contrastlocal\[medical\]"):
        prepare_dataset("acdc", root, tmp_path / "cache", config=PreprocessConfig(n4="default"))


def test_missing_tqdm_skips_the_progress_bar_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.warns(MissingOptionalWarning, match=r"progress bar.*contrastlocal\[torch\]"):
        path = prepare_cases(_cases(2), tmp_path, dataset="toy", config=CFG, workers=0)
    assert open_cache(path).num_volumes == 2
