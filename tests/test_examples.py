"""Every example script: ``--help`` and ``--smoke`` run in a subprocess and exit 0."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = (
    "quickstart.py",
    "own_trainer.py",
    "monai_trainer.py",
    "ablations.py",
    "acdc_full.py",
    "prostate_full.py",
    "mmwhs_full.py",
    "cityscapes_full.py",
)
HAS_MONAI = importlib.util.find_spec("monai") is not None


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:contrastlocal"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
        env=env,
        check=False,
    )


def test_examples_list_is_complete() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith(("_", "plot_"))}
    assert found == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_help(script: str) -> None:
    proc = _run([str(EXAMPLES / script), "--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "--smoke" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "monai_trainer.py"])
def test_example_smoke(script: str) -> None:
    proc = _run([str(EXAMPLES / script), "--smoke"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MONAI, reason="MONAI is not installed (optional `examples` extra)")
def test_example_monai_smoke() -> None:
    proc = _run([str(EXAMPLES / "monai_trainer.py"), "--smoke"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "BasicUNet pre-trained" in proc.stdout


def test_example_monai_without_monai_says_so() -> None:
    # hide MONAI (None in sys.modules makes its import fail) and run the script's main
    code = (
        "import sys, runpy; sys.modules['monai'] = None; "
        f"sys.argv = ['monai_trainer.py', '--smoke']; "
        f"runpy.run_path({str(EXAMPLES / 'monai_trainer.py')!r}, run_name='__main__')"
    )
    proc = _run(["-c", code], timeout=120)
    assert proc.returncode == 3
    assert "MONAI is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_example_full_recipe_requires_data() -> None:
    proc = _run([str(EXAMPLES / "acdc_full.py")], timeout=120)
    assert proc.returncode == 2
    assert "--data is required" in proc.stderr
