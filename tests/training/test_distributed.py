"""The pipeline under 2 processes (gloo, CPU), started as torchrun starts it (env variables)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from . import _distributed_pipeline_worker as w  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="needs torch.distributed+gloo"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp_pipeline")
    torch.multiprocessing.spawn(w.worker, args=(str(out), _free_port()), nprocs=w.WORLD_SIZE,
                                join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_pipeline_two_processes_hold_identical_weights(runs):
    _, ranks = runs
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for stage in ("global", "local", "joint", "finetune", "resumed"):
        theirs = ranks[1][stage]
        assert ranks[0][stage].keys() == theirs.keys()
        for key, value in ranks[0][stage].items():
            assert torch.equal(value, theirs[key]), (stage, key)
    assert ranks[0]["finetune_best"] == ranks[1]["finetune_best"]


def test_pipeline_two_processes_only_rank_zero_writes(runs):
    out, ranks = runs
    assert ranks[1]["writes"] == []
    assert any("final.pt" in entry for entry in ranks[0]["writes"])  # the hook sees writes
    run = out / "run"
    for stage in ("global", "local", "joint", "finetune", "resumed"):
        assert (run / stage / "final.pt").is_file()
        assert (run / stage / "metrics.jsonl").is_file()
    assert (run / "finetune" / "best.pt").is_file()
    lines = (run / "global" / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"loss"' in ln]) == 4  # one writer: no duplicated records


def test_pipeline_two_processes_resume_after_interruption_equals_uninterrupted(runs):
    _, ranks = runs
    for rank in ranks:
        assert rank["resumed_from"] == 2
        for key, value in rank["global"].items():
            torch.testing.assert_close(rank["resumed"][key], value, rtol=0, atol=0)


def test_cli_run_under_torchrun_two_processes(tmp_path):
    """``torchrun --nproc_per_node=2 -m contrastlocal run ...`` completes; rank 0 reports."""
    import os
    import subprocess
    import sys

    from contrastlocal.data.fixtures import write_acdc_fixture

    data = write_acdc_fixture(tmp_path / "raw", num_patients=6, num_testing=0)
    sets = [
        "model.image_size=[32, 32]", "model.channels=[4, 8, 16]",
        "model.global_hidden_features=16", "global_stage.iterations=2",
        "global_stage.volumes_per_batch=1", "local_stage.iterations=2",
        "local_stage.volumes_per_batch=1", "local_stage.num_decoder_blocks=1",
        "finetune.iterations=2", "finetune.batch_size=2", "finetune.validate_every=1",
        "runtime.num_threads=1",
    ]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "contrastlocal", "run", "--dataset", "acdc", "--data", str(data), "--out",
            str(out), "--splits", "auto", "--n4", "none", "--workers", "0", "--no-progress",
            "--no-plots"]
    for item in sets:
        argv += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one report per run: only rank 0 prints the progress lines
    assert proc.stdout.count("cache ready:") == 1, proc.stdout
    assert proc.stdout.count("stage 1 (") == 1, proc.stdout
    results = (out / "results.json").read_text()
    assert "random" in results
    import json

    records = [json.loads(ln) for ln in (out / "global" / "metrics.jsonl").read_text().splitlines()]
    iterations = [r["iteration"] for r in records]
    assert iterations == [2]  # rank 0 alone writes the log (final iteration, no duplicate)


def test_compile_under_two_processes_averages_gradients(tmp_path):
    """``runtime.compile=True`` under 2 processes trains as the eager 2-process run does.

    The compiled forward pass must go through the DDP wrapper: compiling the bare network
    bypassed it, each rank then stepped on its own shard's gradients and rank 0's weights
    (broadcast at the end) differed from the eager run's averaged ones.
    """
    from . import _distributed_compile_worker as cw

    torch.multiprocessing.spawn(cw.worker, args=(str(tmp_path), _free_port()),
                                nprocs=cw.WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for stage in ("global", "finetune"):
        for rank in ranks:
            eager, compiled = rank[f"{stage}_compileFalse"], rank[f"{stage}_compileTrue"]
            assert eager.keys() == compiled.keys()
            for key, value in eager.items():
                torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-5,
                                           msg=lambda m, s=stage, k=key: f"{s} {k}: {m}")
