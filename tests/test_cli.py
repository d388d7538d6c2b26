"""The command line: help, bad arguments (one line, no traceback), demo, stage sub-commands."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from contrastlocal.cli import build_parser, main, parse_set_option

from ._system import TINY_SETTINGS

SUBCOMMANDS = (
    "demo",
    "run",
    "pretrain-global",
    "pretrain-local",
    "finetune",
    "baseline",
    "evaluate",
    "prepare",
)

TINY = TINY_SETTINGS


def _sets(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors and --help
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_main(["--help"], capsys)
    assert code == 0
    for name in SUBCOMMANDS:
        assert name in out
    assert "contrastlocal demo --out demo_out" in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_cli_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_main([command, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: contrastlocal {command}")


def test_parse_set_option_reads_toml_literals() -> None:
    got = parse_set_option(
        ["a.b=3", "a.c=1e-3", "a.d=true", "a.e=[1, 2]", "a.f=cuda", 'a.g="x y"', "a.b=4"]
    )
    assert got == {"a.b": 4, "a.c": 1e-3, "a.d": True, "a.e": [1, 2], "a.f": "cuda", "a.g": "x y"}


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", ".a=1"])
def test_parse_set_option_rejects_malformed(item: str) -> None:
    with pytest.raises(ValueError, match="--set"):
        parse_set_option([item])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def _bad_cases(tmp: Path, data: Path) -> list[tuple[list[str], str]]:
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("[global_stage\niterations = 3\n")
    other = tmp / "other.toml"
    other.write_text('preset = "prostate"\n')
    unknown_key = tmp / "unknown.toml"
    unknown_key.write_text("[finetune]\nbogus = 1\n")
    binary = tmp / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    run = ["run", "--dataset", "acdc", "--data", str(data), "--out", str(tmp / "o")]
    return [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["run", "--dataset", "kitti", "--data", str(data), "--out", "o"], "invalid choice"),
        (["run", "--dataset", "acdc", "--out", "o"], "--data"),
        (["run", "--dataset", "acdc", "--data", str(tmp / "missing"), "--out", "o"], "--data"),
        ([*run, "--set", "global_stage.nope=1"], "nope"),
        ([*run, "--set", "nosuchsection.x=1"], "nosuchsection"),
        ([*run, "--set", "finetune.iterations=abc"], "finetune.iterations"),
        ([*run, "--set", "local_stage.num_decoder_blocks=9"], "num_decoder_blocks"),
        ([*run, "--set", "justakey"], "--set"),
        ([*run, "--config", str(bad_toml)], "TOML"),
        ([*run, "--config", str(binary)], "--config"),
        ([*run, "--config", str(tmp / "nope.toml")], "--config"),
        ([*run, "--config", str(other)], "prostate"),
        ([*run, "--config", str(unknown_key)], "bogus"),
        ([*run, "--num-labelled", "3"], "--num-labelled"),
        ([*run, "--num-labelled", "0"], "positive integer"),
        ([*run, "--num-labelled", "two"], "positive integer"),
        ([*run, "--combinations", "7"], "--combinations"),
        ([*run, "--num-labelled", "8", "--combinations", "4"], "--combinations"),
        ([*run, "--device", "gpu"], "--device"),
        ([*run, "--workers", "-1"], "non-negative"),
        ([*run, "--splits", "mine"], "invalid choice"),
        (["demo", "--seeds", "-1"], "non-negative"),
        (["demo", "--seeds", "0", "0"], "--seeds"),
        (["demo", "--out", str(bad_toml)], "--out"),
        (
            [
                "finetune",
                "--dataset",
                "acdc",
                "--data",
                str(data),
                "--out",
                "o",
                "--init",
                str(tmp / "none.pt"),
            ],
            "--init",
        ),
        (
            [
                "pretrain-local",
                "--dataset",
                "acdc",
                "--data",
                str(data),
                "--out",
                "o",
                "--encoder",
                str(tmp / "none.pt"),
            ],
            "--encoder",
        ),
        (["evaluate", "--dataset", "acdc", "--data", str(data), "--out", "o"], "--checkpoint"),
        (["prepare", "acdc", "--data", str(tmp / "missing"), "--out", str(tmp / "c")], "missing"),
    ]


def test_cli_bad_arguments_one_line_no_traceback(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, fragment in _bad_cases(tmp_path, data_dir):
        code, out, err = _run_main(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (argv, code, err)
        assert len(lines) == 1, (argv, err)
        assert "Traceback" not in err
        assert fragment in lines[0], (argv, lines[0])
        assert out == "" or "usage" not in out


def test_cli_cuda_requested_without_cuda(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: asking for it is not an error")
    code, _, err = _run_main(
        [
            "run",
            "--dataset",
            "acdc",
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cuda",
        ],
        capsys,
    )
    assert code == 2
    assert "CUDA is not available" in err
    assert len(err.strip().splitlines()) == 1


def test_python_m_contrastlocal_bad_argument_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastlocal",
            "run",
            "--dataset",
            "acdc",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "finetune.bogus=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "bogus" in proc.stderr


def test_build_parser_defaults() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--dataset",
            "mmwhs",
            "--data",
            "d",
            "--out",
            "o",
            "--set",
            "a.b=1",
            "--set",
            "c.d=2",
        ]
    )
    assert args.set == ["a.b=1", "c.d=2"]
    assert args.num_labelled is None
    assert args.combinations is None
    assert args.splits == "paper"
    assert args.cache is None


@pytest.mark.slow
def test_cli_demo_quick_table_and_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    code, printed, err = _run_main(
        ["demo", "--quick", "--seeds", "0", "1", "--out", str(out), "--no-progress"], capsys
    )
    assert code == 0, err
    for row in ("| random init |", "| G^D |", "| G^D + L^D |"):
        assert row in printed
    assert "|X_tr| = 1 (Dice)" in printed
    assert "|X_tr| = 2 (Dice)" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"random", "GD", "GD+LD", "benchmark"}
    for key, row in results.items():
        assert set(row) == ({"all"} if key == "benchmark" else {"1", "2"})
        for values in row.values():
            assert len(values) == 2
            assert all(isinstance(v, float) and math.isfinite(v) and 0 <= v <= 1 for v in values)
    for name in (
        "results.png",
        "loss_curves.png",
        "dice_per_class.png",
        "partitions.png",
        "embeddings.png",
    ):
        assert (out / "plots" / name).stat().st_size > 1000


@pytest.mark.slow
def test_cli_stage_subcommands_chain_on_fixture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from contrastlocal.data.fixtures import write_acdc_fixture

    data = write_acdc_fixture(tmp_path / "raw", num_patients=5, num_testing=0)
    common = [
        "--dataset",
        "acdc",
        "--data",
        str(data),
        "--cache",
        str(tmp_path / "cache"),
        "--splits",
        "auto",
        "--n4",
        "none",
        "--workers",
        "0",
        "--no-progress",
        *_sets(TINY),
    ]
    g, loc, ft, ev = (tmp_path / n for n in ("global", "local", "ft", "ev"))
    steps = [
        ["pretrain-global", "--out", str(g), *common],
        ["pretrain-local", "--out", str(loc), "--encoder", str(g / "final.pt"), *common],
        ["finetune", "--out", str(ft), "--init", str(loc / "final.pt"), *common],
        ["evaluate", "--out", str(ev), "--checkpoint", str(ft / "best.pt"), *common],
    ]
    for argv in steps:
        code, _, err = _run_main(argv, capsys)
        assert code == 0, (argv[0], err)
    report = json.loads((ev / "evaluation.json").read_text())
    assert report["summary"]["num_volumes"] == 1
    assert 0.0 <= report["summary"]["dice_mean"] <= 1.0
    assert (g / "plots" / "partitions.png").is_file()
    assert (g / "plots" / "embeddings.png").is_file()
    assert (ft / "plots" / "dice_per_class.png").is_file()


def test_prepare_root_is_a_deprecated_alias_of_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One word for the dataset folder (`--data`); `prepare --root` still works and warns."""
    from contrastlocal.data.fixtures import write_acdc_fixture

    data = write_acdc_fixture(tmp_path / "raw", num_patients=2, num_testing=0)
    common = ["--out", str(tmp_path / "c"), "--n4", "none", "--workers", "0", "--no-progress"]
    code, out_new, err_new = _run_main(["prepare", "acdc", "--data", str(data), *common], capsys)
    assert code == 0, err_new
    assert err_new == ""
    code, out_old, err_old = _run_main(["prepare", "acdc", "--root", str(data), *common], capsys)
    assert code == 0, err_old
    assert out_old == out_new  # the same cache
    assert "--root is deprecated; use --data" in err_old
    code, _, err = _run_main(["prepare", "acdc", *common], capsys)
    assert code == 2
    assert "--data" in err
