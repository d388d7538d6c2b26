"""The documentation covers the public API: every name in every ``__all__`` is in the API
reference (``docs/api.rst``) and has a valid numpydoc docstring (checked with
``numpydoc.validate``, the validator behind ``numpydoc lint``).

The Sphinx build itself (warnings as errors) runs in ``.ci/run``, not here: it executes the
gallery and takes longer than a unit test should. The doctests inside the docstrings run through
pytest's ``--doctest-modules``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import contrastlocal

numpydoc_validate = pytest.importorskip("numpydoc.validate")

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_SOURCES = [DOCS / "api.rst"]

# numpydoc checks we do not require: a "See Also" section (SA01) and an extended summary (ES01) are
# welcome but optional (STYLE.md §2.3). PR06 ("use int instead of integer") contradicts the
# project's type lines, which name the array's dtype kind and shape, e.g.
# ``partition_ids : integer array of shape (N,)`` (STYLE.md §2.3).
OPTIONAL_CHECKS = {"SA01", "ES01", "PR06"}
# For public methods of public classes the Examples section is optional too (the class has one).
OPTIONAL_CHECKS_METHODS = OPTIONAL_CHECKS | {"EX01"}


def _public_modules() -> Iterator[str]:
    """Every importable public module of the package (no ``_private`` part, no ``__main__``)."""
    yield "contrastlocal"
    for info in pkgutil.walk_packages(contrastlocal.__path__, prefix="contrastlocal."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        yield info.name


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if err.name == name:  # no such module (e.g. a class path): the caller moves up
            return None
        if (err.name or "").split(".")[0] == "contrastlocal":
            raise
        return None  # an optional dependency (torch, nibabel...) is missing


def _public_names() -> list[tuple[str, str]]:
    """(module, name) for every name of every public module's ``__all__``."""
    pairs = []
    for module_name in _public_modules():
        module = _import(module_name)
        if module is None:
            continue
        pairs.extend((module_name, name) for name in getattr(module, "__all__", ()))
    return pairs


def _documented_names() -> set[str]:
    """Fully qualified names listed in the autosummary tables of the API reference sources."""
    names: set[str] = set()
    for source in API_SOURCES:
        current = None
        in_autosummary = False
        for line in source.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            match = re.match(r"\.\. (?:current)?module:: (\S+)", stripped)
            if match:
                current = match.group(1)
                in_autosummary = False
                continue
            if stripped.startswith(".. autosummary::"):
                in_autosummary = True
                continue
            if in_autosummary:
                if not stripped or stripped.startswith(":"):
                    continue
                if not line.startswith("   ") or stripped.startswith(("..", "```")):
                    in_autosummary = False
                    continue
                entry = stripped.lstrip("~")
                names.add(entry if entry.startswith("contrastlocal") else f"{current}.{entry}")
    return names


def _resolve(qualified: str) -> Any:
    module_name, _, attr = qualified.rpartition(".")
    while module_name:
        module = _import(module_name)
        if module is not None:
            obj: Any = module
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj
        module_name, _, head = module_name.rpartition(".")
        attr = f"{head}.{attr}"
    msg = f"cannot import {qualified}"
    raise ImportError(msg)


PUBLIC_NAMES = _public_names()
DOCUMENTED = sorted(_documented_names())
DOCUMENTED_OBJECTS = [(name, _resolve(name)) for name in DOCUMENTED]


def _is_documentable(obj: Any) -> bool:
    """Functions and classes carry numpydoc docstrings; constants and type aliases do not."""
    return inspect.isclass(obj) or inspect.isroutine(obj)


# Overrides of torch hooks that the API pages leave out (`:exclude-members:` in the template).
EXCLUDED_METHODS = {"extra_repr"}


