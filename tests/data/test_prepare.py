"""prepare: fixture folders -> valid cache, splits, resume after a failure or a kill, no redo."""

from __future__ import annotations

import argparse
import dataclasses
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

from contrastlocal._lock import LOCK_NAME, StaleLockWarning
from contrastlocal.data._records import Case
from contrastlocal.data.cache import open_cache
from contrastlocal.data.prepare import (
    add_prepare_arguments,
    prepare_cases,
    prepare_dataset,
    run_prepare,
)
from contrastlocal.data.preprocess import (
    PREPROCESS_PRESETS,
    PreprocessConfig,
    preprocess_case,
    to_native,
)
from contrastlocal.data.splits import make_cityscapes_split

CFG = PreprocessConfig(image_size=(24, 24))
CLASSES = {"acdc": 4, "prostate": 3, "mmwhs": 8, "cityscapes": 13}


def _cases(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Case(
            f"{i:03d}",
            rng.normal(size=(20, 22, 2 + i % 3)),
            rng.integers(0, 4, size=(20, 22, 2 + i % 3)).astype(np.uint8),
            (1.0, 1.0, 4.0),
        )
        for i in range(n)
    ]


class CountingReader:
    """A reader over in-memory cases that counts reads and can fail after `fail_after` reads."""

    def __init__(self, cases, fail_after=None):
        self._cases = {c.case_id: c for c in cases}
        self.fail_after = fail_after
        self.reads: list[str] = []

    @property
    def case_ids(self):
        return list(self._cases)

    def read(self, case_id):
        if self.fail_after is not None and len(self.reads) >= self.fail_after:
            msg = f"simulated failure reading {case_id}"
            raise RuntimeError(msg)
        self.reads.append(case_id)
        return self._cases[case_id]


