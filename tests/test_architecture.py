"""The import directions that keep the package's shape, checked by reading every module's imports.

Each module under ``src/contrastlocal`` is parsed (never imported); every import is collected:
``import`` and ``from ... import`` statements at module level, inside functions and classes and
under ``if TYPE_CHECKING:``, calls of ``importlib.import_module`` / ``__import__`` with a literal
name, module names of the package as values of a dict literal (the lazy ``_LAZY`` tables resolve
those), and attribute access on a module bound by an import (``F._kernel``). The rules are the
table ``RULES`` (which modules may import what, and when) and ``PUBLIC_ONLY`` (who may use only the
public names of whom). A broken rule fails with the importing file, line and import.

The layers, from the bottom: the framework-agnostic loss core (``functional`` with the helpers
``_typing``, ``_validation``, ``_array_api``) and the framework-free ``samplers``; then ``nn``,
``models``, ``data``; then ``training``; then ``cli``, which only ``__main__`` imports.

The torch fast path of the core is the files ``functional/_torch_*.py``. The agnostic core must
not import torch at all; it imports a ``_torch_*`` file only inside the function that dispatches
to it (when the inputs are torch tensors), and the ``_torch_*`` files themselves import torch only
inside their functions, so ``import contrastlocal.functional`` imports no framework.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import contrastlocal

PACKAGE_ROOT = Path(contrastlocal.__path__[0])
SRC_ROOT = PACKAGE_ROOT.parent

#: Pattern of the standard library (matched against the top-level name of the imported module).
STDLIB = "<stdlib>"

#: The agnostic core's private helpers at the top of the package, importable by the core.
CORE_HELPERS = ("contrastlocal._typing", "contrastlocal._validation", "contrastlocal._array_api")
FUNCTIONAL = ("contrastlocal.functional", *CORE_HELPERS)
TORCH_KERNELS = "contrastlocal.functional._torch_*"
ABOVE_FUNCTIONAL = (
    "contrastlocal.nn",
    "contrastlocal.models",
    "contrastlocal.data",
    "contrastlocal.training",
    "contrastlocal.cli",
)


@dataclass(frozen=True)
class Rule:
    """Which imports the modules matching `importers` (minus `exempt`) may make.

    `scope` is ``"import time"`` (statements run when the importer is imported: module level and
    class bodies, not functions, not ``if TYPE_CHECKING:``) or ``"anywhere"`` (every import,
    lazy and type-only ones included). An import in scope breaks the rule if its target matches
    a `forbidden` pattern, or if `allowed` is given and the target matches none of it.
    Patterns: a dotted module (matching it and its submodules), a glob, or ``STDLIB``.
    """

    name: str
    importers: tuple[str, ...]
    scope: str
    forbidden: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None
    exempt: tuple[str, ...] = ()


RULES: tuple[Rule, ...] = (
    Rule(
        name="functional imports only the stdlib, numpy and array-api-compat at import time",
        importers=FUNCTIONAL,
        scope="import time",
        allowed=(STDLIB, "numpy", "array_api_compat", *FUNCTIONAL),
        # the torch kernel files are loaded lazily, by the dispatching function; they have
        # their own rule (their autograd Functions are module-level classes: torch at import)
        forbidden=(TORCH_KERNELS,),
        exempt=(TORCH_KERNELS,),
    ),
    Rule(
        name="torch is imported only by the torch kernel files functional/_torch_*.py",
        importers=FUNCTIONAL,
        exempt=(TORCH_KERNELS,),
        scope="anywhere",
        forbidden=("torch", "functorch"),
    ),
    Rule(
        name="functional imports nothing above it",
        importers=FUNCTIONAL,
        scope="anywhere",
        forbidden=ABOVE_FUNCTIONAL,
    ),
    Rule(
        name="samplers import only the stdlib and numpy",
        importers=("contrastlocal.samplers",),
        scope="anywhere",
        allowed=(STDLIB, "numpy", "contrastlocal.samplers", *CORE_HELPERS),
    ),
    Rule(
        name="models, nn and data never import training",
        importers=("contrastlocal.models", "contrastlocal.nn", "contrastlocal.data"),
        scope="anywhere",
        forbidden=("contrastlocal.training",),
    ),
    Rule(
        name="nothing imports the cli (except __main__)",
        importers=("contrastlocal",),
        exempt=("contrastlocal.cli", "contrastlocal.__main__"),
        scope="anywhere",
        forbidden=("contrastlocal.cli",),
    ),
    Rule(
        name="the torch kernel files import only the stdlib, numpy, torch and functional at "
        "import time",
        importers=(TORCH_KERNELS,),
        scope="import time",
        allowed=(STDLIB, "numpy", "array_api_compat", "torch", *FUNCTIONAL),
    ),
)


@dataclass(frozen=True)
class PublicOnly:
    """Modules matching `importers` use only public names of `target`.

    A name is public if neither it nor any module on its path starts with an underscore and it
    is in the ``__all__`` of the module it is imported from (when that module defines one). With
    `package_only` the names must come from the package `target` itself (its ``__all__``), not
    from its submodules.
    """

    name: str
    importers: tuple[str, ...]
    target: str
    package_only: bool


PUBLIC_ONLY: tuple[PublicOnly, ...] = (
    PublicOnly(
        name="nn uses only the public names of functional",
        importers=("contrastlocal.nn",),
        target="contrastlocal.functional",
        package_only=True,
    ),
    PublicOnly(
        name="cli uses only the public names of training",
        importers=("contrastlocal.cli",),
        target="contrastlocal.training",
        package_only=False,
    ),
)


# --------------------------------------------------------------------------------------------
# reading the imports
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Import:
    """One import of `target` by `importer` (names: what a ``from`` import or access takes)."""

    importer: str
    path: str
    line: int
    target: str
    names: tuple[str, ...]
    import_time: bool
    text: str


def module_name(path: Path, root: Path = SRC_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    return {module_name(p, root.parent): p for p in sorted(root.rglob("*.py"))}


MODULES = package_modules()


class _Collector(ast.NodeVisitor):
    def __init__(
        self, importer: str, is_package: bool, path: str, source: str, known: set[str]
    ) -> None:
        self.importer = importer
        self.package = importer if is_package else importer.rpartition(".")[0]
        self.path = path
        self.source = source
        self.known = known
        self.depth = 0  # function nesting
        self.type_only = 0  # `if TYPE_CHECKING:` nesting
        self.aliases: dict[str, str] = {}  # local name -> module it is bound to
        self.found: list[Import] = []

    # ------------------------------------------------------------------ helpers
    def _add(self, node: ast.AST, target: str, names: tuple[str, ...] = ()) -> None:
        line = getattr(node, "lineno", 0)
        segment = ast.get_source_segment(self.source, node) or ""
        text = " ".join(segment.split())  # a statement over several lines, on one
        if isinstance(node, ast.Constant):  # a `_LAZY` entry: show the line it is on
            text = self.source.splitlines()[line - 1].strip()
        text = text if len(text) <= 120 else text[:117] + "..."
        import_time = self.depth == 0 and self.type_only == 0
        self.found.append(Import(self.importer, self.path, line, target, names, import_time, text))

    def _resolve(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        base = self.package.split(".")
        if level > 1:
            base = base[: len(base) - (level - 1)]
        return ".".join([*base, *([module] if module else [])])

    # ------------------------------------------------------------------ scopes
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]  # noqa: N815

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_tc = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self.visit(test)
        self.type_only += is_tc
        for stmt in node.body:
            self.visit(stmt)
        self.type_only -= is_tc
        for stmt in node.orelse:
            self.visit(stmt)

    # ------------------------------------------------------------------ imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)
            if alias.asname:
                self.aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._resolve(node.module, node.level)
        plain: list[str] = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.known:  # `from pkg import submodule`
                self._add(node, sub)
                self.aliases[alias.asname or alias.name] = sub
            else:
                plain.append(alias.name)
        if plain or not node.names:
            self._add(node, base, tuple(plain))

    @staticmethod
    def _literal_import(node: ast.AST) -> str | None:
        """The module a call ``import_module("x")`` / ``__import__("x")`` names, else None."""
        if not isinstance(node, ast.Call) or not node.args:
            return None
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        arg = node.args[0]
        if name in {"import_module", "__import__"} and isinstance(arg, ast.Constant):
            return arg.value if isinstance(arg.value, str) else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        target = self._literal_import(node)
        if target is not None:
            if target.startswith("."):
                level = len(target) - len(target.lstrip("."))
                target = self._resolve(target.lstrip(".") or None, level)
            self._add(node, target)
        self.generic_visit(node)

    def _bind(self, targets: list[ast.expr], value: ast.expr | None) -> None:
        # `mod = importlib.import_module("x")` binds a module like `import x as mod`
        module = self._literal_import(value) if value is not None else None
        if module is not None:
            for tgt in targets:
                if isinstance(tgt, ast.Name):
                    self.aliases[tgt.id] = module

    def visit_Assign(self, node: ast.Assign) -> None:
        self._bind(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._bind([node.target], node.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        # a value naming a module of the package: a lazy import through a `_LAZY` table
        for value in node.values:
            if isinstance(value, ast.Constant) and value.value in self.known:
                self.depth += 1  # resolved on first use, not at import time
                self._add(value, value.value)
                self.depth -= 1
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # `alias._name` or `alias.submodule` on a module bound by an import (the public names
        # of a module the import already brought in add nothing)
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            module = self.aliases[node.value.id]
            sub = f"{module}.{node.attr}"
            if sub in self.known:
                self._add(node, sub)
            elif node.attr.startswith("_"):
                self._add(node, module, (node.attr,))
        self.generic_visit(node)


def collect_imports(
    source: str, importer: str, *, is_package: bool = False, path: str = "<string>"
) -> list[Import]:
    """Every import that the module `importer` with text `source` makes (see the docstring)."""
    tree = ast.parse(source)
    collector = _Collector(importer, is_package, path, source, set(MODULES))
    collector.visit(tree)
    return collector.found


def all_imports() -> Iterator[Import]:
    for name, file in MODULES.items():
        yield from collect_imports(
            file.read_text(encoding="utf-8"),
            name,
            is_package=file.name == "__init__.py",
            path=str(file.relative_to(SRC_ROOT.parent)),
        )


# --------------------------------------------------------------------------------------------
# checking them
# --------------------------------------------------------------------------------------------
def matches(module: str, pattern: str) -> bool:
    if pattern == STDLIB:
        return module.split(".")[0] in sys.stdlib_module_names
    return (
        module == pattern
        or module.startswith(pattern + ".")
        or fnmatch.fnmatchcase(module, pattern)
        or fnmatch.fnmatchcase(module, pattern + ".*")
    )


def _any(module: str, patterns: tuple[str, ...]) -> bool:
    return any(matches(module, p) for p in patterns)


def _where(imp: Import) -> str:
    return f"{imp.path}:{imp.line}: `{imp.text}` (imports {imp.target})"


def rule_violations(rule: Rule, imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        if not _any(imp.importer, rule.importers) or _any(imp.importer, rule.exempt):
            continue
        if rule.scope == "import time" and not imp.import_time:
            continue
        if _any(imp.target, rule.forbidden) or (
            rule.allowed is not None and not _any(imp.target, rule.allowed)
        ):
            out.append(f"{_where(imp)} breaks '{rule.name}'")
    return out


def declared_all(module: str) -> tuple[str, ...] | None:
    """The literal ``__all__`` of a module of the package, read from its source (None if none)."""
    file = MODULES.get(module)
    if file is None:
        return None
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(node.value)  # type: ignore[arg-type]
            return tuple(value)
    return None


def public_only_violations(rule: PublicOnly, imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        if not _any(imp.importer, rule.importers) or not matches(imp.target, rule.target):
            continue
        parts = imp.target.split(".")
        private_path = any(p.startswith("_") for p in parts)
        if rule.package_only and imp.target != rule.target:
            why = f"reaches into the submodule {imp.target}"
        elif private_path:
            why = f"imports the private module {imp.target}"
        else:
            exported = declared_all(imp.target)
            bad = [
                n
                for n in imp.names
                if n.startswith("_") or (exported is not None and n not in exported)
            ]
            if not bad:
                continue
            why = f"uses {', '.join(bad)}, not in the public names of {imp.target}"
        out.append(f"{_where(imp)} breaks '{rule.name}': {why}")
    return out


def check(imports: list[Import]) -> list[str]:
    """Every violation of `RULES` and `PUBLIC_ONLY` among `imports`."""
    out: list[str] = []
    for rule in RULES:
        out += rule_violations(rule, imports)
    for public in PUBLIC_ONLY:
        out += public_only_violations(public, imports)
    return out


IMPORTS = list(all_imports())


# --------------------------------------------------------------------------------------------
# the package obeys the rules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_package_obeys_rule(rule: Rule) -> None:
    violations = rule_violations(rule, IMPORTS)
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("rule", PUBLIC_ONLY, ids=[r.name for r in PUBLIC_ONLY])
def test_package_uses_only_public_names(rule: PublicOnly) -> None:
    violations = public_only_violations(rule, IMPORTS)
    assert not violations, "\n".join(violations)


def test_the_reader_sees_the_package() -> None:
    # the checks above mean something only if the imports were found: spot-check known ones
    assert len(MODULES) > 40
    targets = {(i.importer, i.target) for i in IMPORTS}
    assert any(
        imp == "contrastlocal.__main__" and matches(t, "contrastlocal.cli") for imp, t in targets
    )
    assert ("contrastlocal.data.augment", "contrastlocal.data.augment._views") in targets
    assert ("contrastlocal.data.fixtures", "contrastlocal.data.synthetic") in targets
    # the torch kernels are found, and the agnostic dispatcher imports them lazily
    assert any(matches(m, TORCH_KERNELS) for m in MODULES)
    lazy = [i for i in IMPORTS if matches(i.target, TORCH_KERNELS) and _any(i.importer, FUNCTIONAL)
            and not matches(i.importer, TORCH_KERNELS)]  # one kernel file using another is not it
    assert lazy
    assert not any(i.import_time for i in lazy)
    # a `_LAZY` table entry counts as a lazy import of its module
    assert any(
        i.importer == "contrastlocal.data"
        and i.target == "contrastlocal.data.readers"
        and not i.import_time
        for i in IMPORTS
    )


# --------------------------------------------------------------------------------------------
# the checker catches planted violations (so the tests above can fail)
# --------------------------------------------------------------------------------------------
PLANTED = [
    # (importer, is_package, source, rule name expected in the message)
    ("contrastlocal.functional._planted", False, "import torch\n", RULES[0].name),
    ("contrastlocal.functional._planted", False, "import scipy\n", RULES[0].name),
    (
        "contrastlocal.functional._planted",
        False,
        "from ._torch_kernel import fused\n",
        RULES[0].name,
    ),
    (
        "contrastlocal.functional._planted",
        False,
        "import importlib\ntorch = importlib.import_module('torch')\n",
        RULES[0].name,
    ),
    ("contrastlocal._validation", False, "import torch.nn.functional as F\n", RULES[0].name),
    ("contrastlocal.functional._planted", False, "def f():\n    import torch\n", RULES[1].name),
    (
        "contrastlocal.functional._planted",
        False,
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
        RULES[1].name,
    ),
    ("contrastlocal.functional._torch_planted", False, "import jax\n", RULES[-1].name),
    ("contrastlocal.functional", True, "def f():\n    from ..nn import X\n", RULES[2].name),
    (
        "contrastlocal.functional._planted",
        False,
        "def f():\n    from contrastlocal.data import augment\n",
        RULES[2].name,
    ),
    ("contrastlocal.samplers._planted", False, "def f():\n    import torch\n", RULES[3].name),
    ("contrastlocal.samplers._planted", False, "from ..functional import x\n", RULES[3].name),
    ("contrastlocal.nn._planted", False, "from ..training import stages\n", RULES[4].name),
    (
        "contrastlocal.data._planted",
        False,
        "_LAZY = {'run_loop': 'contrastlocal.training.stages'}\n",
        RULES[4].name,
    ),
    (
        "contrastlocal.models._planted",
        False,
        "import importlib\ndef f():\n    importlib.import_module('contrastlocal.training')\n",
        RULES[4].name,
    ),
    ("contrastlocal.training._planted", False, "from .. import cli\n", RULES[5].name),
    (
        "contrastlocal.data._planted",
        False,
        "def f():\n    import contrastlocal.cli\n",
        RULES[5].name,
    ),
    (
        "contrastlocal.nn._planted",
        False,
        "from ..functional._kernel import masked_contrastive_loss\n",
        PUBLIC_ONLY[0].name,
    ),
    (
        "contrastlocal.nn._planted",
        False,
        "from ..functional import _rank_tagged_ids\n",
        PUBLIC_ONLY[0].name,
    ),
    (
        "contrastlocal.nn._planted",
        False,
        "from .. import functional as F\ny = F._kernel\n",
        PUBLIC_ONLY[0].name,
    ),
    (
        "contrastlocal.nn._planted",
        False,
        "import contrastlocal.functional as F\ndef f():\n    return F._helper(1)\n",
        PUBLIC_ONLY[0].name,
    ),
    (
        "contrastlocal.cli",
        False,
        "def f():\n    from contrastlocal.training.stages import _resolve_device\n",
        PUBLIC_ONLY[1].name,
    ),
    ("contrastlocal.cli", False, "from .training import _distributed\n", PUBLIC_ONLY[1].name),
    ("contrastlocal.cli._parser", False, "from ..training._loop import x\n", PUBLIC_ONLY[1].name),
]


@pytest.mark.parametrize(("importer", "is_package", "source", "rule"), PLANTED)
def test_planted_violation_is_reported(
    importer: str, is_package: bool, source: str, rule: str
) -> None:
    path = "src/" + importer.replace(".", "/") + ".py"
    violations = check(collect_imports(source, importer, is_package=is_package, path=path))
    assert len(violations) >= 1
    assert any(rule in v for v in violations), violations
    # the message names the file, the line and the import, as they are in the source
    first = next(v for v in violations if rule in v)
    match = re.match(rf"{re.escape(path)}:(\d+): `([^`]+)` \(imports ", first)
    assert match, first
    line = source.splitlines()[int(match.group(1)) - 1]
    assert match.group(2).split("(")[0].strip() in " ".join(source.split()), first
    assert match.group(2).split()[0] in line, first


ALLOWED = [
    # the torch kernel file imports torch inside its functions; the dispatcher imports it lazily
    ("contrastlocal.functional._torch_planted", False, "def f():\n    import torch\n"),
    # a kernel file's module-level autograd Function needs torch at import time
    (
        "contrastlocal.functional._torch_planted",
        False,
        "import torch\nfrom ._torch_kernel import normalize\n",
    ),
    (
        "contrastlocal.functional._planted",
        False,
        "import numpy as np\nfrom array_api_compat import is_torch_namespace\n"
        "from .._validation import check_choice\nfrom ._kernel import x\n"
        "def f():\n    from ._torch_kernel import fused\n",
    ),
    ("contrastlocal.samplers._planted", False, "import math\nimport numpy as np\n"),
    (
        "contrastlocal.nn._planted",
        False,
        "import torch\nfrom ..functional import extract_regions\n",
    ),
    ("contrastlocal.__main__", False, "from contrastlocal.cli import main\n"),
    (
        "contrastlocal.cli",
        False,
        "from .training import finetune\nfrom .training.plots import plot_loss_curves\n",
    ),
    ("contrastlocal.training._planted", False, "from ..data import augment\nimport torch\n"),
    # launching the command line in a subprocess is not importing it
    ("contrastlocal.training._x", False, "cmd = ['python', '-m', 'contrastlocal.cli', 'run']\n"),
]


@pytest.mark.parametrize(("importer", "is_package", "source"), ALLOWED)
def test_allowed_imports_are_not_reported(importer: str, is_package: bool, source: str) -> None:
    assert check(collect_imports(source, importer, is_package=is_package)) == []