def _public_object(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (AttributeError, ImportError) as err:
        pytest.fail(f"`{name}` is in `{module}.__all__` but cannot be imported: {err}")


# A re-exported object is documented once, under one of its public paths: an entry counts for
# every public path with the same name bound to the same object. (Matching the name too keeps
# equal small constants, which Python may share as one object, apart.)
DOCUMENTED_KEYS = {(qualified.rpartition(".")[2], id(obj)) for qualified, obj in DOCUMENTED_OBJECTS}


def test_api_reference_lists_every_public_name() -> None:
    missing = [
        f"{module}.{name}"
        for module, name in PUBLIC_NAMES
        # `__version__` and other dunders are data shown on every page, not API entries
        if not name.startswith("__")
        and (name, id(_public_object(module, name))) not in DOCUMENTED_KEYS
    ]
    assert not missing, f"public names absent from docs/api.rst: {missing}"


def test_api_reference_lists_only_public_names() -> None:
    public = {f"{module}.{name}" for module, name in PUBLIC_NAMES}
    public_keys = {(n, id(_public_object(m, n))) for m, n in PUBLIC_NAMES}
    stray = [
        name
        for name, obj in DOCUMENTED_OBJECTS
        if name not in public and (name.rpartition(".")[2], id(obj)) not in public_keys
    ]
    assert not stray, f"docs/api.rst documents names that are in no `__all__`: {stray}"


def _dataclass_fields_documented(obj: Any) -> set[str]:
    """Fields of a dataclass documented in its "Attributes" section (numpydoc's convention for
    dataclasses: the fields are the constructor's parameters, described once, as attributes)."""
    if not (inspect.isclass(obj) and dataclasses.is_dataclass(obj)):
        return set()
    from numpydoc.docscrape import ClassDoc

    names = set()
    for attribute in ClassDoc(obj)["Attributes"]:
        names.update(part.strip() for part in attribute.name.split(","))
    return names


def _errors(qualified: str, optional: set[str]) -> list[str]:
    obj = _resolve(qualified)
    attributes = _dataclass_fields_documented(obj)
    errors = []
    for code, msg in numpydoc_validate.validate(qualified)["errors"]:
        if code in optional:
            continue
        if code == "PR01" and getattr(obj, "_is_protocol", False):
            continue  # a typing.Protocol is never instantiated: its "parameters" are not API
        if code == "PR01" and attributes:
            missing = set(re.findall(r"'([^']+)'", msg))
            if missing <= attributes:
                continue
        errors.append(f"{code}: {msg}")
    return errors


@pytest.mark.parametrize("qualified", [n for n, o in DOCUMENTED_OBJECTS if _is_documentable(o)])
def test_public_docstring_is_valid_numpydoc(qualified: str) -> None:
    errors = _errors(qualified, OPTIONAL_CHECKS)
    assert not errors, f"{qualified}:\n  " + "\n  ".join(errors)


def _public_methods() -> list[str]:
    methods = []
    for qualified, obj in DOCUMENTED_OBJECTS:
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if (
                attr.startswith("_")
                or attr in EXCLUDED_METHODS
                or not (
                    inspect.isfunction(value)
                    or isinstance(value, (classmethod, staticmethod, property))
                )
            ):
                continue
            methods.append(f"{qualified}.{attr}")
    return methods


@pytest.mark.parametrize("qualified", _public_methods())
def test_public_method_docstring_is_valid_numpydoc(qualified: str) -> None:
    errors = _errors(qualified, OPTIONAL_CHECKS_METHODS)
    assert not errors, f"{qualified}:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("qualified", [n for n, o in DOCUMENTED_OBJECTS if _is_documentable(o)])
def test_public_docstring_has_required_sections(qualified: str) -> None:
    # numpydoc.validate reports these through codes required above (EX01, PR01, RT01); this test
    # states the contract directly, so that widening OPTIONAL_CHECKS cannot silently drop it.
    from numpydoc.docscrape import ClassDoc, FunctionDoc

    obj = _resolve(qualified)
    doc = ClassDoc(obj) if inspect.isclass(obj) else FunctionDoc(obj)
    assert doc["Summary"], f"{qualified}: no one-line summary"
    assert any(">>>" in line for line in doc["Examples"]), f"{qualified}: no doctest example"
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature
        return
    params = [
        p
        for p in signature.parameters.values()
        if p.name not in {"self", "cls"} and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if params and not getattr(obj, "_is_protocol", False):
        assert doc["Parameters"] or _dataclass_fields_documented(obj), (
            f"{qualified}: no Parameters section"
        )
    if not inspect.isclass(obj) and signature.return_annotation not in (None, "None"):
        assert doc["Returns"] or doc["Yields"], f"{qualified}: no Returns section"


# -- the code of the user guide runs -------------------------------------------------------------
# Every ```python fence of these pages is executed (a fence inside a table cell counts too);
# fences meant as fragments use ```{code-block} python and are not run. A block whose imports
# are not installed (MONAI, Lightning, JAX in a slim environment) is skipped, saying which.

# Lightning's own warnings that the tests cannot act on: its pytree helper uses an API that torch
# deprecates (a FutureWarning), and a hint to use more DataLoader workers, raised only on machines
# with more than two cores.
LIGHTNING_WARNINGS = (
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning",
    r"ignore:The 'train_dataloader' does not have many workers:UserWarning",
)

GUIDE_PAGES = [
    DOCS / "quickstart.md",
    DOCS / "differences.md",
    DOCS / "reproducing.md",
    *sorted((DOCS / "user_guide").glob("*.md")),
]


def _python_blocks() -> list[Any]:
    params = []
    for page in GUIDE_PAGES:
        if not page.exists():
            continue
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            # a fence may open a list-table cell: "* - ```python" or "  - ```python"
            match = re.match(r"^(\s*(?:[*-] +)*)(`{3,})python\s*$", lines[i])
            if not match:
                i += 1
                continue
            width, fence = len(match.group(1)), match.group(2)
            start = i + 1
            i = start
            while not re.match(rf"^ {{{width}}}{fence}\s*$", lines[i]):
                i += 1
            code = "\n".join(line[width:] for line in lines[start:i])
            name = f"{page.relative_to(DOCS)}:{start}"
            params.append(pytest.param(code, id=name))
            i += 1
    return params


@pytest.mark.slow
@pytest.mark.filterwarnings(*LIGHTNING_WARNINGS)
@pytest.mark.parametrize("code", _python_blocks())
def test_user_guide_code_block_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    for module in re.findall(r"^(?:import|from) (\w+)", code, flags=re.M):
        if module != "contrastlocal" and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs `{module}`, not installed")
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})