def _assert_cache_matches(path, cases, cfg):
    data = open_cache(path)
    assert data.case_ids == tuple(c.case_id for c in cases)
    expected = [preprocess_case(c, cfg) for c in cases]
    np.testing.assert_array_equal(data.images, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(data.labels, np.concatenate([e[1] for e in expected]))
    assert data.geometries == tuple(e[2] for e in expected)


# ---------------------------------------------------------------------------------------------
# prepare_cases: resumable, idempotent
# ---------------------------------------------------------------------------------------------


def test_prepare_cases_writes_a_valid_cache(tmp_path):
    cases = _cases()
    path = prepare_cases(cases, tmp_path, dataset="toy", config=CFG, progress=False)
    assert path.parent == tmp_path / "toy"
    _assert_cache_matches(path, cases, CFG)


def test_prepare_cases_second_run_does_nothing(tmp_path, capsys):
    cases = _cases()
    path = prepare_cases(cases, tmp_path, dataset="toy", config=CFG, workers=0, progress=False)
    stamp = (path / "images.npy").stat().st_mtime_ns
    reader = CountingReader(cases)
    again = prepare_cases(reader, tmp_path, dataset="toy", config=CFG, progress=True)
    assert again == path
    assert reader.reads == []
    assert (path / "images.npy").stat().st_mtime_ns == stamp
    assert "up to date" in capsys.readouterr().err


def test_prepare_cases_resumes_after_a_failure(tmp_path, capsys):
    cases = _cases(6)
    failing = CountingReader(cases, fail_after=4)
    with pytest.raises(RuntimeError, match="simulated failure"):
        prepare_cases(failing, tmp_path, dataset="toy", config=CFG, workers=0, progress=False)
    path = next((tmp_path / "toy").iterdir())
    assert len(list((path / "parts").glob("*.npz"))) == 4
    with pytest.raises(FileNotFoundError, match="incomplete"):
        open_cache(path)
    reader = CountingReader(cases)
    again = prepare_cases(reader, tmp_path, dataset="toy", config=CFG, workers=0, progress=True)
    assert again == path
    assert reader.reads == ["004", "005"]  # only the unfinished cases are read again
    assert "resuming" in capsys.readouterr().err
    _assert_cache_matches(path, cases, CFG)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from contrastlocal.data._records import Case
    from contrastlocal.data.prepare import prepare_cases
    from contrastlocal.data.preprocess import PreprocessConfig

    class SlowReader:
        def __init__(self, cases):
            self._cases = {c.case_id: c for c in cases}
        @property
        def case_ids(self):
            return list(self._cases)
        def read(self, case_id):
            time.sleep(0.4)
            return self._cases[case_id]

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        cases = [
            Case(f"{i:03d}", rng.normal(size=(20, 22, 2 + i % 3)),
                 rng.integers(0, 4, size=(20, 22, 2 + i % 3)).astype(np.uint8), (1.0, 1.0, 4.0))
            for i in range(5)
        ]
        prepare_cases(SlowReader(cases), sys.argv[1], dataset="toy",
                      config=PreprocessConfig(image_size=(24, 24)), workers=0, progress=False)
    """
)


def test_prepare_cases_resumes_after_a_kill(tmp_path):
    script = tmp_path / "run_prepare.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = list(out.glob("toy/*/parts/*.npz"))
            if parts or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert parts
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    path = parts[0].parent.parent
    assert not (path / "index.json").exists()
    done = {p.stem for p in (path / "parts").glob("*.npz")}
    assert 1 <= len(done) < 5
    cases = _cases(5)
    reader = CountingReader(cases)
    assert (path / LOCK_NAME).exists()  # left by the killed run: stale, taken over with a note
    with pytest.warns(StaleLockWarning, match=f"PID {proc.pid}"):
        again = prepare_cases(reader, out, dataset="toy", config=CFG, workers=0, progress=False)
    assert again == path
    assert not (path / LOCK_NAME).exists()
    assert sorted(reader.reads) == sorted({c.case_id for c in cases} - done)
    _assert_cache_matches(path, cases, CFG)


def test_prepare_cases_rejects_empty_selection(tmp_path):
    with pytest.raises(ValueError, match="no cases"):
        prepare_cases(_cases(), tmp_path, dataset="toy", case_ids=[], config=CFG)
    with pytest.raises(ValueError, match="workers"):
        prepare_cases(_cases(), tmp_path, dataset="toy", config=CFG, workers=-1)


# ---------------------------------------------------------------------------------------------
# prepare_dataset on format fixtures
# ---------------------------------------------------------------------------------------------


def _fixture(name, root):
    fixtures = pytest.importorskip("contrastlocal.data.fixtures")
    writer = {
        "acdc": fixtures.write_acdc_fixture,
        "prostate": fixtures.write_prostate_fixture,
        "mmwhs": fixtures.write_mmwhs_fixture,
        "cityscapes": fixtures.write_cityscapes_fixture,
    }[name]
    return writer(root)


def _reader(name, root, **kw):
    readers = pytest.importorskip("contrastlocal.data.readers")
    return readers.get_reader(name, root, **kw)


@pytest.mark.parametrize("name", ["acdc", "prostate", "mmwhs", "cityscapes"])
def test_prepare_dataset_fixture_round_trip_is_exact_without_resampling(tmp_path, name):
    root = _fixture(name, tmp_path / "data")
    preset = PREPROCESS_PRESETS[name]
    cfg = dataclasses.replace(preset, n4="none", target_spacing=None)
    path = prepare_dataset(name, root, tmp_path / "out", config=cfg, workers=0, progress=False)
    data = open_cache(path)
    folders = ("train", "val") if name == "cityscapes" else (None,)
    readers = [_reader(name, root, **({"split": f} if f else {})) for f in folders]
    ids = [c for r in readers for c in r.case_ids]
    assert list(data.case_ids) == ids
    h, w = preset.image_size
    assert data.images.shape[-2:] == (h, w)
    assert data.images.ndim == (4 if name == "cityscapes" else 3)
    assert data.labels.max() < CLASSES[name]
    for i, cid in enumerate(data.case_ids):
        reader = next(r for r in readers if cid in r.case_ids)
        case = reader.read(cid)
        _, lab, geom = data.volume(i)
        assert geom.native_spacing == tuple(float(s) for s in case.spacing)
        assert geom.num_slices == data.slices_per_volume[i]
        # padding only (fixtures are smaller than the target size): exact inverse
        np.testing.assert_array_equal(to_native(lab, geom), case.label)


@pytest.mark.parametrize("name", ["acdc", "mmwhs"])
def test_prepare_dataset_fixture_with_preset_resampling(tmp_path, name):
    root = _fixture(name, tmp_path / "data")
    cfg = dataclasses.replace(PREPROCESS_PRESETS[name], n4="none")
    path = prepare_dataset(name, root, tmp_path / "out", config=cfg, workers=0, progress=False)
    data = open_cache(path)
    reader = _reader(name, root)
    for i, cid in enumerate(data.case_ids):
        case = reader.read(cid)
        _img, lab, geom = data.volume(i)
        ty, tx = cfg.target_spacing
        expected_hw = tuple(
            round(n * s / t)
            for n, s, t in zip(case.image.shape[:2], case.spacing[:2], (ty, tx), strict=True)
        )
        assert geom.resampled_shape == expected_hw
        back = to_native(lab, geom)
        assert back.shape == case.label.shape
        assert float(np.mean(back == case.label)) > 0.9


def test_prepare_dataset_selects_a_split(tmp_path):
    root = _fixture("acdc", tmp_path / "data")
    cfg = dataclasses.replace(PREPROCESS_PRESETS["acdc"], n4="none")
    path = prepare_dataset(
        "acdc", root, tmp_path / "out", split="tr1_c1", config=cfg, workers=0, progress=False
    )
    assert path.name.startswith("tr1_c1-")
    assert open_cache(path).case_ids == ("002",)
    with pytest.raises(ValueError, match="011"):
        prepare_dataset("acdc", root, tmp_path / "out", split="tr1_c1_val", config=cfg)


def test_prepare_dataset_cityscapes_split(tmp_path):
    root = _fixture("cityscapes", tmp_path / "data")
    ids = [*_reader("cityscapes", root, split="train").case_ids]
    ids += _reader("cityscapes", root, split="val").case_ids
    path = prepare_dataset(
        "cityscapes", root, tmp_path / "out", split="pretrain", workers=0, progress=False
    )
    assert open_cache(path).case_ids == make_cityscapes_split(ids).pretrain


def test_prepare_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_dataset("acdc", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="name"):
        prepare_dataset("brats", tmp_path, tmp_path / "out")
    root = _fixture("acdc", tmp_path / "data")
    for gt in (root / "training" / "patient002").glob("*_gt.nii.gz"):
        gt.unlink()
    with pytest.raises((FileNotFoundError, ValueError), match="patient002"):
        prepare_dataset("acdc", root, tmp_path / "out", workers=0, progress=False)


@pytest.mark.slow
def test_prepare_dataset_process_pool_matches_in_process(tmp_path):
    root = _fixture("acdc", tmp_path / "data")  # ACDC preset: N4 default on, resampling on
    pooled = prepare_dataset("acdc", root, tmp_path / "a", workers=2, progress=False)
    inline = prepare_dataset("acdc", root, tmp_path / "b", workers=0, progress=False)
    a, b = open_cache(pooled), open_cache(inline)
    assert a.case_ids == b.case_ids
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_run_prepare_from_arguments(tmp_path, capsys):
    root = _fixture("prostate", tmp_path / "data")
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    argv = ["prostate", "--root", str(root), "--out", str(tmp_path / "out"), "--n4", "none"]
    argv += ["--workers", "0", "--no-progress"]
    args = parser.parse_args(argv)
    assert run_prepare(args) == 0
    printed = Path(capsys.readouterr().out.strip())
    data = open_cache(printed)
    assert data.config == PREPROCESS_PRESETS["prostate"]
    assert data.images.shape[1:] == (192, 192)


def test_cli_prepare_reports_bad_folder(tmp_path, capsys):
    cli = pytest.importorskip("contrastlocal.cli")
    code = cli.main(["prepare", "acdc", "--root", str(tmp_path / "missing"), "--out", "x"])
    assert code == 2
    assert "missing" in capsys.readouterr().err
