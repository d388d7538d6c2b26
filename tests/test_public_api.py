"""The public API: `__all__` entries resolve; `import contrastlocal` imports no array framework."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import contrastlocal


def test_import_contrastlocal_imports_no_torch():
    code = (
        "import sys\n"
        "import contrastlocal, contrastlocal.functional\n"
        "frameworks = ('torch', 'jax', 'cupy', 'array_api_strict')\n"
        "heavy = sorted(m for m in frameworks if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", ["contrastlocal", "contrastlocal.functional"])
def test_public_api_all_entries_resolve(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        if module == "contrastlocal" and name in {"LocalContrastiveLoss", "UNet",
                                                  "PartitionBatchSampler"}:
            continue  # owned by other areas; their own tests check them
        assert getattr(mod, name) is not None, name


def test_public_api_nn_entries_resolve():
    pytest.importorskip("torch")
    nn = importlib.import_module("contrastlocal.nn")
    for name in nn.__all__:
        assert getattr(nn, name) is not None
    assert contrastlocal.GlobalContrastiveLoss is nn.GlobalContrastiveLoss


def test_public_api_root_functional_names_are_the_functional_ones():
    from contrastlocal import functional

    assert contrastlocal.masked_contrastive_loss is functional.masked_contrastive_loss
    assert contrastlocal.global_contrastive_loss is functional.global_contrastive_loss
