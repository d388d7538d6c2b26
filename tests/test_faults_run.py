"""Issue 18, the run side: ``contrastlocal run`` tried as a hostile user would.

Every test drives the real command line in a subprocess on a fixture tree
(:mod:`contrastlocal.data.fixtures`) with tiny settings: real files, real signals (SIGKILL,
SIGINT, SIGTERM), two concurrent processes, a small tmpfs for a full or read-only disk. The
numbers in the test names are the cases of the issue.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("nibabel")

import torch

from contrastlocal.data.fixtures import write_acdc_fixture
from contrastlocal.training.checkpoint import load_checkpoint

from ._system import TINY_SETTINGS, tmpfs

ROOT = Path(__file__).resolve().parents[1]

TINY = [*TINY_SETTINGS, "runtime.num_threads=1"]

# the command line with hooks: matplotlib hidden, or the process SIGKILLs itself once a stage
# has written its first checkpoint (a deterministic "kill -9 after stage 1 starts")
WRAPPER = textwrap.dedent(
    """
    import os, signal, sys
    if os.environ.get("HIDE_MATPLOTLIB"):
        sys.modules["matplotlib"] = None
    kill_in = os.environ.get("KILL_AFTER_CHECKPOINT_OF")
    if kill_in:
        from contrastlocal.training import _loop
        save = _loop._Loop.save
        def save_then_die(self, iteration):
            save(self, iteration)
            if self.spec.name == kill_in:
                os.kill(os.getpid(), signal.SIGKILL)
        _loop._Loop.save = save_then_die
    from contrastlocal.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HIDE_MATPLOTLIB",)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _run_args(
    data: Path, out: Path, *more: str, settings: tuple[str, ...] = (), progress: bool = False
) -> list[str]:
    argv = ["run", "--dataset", "acdc", "--data", str(data), "--out", str(out), "--splits",
            "auto", "--n4", "none", "--workers", "0", "--num-labelled", "1", "--combinations",
            "1", *([] if progress else ["--no-progress"])]
    for item in (*TINY, *settings):
        argv += ["--set", item]
    return argv + list(more)


