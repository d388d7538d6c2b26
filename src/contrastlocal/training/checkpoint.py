"""Atomic training checkpoints, resumption and architecture checks.

A checkpoint is one ``.pt`` file written with :func:`torch.save` to a temporary name in the same
folder, flushed to disk and renamed over the target (``os.replace``), so a process killed at any
moment leaves either the previous file or the new one, never a truncated one. Stages keep their
periodic checkpoints as ``<stage dir>/checkpoints/iter_<iteration>.pt`` (the newest few) and load
them with ``weights_only=True``: they hold tensors, numbers, strings and nested containers only.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "architecture_signature",
    "check_architecture",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
]

_ITER_RE = re.compile(r"^iter_(\d+)\.pt$")


def _unwrap(module: nn.Module) -> nn.Module:
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else module


def architecture_signature(module: nn.Module) -> dict[str, Any]:
    """Class name and the shape of every state-dict tensor of `module`.

    Parameters
    ----------
    module : torch.nn.Module
        The network (a ``torch.compile`` wrapper is looked through).

    Returns
    -------
    dict
        ``{"class": name, "shapes": {key: [sizes...]}}``.

    Examples
    --------
    >>> from torch import nn
    >>> from contrastlocal.training import architecture_signature
    >>> architecture_signature(nn.Linear(3, 2))["shapes"]
    {'weight': [2, 3], 'bias': [2]}
    """
    net = _unwrap(module)
    shapes = {k: [int(s) for s in v.shape] for k, v in net.state_dict().items()}
    return {"class": type(net).__name__, "shapes": shapes}


def check_architecture(signature: Mapping[str, Any], module: nn.Module, source: str) -> None:
    """Raise if a checkpoint's architecture differs from `module`'s.

    Parameters
    ----------
    signature : mapping
        As returned by :func:`architecture_signature` (stored in every checkpoint).
    module : torch.nn.Module
        The network the checkpoint is about to be loaded into.
    source : str
        Where the signature comes from (a path), for the message.

    Raises
    ------
    ValueError
        Naming the class or the first missing, unexpected or differently shaped tensor.

    Examples
    --------
    >>> from torch import nn
    >>> from contrastlocal.training import architecture_signature, check_architecture
    >>> signature = architecture_signature(nn.Linear(3, 2))
    >>> check_architecture(signature, nn.Linear(3, 2), "a.pt")  # same shapes: no error
    >>> try:
    ...     check_architecture(signature, nn.Linear(4, 2), "a.pt")
    ... except ValueError:
    ...     print("rejected")
    rejected
    """
    mine = architecture_signature(module)
    if signature.get("class") != mine["class"]:
        msg = (
            f"checkpoint {source} holds a {signature.get('class')}, not a {mine['class']}: "
            "it comes from another stage or architecture."
        )
        raise ValueError(msg)
    theirs: Mapping[str, Any] = signature.get("shapes", {})
    ours: Mapping[str, Any] = mine["shapes"]
    for key in ours:
        if key not in theirs:
            msg = (
                f"checkpoint {source} comes from another architecture: it has no tensor {key!r} "
                "(check model.channels, the number of classes and local_stage settings)."
            )
            raise ValueError(msg)
        if list(theirs[key]) != list(ours[key]):
            msg = (
                f"checkpoint {source} comes from another architecture: tensor {key!r} has shape "
                f"{tuple(theirs[key])} there and {tuple(ours[key])} here (check model.channels, "
                "model.image_size, model.num_classes and the stage settings)."
            )
            raise ValueError(msg)
    extra = [k for k in theirs if k not in ours]
    if extra:
        msg = (
            f"checkpoint {source} comes from another architecture: it has tensor {extra[0]!r} "
            "that this network lacks."
        )
        raise ValueError(msg)


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write `payload` to `path` atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : str or Path
        Target file; its folder is created if needed.
    payload : mapping
        Anything :func:`torch.save` accepts; keep to tensors, numbers, strings, lists and dicts
        so :func:`load_checkpoint` can read it with ``weights_only=True``.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from contrastlocal.training import load_checkpoint, save_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_checkpoint(Path(d) / "a.pt", {"iteration": 3, "w": torch.ones(2)})
    ...     load_checkpoint(p)["iteration"]
    3
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
        The file.
    map_location : str or torch.device, default "cpu"
        Where tensors are loaded.

    Returns
    -------
    dict
        The payload.

    Raises
    ------
    ValueError
        If the file does not exist or cannot be read as a checkpoint.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from contrastlocal.training import load_checkpoint, save_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_checkpoint(Path(d) / "a.pt", {"iteration": 3, "w": torch.ones(2)})
    ...     payload = load_checkpoint(path)
    >>> payload["iteration"], payload["w"].tolist()
    (3, [1.0, 1.0])
    """
    p = Path(path)
    if not p.is_file():
        msg = f"checkpoint {str(p)!r} does not exist."
        raise ValueError(msg)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors of a foreign or damaged file
        msg = f"checkpoint {str(p)!r} could not be read ({type(exc).__name__}: {exc})."
        raise ValueError(msg) from exc
    if not isinstance(data, dict):
        msg = f"checkpoint {str(p)!r} does not hold a dictionary; got {type(data).__name__}."
        raise ValueError(msg)
    return data


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints ``iter_<n>.pt`` in `directory`, oldest first.

    Parameters
    ----------
    directory : str or Path
        A stage's ``checkpoints`` folder (missing → empty list).

    Returns
    -------
    list of (int, Path)
        Iteration and file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from contrastlocal.training import list_checkpoints, save_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for it in (20, 10):
    ...         _ = save_checkpoint(Path(d) / f"iter_{it}.pt", {"iteration": it})
    ...     found = [(it, p.name) for it, p in list_checkpoints(d)]
    >>> found
    [(10, 'iter_10.pt'), (20, 'iter_20.pt')]
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _ITER_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """Return the newest periodic checkpoint in `directory`, or None.

    Parameters
    ----------
    directory : str or Path
        A stage's ``checkpoints`` folder.

    Returns
    -------
    Path or None
        The file with the largest iteration.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from contrastlocal.training import latest_checkpoint, save_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     empty = latest_checkpoint(d)
    ...     for it in (10, 20):
    ...         _ = save_checkpoint(Path(d) / f"iter_{it}.pt", {"iteration": it})
    ...     newest = latest_checkpoint(d).name
    >>> empty, newest
    (None, 'iter_20.pt')
    """
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def load_weights(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the network weights of a stage checkpoint into `module`, checking the architecture.

    Parameters
    ----------
    module : torch.nn.Module
        Network of the same class and shapes as the one saved.
    path : str or Path
        A checkpoint written by a stage (periodic, ``final.pt`` or ``best.pt``).

    Returns
    -------
    dict
        The whole checkpoint payload.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, holds no network or comes from another architecture.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from torch import nn
    >>> from contrastlocal.training import architecture_signature, load_weights, save_checkpoint
    >>> source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> payload = {"model": source.state_dict(), "architecture": architecture_signature(source)}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = load_weights(target, save_checkpoint(Path(d) / "final.pt", payload))
    >>> torch.equal(target.weight, source.weight)
    True
    """
    data = load_checkpoint(path)
    if "model" not in data or "architecture" not in data:
        msg = f"checkpoint {str(path)!r} holds no network weights (keys: {sorted(data)})."
        raise ValueError(msg)
    check_architecture(data["architecture"], module, repr(str(path)))
    _unwrap(module).load_state_dict(data["model"])
    return data
