"""Optional dependencies checked when a command starts, naming the extra to install (private).

:func:`require` fails at once with one line (``pip install "contrastlocal[medical]"``) instead of
an ``ImportError`` found late, after minutes of work; :func:`optional` returns None with a
warning for features that can be skipped (plots without matplotlib).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MissingDependencyError", "MissingOptionalWarning", "optional", "require"]

# import name -> the name of the package to install, where they differ
_DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image"}


class MissingDependencyError(ImportError):
    """A package a command needs is not installed; the message names the extra that brings it."""


class MissingOptionalWarning(UserWarning):
    """An optional package is missing; the feature that needs it is skipped."""


def _importable(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _names(modules: str | Sequence[str]) -> list[str]:
    return [modules] if isinstance(modules, str) else list(modules)


def _install_hint(missing: Sequence[str], extra: str) -> str:
    packages = ", ".join(_DISTRIBUTION.get(m, m) for m in missing)
    return f"{packages} ({'is' if len(missing) == 1 else 'are'} missing): " + (
        f'pip install "contrastlocal[{extra}]"'
    )


def require(modules: str | Sequence[str], *, extra: str, purpose: str) -> list[ModuleType]:
    """Import modules a command cannot do without, or fail with one line naming the extra.

    Parameters
    ----------
    modules : str or sequence of str
        Import names (``"SimpleITK"``, ``"PIL"``, ...).
    extra : str
        The optional-dependency group of contrastlocal that installs them (``"medical"``).
    purpose : str
        What needs them, for the message (``"prepare acdc"``).

    Returns
    -------
    list of module
        The imported modules, in order.

    Raises
    ------
    MissingDependencyError
        If any is missing; the message lists all missing ones and the install command.

    Examples
    --------
    >>> [m.__name__ for m in require("json", extra="torch", purpose="a doctest")]
    ['json']
    >>> require("no_such_module_xyz", extra="medical", purpose="prepare acdc")
    Traceback (most recent call last):
    ...
    contrastlocal._deps.MissingDependencyError: prepare acdc needs no_such_module_xyz (is missing): pip install "contrastlocal[medical]"
    """  # noqa: E501
    names = _names(modules)
    found = {n: _importable(n) for n in names}
    missing = [n for n, m in found.items() if m is None]
    if missing:
        msg = f"{purpose} needs {_install_hint(missing, extra)}"
        raise MissingDependencyError(msg, name=missing[0])
    return [m for m in found.values() if m is not None]


def optional(module: str, *, extra: str, purpose: str) -> ModuleType | None:
    """Import an optional module, or warn and return None when it is missing.

    Parameters
    ----------
    module : str
        Import name (``"matplotlib"``).
    extra : str
        The optional-dependency group that installs it.
    purpose : str
        What is skipped without it (``"the plots"``).

    Returns
    -------
    module or None
        The module, or None (after a :class:`MissingOptionalWarning`).

    Examples
    --------
    >>> optional("json", extra="torch", purpose="nothing").__name__
    'json'
    """
    found = _importable(module)
    if found is None:
        warnings.warn(
            f"{purpose} skipped: {_install_hint([module], extra)}",
            MissingOptionalWarning,
            stacklevel=2,
        )
    return found