# -- the Lightning example of the user guide, run for real -----------------------------------------


def _lightning_block() -> str:
    blocks = [
        param.values[0]
        for param in _python_blocks()
        if re.search(r"^import lightning\b", param.values[0], flags=re.M)
    ]
    assert len(blocks) == 1, f"expected one Lightning block in the user guide, found {len(blocks)}"
    return str(blocks[0])


@pytest.mark.slow
@pytest.mark.filterwarnings(*LIGHTNING_WARNINGS)
def test_user_guide_lightning_module_trains_with_the_package_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import numpy as np

    torch = pytest.importorskip("torch")
    lightning = pytest.importorskip(
        "lightning", reason="the Lightning example needs `lightning` (the `examples` extra)"
    )
    from tests import _reference as ref

    torch.manual_seed(0)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(_lightning_block(), "<docs: Lightning>", "exec"), namespace)

    # the page's own run: one epoch over its three batches, a finite positive loss logged
    trainer = namespace["trainer"]
    assert trainer.state.finished
    assert trainer.global_step == len(namespace["batches"]) == 3
    logged = float(trainer.callback_metrics["train/global_loss"])
    assert np.isfinite(logged)
    assert logged > 0
    assert capsys.readouterr().out.strip().endswith("3 True")

    # every step's loss is the global loss of the embeddings of that batch (loop oracle, the
    # parameters as they were before the step), and it falls on a batch seen again and again
    class Record(lightning.Callback):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.returned: list[float] = []
            self.expected: list[float] = []

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            views, image_ids, partition_ids = batch
            with torch.no_grad():
                z = module.network(views).double().numpy()
            self.expected.append(
                ref.global_loss(z, image_ids.numpy(), partition_ids.numpy(), "domain", 0.1)
            )

        def on_train_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int
        ) -> None:
            self.returned.append(float(outputs["loss"]))

    record = Record()
    batch = namespace["batches"][0]
    steps = 8
    again = namespace["L"].Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    again.fit(
        namespace["GlobalPretraining"](),
        torch.utils.data.DataLoader([batch] * steps, batch_size=None),
    )
    assert len(record.returned) == len(record.expected) == steps
    np.testing.assert_allclose(record.returned, record.expected, rtol=1e-5, atol=1e-6)
    assert record.returned[-1] < record.returned[0]
