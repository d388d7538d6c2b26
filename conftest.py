"""Root pytest configuration: skip torch-backed doctests where torch is absent."""

from __future__ import annotations

import importlib.util
import os

collect_ignore_glob: list[str] = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += [
        "src/contrastlocal/nn/*",
        "src/contrastlocal/models/*",
        "src/contrastlocal/training/*",
        "src/contrastlocal/data/*",
        "src/contrastlocal/cli.py",
        "src/contrastlocal/__main__.py",
    ]
else:
    collect_ignore_glob += ["src/contrastlocal/__main__.py"]

# Keep CPU runs reproducible and polite on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