def _cli(argv: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start(argv: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *argv],
        cwd=ROOT,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The failure of a command: a non-zero exit and one line on stderr, no traceback."""
    assert res.returncode not in (0, None), res.stdout[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("contrastlocal "), lines
    return lines[0]


def _table(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "results.json").read_text())
    return data


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model: dict[str, torch.Tensor] = load_checkpoint(path)["model"]
    return model


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two dataset folders with the same case ids and different images (A and B)."""
    base = tmp_path_factory.mktemp("trees")
    return {
        "a": write_acdc_fixture(base / "a", num_patients=5, num_testing=0, seed=1),
        "b": write_acdc_fixture(base / "b", num_patients=5, num_testing=0, seed=2),
    }


@pytest.fixture(scope="module")
def reference_b(trees: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run on folder B, alone in its folder (the results to expect)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = _cli(_run_args(trees["b"], out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


# ---- case 1: a cache prepared from folder A is not reused for folder B --------------------------


@pytest.mark.slow
def test_1_cache_of_another_folder_is_not_reported_up_to_date(trees, reference_b, tmp_path):
    cache = tmp_path / "cache"
    res = _cli(_run_args(trees["a"], tmp_path / "run_a", "--cache", str(cache)))
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "run"
    res = _cli(_run_args(trees["b"], out, "--cache", str(cache), progress=True))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "up to date" not in res.stdout + res.stderr
    assert "out of date: the source changed" in res.stderr
    # trained and scored on folder B's images alone: the results of a run on B by itself
    assert _table(out) == _table(reference_b)


# ---- case 2: --fresh killed after stage 1 starts, then a rerun without --fresh ------------------


@pytest.mark.slow
def test_2_fresh_killed_after_stage_1_leaves_nothing_of_the_old_run(trees, reference_b, tmp_path):
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    old = _cli(_run_args(trees["a"], out, "--cache", str(cache / "a")))
    assert old.returncode == 0, old.stderr[-3000:]
    old_cells = {p.parent.name for p in out.glob("finetune/*/final.pt")}
    assert old_cells
    # --fresh on folder B, killed (SIGKILL) right after stage 1 wrote its first checkpoint
    killed = _cli(
        _run_args(trees["b"], out, "--cache", str(cache / "b"), "--fresh"),
        KILL_AFTER_CHECKPOINT_OF="global",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not list(out.glob("finetune/*/final.pt")), "the old run's cells survived --fresh"
    assert not (out / "local").exists()
    assert not (out / "results.json").exists()
    # the rerun without --fresh: takes over the dead run's lock, resumes stage 1 and retrains
    # everything after it on B (before: the old run's cells were reported as B's results)
    rerun = _cli(_run_args(trees["b"], out, "--cache", str(cache / "b")))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "took over" in rerun.stderr
    assert _table(out) == _table(reference_b)
    for cell in old_cells:
        for name in ("final.pt", "best.pt"):
            new, ref = _weights(out / "finetune" / cell / name), _weights(
                reference_b / "finetune" / cell / name
            )
            assert all(torch.equal(new[k], ref[k]) for k in ref), (cell, name)


# ---- case 3: fewer iterations, refused settings, precision and device ---------------------------


@pytest.mark.slow
def test_3_rerun_with_fewer_iterations_is_refused_not_mislabelled(trees, tmp_path):
    out = tmp_path / "run"
    more = ("global_stage.iterations=4",)
    first = _cli(_run_args(trees["a"], out, settings=more))
    assert first.returncode == 0, first.stderr[-3000:]
    final = out / "global" / "final.pt"
    before = load_checkpoint(final)
    config = (out / "config.json").read_bytes()
    res = _cli(_run_args(trees["a"], out))  # global_stage.iterations=2 < the 4 done
    line = _one_line_error(res)
    assert res.returncode == 2
    assert "stage 'global'" in line
    assert "already done 4 iterations, more than the 2 asked for" in line
    assert "--fresh" in line
    assert "resume=False" not in line
    after = load_checkpoint(final)
    assert after["iteration"] == 4
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    assert (out / "config.json").read_bytes() == config


@pytest.mark.slow
def test_3_refused_resume_keeps_config_json_and_names_fresh(trees, tmp_path):
    out = tmp_path / "run"
    first = _cli(_run_args(trees["a"], out))
    assert first.returncode == 0, first.stderr[-3000:]
    config = (out / "config.json").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    res = _cli(_run_args(trees["a"], out, settings=("finetune.learning_rate=0.01",)))
    line = _one_line_error(res)
    assert "learning_rate 0.001 -> 0.01" in line
    assert "(--fresh)" in line
    assert "resume=False" not in line
    # refused before any work: nothing rewritten, config.json still the settings on disk
    assert (out / "config.json").read_bytes() == config
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == mtimes
    # --fresh accepts the change and records it
    res = _cli(_run_args(trees["a"], out, "--fresh", settings=("finetune.learning_rate=0.01",)))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["finetune"]["learning_rate"] == 0.01


@pytest.mark.slow
def test_3_precision_and_device_type_are_part_of_every_stage_key(trees, tmp_path):
    out = tmp_path / "run"
    res = _cli(_run_args(trees["a"], out))
    assert res.returncode == 0, res.stderr[-3000:]
    for ckpt in [*out.glob("*/checkpoints/*.pt"), *out.glob("finetune/*/checkpoints/*.pt")]:
        key = load_checkpoint(ckpt)["settings"]
        assert (key["device_type"], key["precision"]) == ("cpu", "fp32"), ckpt
        assert "upstream_weights" in key
    # a checkpoint made in bf16 (on a GPU) is not resumed in fp32: refused, naming precision
    latest = max((out / "finetune").glob("GD_*/checkpoints/iter_*.pt"))
    payload = load_checkpoint(latest)
    payload["settings"]["precision"] = "bf16"
    torch.save(payload, latest)
    res = _cli(_run_args(trees["a"], out))
    line = _one_line_error(res)
    assert "precision 'bf16' -> 'fp32'" in line


# ---- case 4: two runs into one output folder at once -------------------------------------------


@pytest.mark.slow
def test_4_second_concurrent_run_is_refused_naming_the_holder(trees, tmp_path):
    out = tmp_path / "run"
    slow = ("global_stage.iterations=40",)
    with _reaped(_start(_run_args(trees["a"], out, settings=slow))) as first:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _cli(_run_args(trees["a"], out, settings=slow))
        assert first.poll() is None, "the first run ended before the second started"
        _, err_text = first.communicate(timeout=300)
    line = _one_line_error(second)
    assert second.returncode == 1
    assert "is in use by contrastlocal run" in line
    assert f"PID {first.pid}" in line
    assert first.returncode == 0, err_text[-3000:]
    # the first run's logs are whole: one record per iteration, no duplicate
    records = [json.loads(x) for x in (out / "global" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == list(range(1, 41))
    assert not (out / ".lock").exists()


# ---- case 6: no traceback: bad settings, devices, files, full and read-only disks --------------


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("runtime.device=mps", "MPS is not available"),
        ("global_stage.learning_rate=1e38", "`global_stage.learning_rate` is 1e+38"),
        ("runtime.amp=fp16", "cannot run fp16 autocast"),
        ("model.image_size=[8, 8]", "too small for local_stage.num_regions=13"),
        ("local_stage.num_regions=4", "`local_stage.num_regions` must be one of"),
        ("runtime.step_mode=cuda_graph", "the device 'cpu' cannot capture CUDA graphs"),
        ("runtime.step_mode=graph", "`runtime.step_mode` must be one of"),
    ],
)
def test_6_9_bad_settings_are_one_line_before_any_work(trees, tmp_path, setting, words):
    out = tmp_path / "run"
    res = _cli(_run_args(trees["a"], out, settings=(setting,)))
    line = _one_line_error(res)
    assert res.returncode == 2
    assert words in line
    assert not (out / "cache").exists(), "work started before the settings were checked"
    assert not (out / "config.json").exists()


@pytest.mark.slow
def test_6_image_size_64_is_accepted(trees, tmp_path):
    res = _cli(_run_args(trees["a"], tmp_path / "run", settings=("model.image_size=[64, 64]",)))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["image_size"] == [
        64, 64
    ]


@pytest.mark.parametrize("command", ["run", "demo"])
def test_6_out_naming_an_existing_file_is_one_line(trees, tmp_path, command):
    target = tmp_path / "file"
    target.write_text("x")
    argv = (
        _run_args(trees["a"], target)
        if command == "run"
        else ["demo", "--quick", "--out", str(target), "--no-progress"]
    )
    line = _one_line_error(_cli(argv))
    assert "exists and is not a folder" in line
    assert target.read_text() == "x"


@pytest.mark.slow
def test_6_full_disk_during_run_is_one_line_and_a_rerun_resumes(trees, tmp_path):
    with tmpfs(tmp_path / "mnt", "300k") as mnt:
        out = mnt / "run"
        args = _run_args(trees["a"], out, "--cache", str(tmp_path / "cache"))
        res = _cli(args)
        line = _one_line_error(res)
        assert res.returncode == 1
        assert "no space left on device" in line.lower()
        assert re.search(r"needs [0-9.]+ [KM]iB, [0-9.]+ [KM]iB free", line), line
        assert not list(out.rglob(".*.tmp")), "a half-written checkpoint was left"
        assert not (out / ".lock").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        res = _cli(args)
        assert res.returncode == 0, res.stderr[-3000:]
        assert (out / "results.json").is_file()


@pytest.mark.slow
def test_6_read_only_output_is_one_line(trees, tmp_path):
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        (mnt / "run").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        try:
            res = _cli(_run_args(trees["a"], mnt / "run", "--cache", str(tmp_path / "cache")))
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
    line = _one_line_error(res)
    assert res.returncode == 1
    assert "read-only file system" in line.lower()


# ---- case 7: matplotlib missing ----------------------------------------------------------------


@pytest.mark.slow
def test_7_run_without_matplotlib_warns_at_the_start_and_keeps_the_results(trees, tmp_path):
    out = tmp_path / "run"
    res = _cli(_run_args(trees["a"], out), HIDE_MATPLOTLIB="1")
    assert res.returncode == 0, res.stderr[-3000:]
    first = res.stderr.splitlines()[0]
    assert "the plots skipped" in first
    assert 'pip install "contrastlocal[torch]"' in first
    assert (out / "results.json").is_file()
    assert (out / "evaluation.json").is_file()
    assert not list(out.glob("plots/*.png"))


@pytest.mark.slow
def test_7_demo_without_matplotlib_warns_before_training(tmp_path):
    out = tmp_path / "demo"
    with _reaped(_start(["demo", "--quick", "--seeds", "0", "--out", str(out), "--no-progress"],
                        HIDE_MATPLOTLIB="1")) as proc:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # before any training has been done
        assert "the plots skipped" in first
        assert not (out / "pretrain").exists()
        _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert (out / "results.json").is_file()
    assert not list(out.glob("plots/*.png"))


# ---- case 8: SIGINT and SIGTERM stop run at once, keeping the checkpoints ----------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_8_signal_stops_run_within_a_second_keeping_checkpoints(trees, tmp_path, signum):
    out = tmp_path / "run"
    long = ("global_stage.iterations=100000", "global_stage.checkpoint_every=5")
    args = _run_args(trees["a"], out, settings=long)
    with _reaped(_start(args)) as proc:
        deadline = time.monotonic() + 120
        while not list((out / "global" / "checkpoints").glob("iter_*.pt")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sent = time.monotonic()
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    assert elapsed < 3.0, f"run took {elapsed:.1f} s to stop"
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("contrastlocal run: ")
    assert "finished files are kept" in line
    assert "SIGTERM" in line if signum == signal.SIGTERM else "interrupted" in line
    kept = sorted((out / "global" / "checkpoints").glob("iter_*.pt"))
    assert kept, "no checkpoint kept"
    assert load_checkpoint(kept[-1])["iteration"] % 5 == 0
    assert not list(out.rglob(".*.tmp")), "a half-written checkpoint was left"
    assert not (out / ".lock").exists()


# ---- case 9: fp16 on the CPU, config.json, 1-slice volumes -------------------------------------


@pytest.mark.slow
def test_9_config_json_records_the_device_and_precision_used(trees, tmp_path):
    out = tmp_path / "run"
    res = _cli(_run_args(trees["a"], out, settings=("runtime.device=auto", "runtime.amp=auto")))
    assert res.returncode == 0, res.stderr[-3000:]
    runtime = json.loads((out / "config.json").read_text())["runtime"]
    assert (runtime["device"], runtime["amp"]) == ("cpu", "none")


def test_9_one_slice_volume_is_named_by_case_id_before_any_training(tmp_path):
    import numpy as np

    from contrastlocal.training import Volume, preset, run_recipe

    rng = np.random.default_rng(0)

    def vol(case: str, slices: int) -> Volume:
        image = rng.random((slices, 32, 32), dtype=np.float32)
        return Volume(image, rng.integers(0, 4, (slices, 32, 32)).astype(np.uint8), case_id=case)

    pretrain = [vol("p1", 6), vol("thin-07", 1), vol("p3", 6)]
    cfg = preset("synthetic", **{"model.image_size": (32, 32), "model.channels": (4, 8, 16),
                                 "local_stage.num_decoder_blocks": 1,
                                 "global_stage.volumes_per_batch": 2, "runtime.progress": False})
    with pytest.raises(ValueError, match=r"case\(s\) \['thin-07'\] have fewer slices than the 4"):
        run_recipe(pretrain, {1: {1: ([vol("t", 4)], [vol("v", 4)])}}, [vol("x", 4)], cfg,
                   out=tmp_path / "run")
    assert not (tmp_path / "run" / "global").exists()
    assert not (tmp_path / "run" / "config.json").exists()


# ---- case 2: --fresh is all or nothing, wherever it is killed ----------------------------------


def _old_run(root: Path) -> list[str]:
    """The files a previous run left: stages, cells, reports (and the cache, not the run's)."""
    files = ["global/checkpoints/iter_0000002.pt", "local/final.pt",
             "finetune/GD_n1_c1/final.pt", "results.json", "plots/results.png", "cache/keep.npy"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return files


def _plan(root: Path):
    from contrastlocal.training import plan_recipe, preset

    return plan_recipe(preset("acdc"), {1: [1]}, out=root)


def test_2_fresh_interrupted_after_publishing_is_completed_by_the_next_run(tmp_path):
    from contrastlocal.training import open_run_directory, preset
    from contrastlocal.training.recipe import FRESH_TRASH

    root = tmp_path / "run"
    _old_run(root)
    # killed after the list was published and one item moved: the rest is still in place
    trash = root / FRESH_TRASH
    trash.mkdir()
    (trash / "items.json").write_text(json.dumps(["results.json", "global", "local", "finetune"]))
    os.replace(root / "results.json", trash / "00000")
    # the next run, even without --fresh, completes the invalidation before reading anything
    open_run_directory(root, preset("acdc"), resume=True, plan=_plan(root))
    assert not trash.exists()
    for gone in ("global", "local", "finetune", "results.json"):
        assert not (root / gone).exists(), gone
    assert (root / "cache" / "keep.npy").is_file()  # not the run's to remove
    assert (root / "config.json").is_file()


def test_2_fresh_interrupted_before_publishing_leaves_the_old_run_whole(tmp_path):
    from contrastlocal.training import open_run_directory, preset
    from contrastlocal.training.recipe import FRESH_TRASH

    root = tmp_path / "run"
    files = _old_run(root)
    staging = root / f"{FRESH_TRASH}.12345"  # killed while writing the list
    staging.mkdir()
    (staging / "items.json").write_text('["glo')
    open_run_directory(root, preset("acdc"), resume=True)
    assert not staging.exists()
    assert all((root / name).read_text() == name for name in files)


def test_2_fresh_removes_every_stage_cell_and_report_but_not_the_cache(tmp_path):
    from contrastlocal.training import open_run_directory, preset
    from contrastlocal.training.recipe import FRESH_TRASH

    root = tmp_path / "run"
    _old_run(root)
    open_run_directory(root, preset("acdc"), resume=False, plan=_plan(root))
    assert sorted(p.name for p in root.iterdir()) == ["cache", "config.json"]
    assert not (root / FRESH_TRASH).exists()


@pytest.mark.slow
def test_8_sigterm_during_runs_prepare_is_its_one_line_and_143(tmp_path):
    data = write_acdc_fixture(tmp_path / "many", num_patients=16, num_testing=0, seed=3)
    out = tmp_path / "run"
    args = _run_args(data, out)
    args[args.index("--n4") + 1] = "default"  # slow enough to be caught in the middle
    args[args.index("--workers") + 1] = "2"
    with _reaped(_start(args)) as proc:
        deadline = time.monotonic() + 240
        while not list(out.glob("cache/acdc/*/parts/*.npz")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    assert elapsed < 5.0, f"run took {elapsed:.1f} s to stop"
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("contrastlocal run: prepare stopped by SIGTERM: ")
    assert "cases are kept" in line
    assert not (out / ".lock").exists()
    assert not (out / "global").exists()
