"""README's quick start stays true: two commands, and CI runs the test command it gives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_quick_start_has_two_commands() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("contrastlocal demo --out demo_out")
    assert tests.endswith("python -m pytest")


def test_readme_test_command_is_what_ci_runs() -> None:
    _, tests = _quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in [line.strip() for line in ci]


def test_readme_demo_command_installs_the_console_script() -> None:
    demo, _ = _quick_start_commands()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'contrastlocal = "contrastlocal.cli:main"' in pyproject
    assert "-e" in demo
