"""Atomic training checkpoints, resumption and architecture checks.

A checkpoint is one ``.pt`` file written with :func:`torch.save` to a temporary name in the same
folder, flushed to disk and renamed over the target (``os.replace``), so a process killed at any
moment leaves either the previous file or the new one, never a truncated one. Stages keep their
periodic checkpoints as ``<stage dir>/checkpoints/iter_<iteration>.pt`` (the newest few) and load
them with ``weights_only=True``: they hold tensors, numbers, strings and nested containers only.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "NON_TRAJECTORY_SETTINGS",
    "ResumeRefusedError",
    "architecture_signature",
    "check_architecture",
    "check_resume",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "stage_key",
    "weights_fingerprint",
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
    # serialised in memory, then written with ordinary file I/O: a full disk is an OSError
    # (ENOSPC, with the space needed and free), not an error deep inside the zip writer
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    data = buffer.getbuffer()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except OSError as err:
        Path(tmp_name).unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            free = shutil.disk_usage(target.parent).free
            msg = (
                f"no space left on device writing checkpoint {os.fspath(target)!r}: it needs "
                f"{_size(len(data))}, {_size(free)} free"
            )
            raise OSError(errno.ENOSPC, msg) from None
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.0f} KiB"


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


# ---- resume keys ---------------------------------------------------------------------------

#: Settings that do not change a stage's trajectory: a resume may change them.
NON_TRAJECTORY_SETTINGS: frozenset[str] = frozenset(
    {"iterations", "log_every", "checkpoint_every", "progress"}
)


class ResumeRefusedError(ValueError):
    """A stage cannot resume from what is on disk; the message says what changed.

    Examples
    --------
    >>> issubclass(ResumeRefusedError, ValueError)
    True
    """


def _hash_state(state: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def weights_fingerprint(source: nn.Module | Mapping[str, Any] | str | Path | None) -> str | None:
    """Digest of the network weights a stage starts from (its upstream weights).

    Parameters
    ----------
    source : torch.nn.Module, state dict, checkpoint path or None
        The upstream network, its ``state_dict()``, or a checkpoint written by a stage (its
        ``"model"`` entry is hashed, so rewriting the file with other metadata changes nothing).
        None (random initialisation) gives None.

    Returns
    -------
    str or None
        16 hex digits of the SHA-256 over every tensor's name, dtype, shape and bytes.

    Raises
    ------
    ValueError
        If a path is missing, unreadable or holds no ``"model"``.

    Examples
    --------
    >>> torch.manual_seed(0) is not None
    True
    >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    >>> weights_fingerprint(a) == weights_fingerprint(a.state_dict()), weights_fingerprint(a) == weights_fingerprint(b)
    (True, False)
    >>> weights_fingerprint(None) is None
    True
    """  # noqa: E501
    if source is None:
        return None
    if isinstance(source, nn.Module):
        return _hash_state(_unwrap(source).state_dict())
    if isinstance(source, Mapping):
        return _hash_state(source)
    data = load_checkpoint(source)
    if "model" not in data:
        msg = f"checkpoint {str(source)!r} holds no network weights (keys: {sorted(data)})."
        raise ValueError(msg)
    return _hash_state(data["model"])


def stage_key(
    settings: Mapping[str, Any],
    *,
    upstream: str | None,
    device_type: str,
    precision: str,
) -> dict[str, Any]:
    """Everything that determines a stage's trajectory: its settings, inputs and numerics.

    Store it as the ``"settings"`` of the stage's checkpoints and compare it with
    :func:`check_resume` before resuming.

    Parameters
    ----------
    settings : mapping
        The stage's settings (JSON-like; those in :data:`NON_TRAJECTORY_SETTINGS` are kept but
        not compared).
    upstream : str or None
        :func:`weights_fingerprint` of the weights the stage starts from (None: random).
    device_type : str
        ``"cpu"``, ``"cuda"`` or ``"mps"`` (``device_type`` of
        :class:`~contrastlocal.training.config.ResolvedRuntime`).
    precision : {"fp32", "bf16", "fp16"}
        The autocast precision in effect (``precision`` of
        :class:`~contrastlocal.training.config.ResolvedRuntime`).

    Returns
    -------
    dict
        `settings` plus ``upstream_weights``, ``device_type`` and ``precision``.

    Examples
    --------
    >>> key = stage_key({"learning_rate": 1e-3}, upstream="ab12", device_type="cpu",
    ...                 precision="fp32")
    >>> key["upstream_weights"], key["precision"]
    ('ab12', 'fp32')
    """
    if precision not in ("fp32", "bf16", "fp16"):
        msg = f"`precision` must be 'fp32', 'bf16' or 'fp16'; got {precision!r}."
        raise ValueError(msg)
    reserved = {"upstream_weights", "device_type", "precision"} & set(settings)
    if reserved:
        msg = f"`settings` must not hold the key(s) {sorted(reserved)} that stage_key adds."
        raise ValueError(msg)
    return {
        **dict(settings),
        "upstream_weights": upstream,
        "device_type": str(device_type),
        "precision": precision,
    }


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flat(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``model.image_size``), so a message names the leaf."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(_flat(item, name + "."))
        else:
            out[name] = item
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    done: int,
    iterations: int,
    stage: str,
    source: str | Path,
) -> None:
    """Refuse to resume a stage from a checkpoint made otherwise, or past the iterations asked.

    Parameters
    ----------
    saved : mapping
        The checkpoint's stage key (its ``"settings"``, see :func:`stage_key`).
    current : mapping
        This run's stage key.
    done : int
        Iterations the checkpoint has done (its ``"iteration"``).
    iterations : int
        Iterations this run asks for.
    stage : str
        Stage name, for the message.
    source : str or Path
        The checkpoint (or stage folder), for the message.

    Raises
    ------
    ResumeRefusedError
        One line: each changed setting with its old and new value (the upstream weights,
        precision and device type included), or the iterations already done when they exceed
        those asked for (a stage never reports a count it did not train).

    Examples
    --------
    >>> old = stage_key({"lr": 1e-3}, upstream="aa", device_type="cuda", precision="bf16")
    >>> new = stage_key({"lr": 1e-3}, upstream="bb", device_type="cuda", precision="fp32")
    >>> check_resume(old, new, done=10, iterations=20, stage="finetune", source="ckpt.pt")
    Traceback (most recent call last):
    ...
    contrastlocal.training.checkpoint.ResumeRefusedError: cannot resume stage 'finetune' from 'ckpt.pt': it was made with different settings (precision 'bf16' -> 'fp32'; upstream_weights 'aa' -> 'bb'); start it afresh (--fresh, or resume=False in Python) or use another output folder.
    """  # noqa: E501
    skip = NON_TRAJECTORY_SETTINGS
    theirs = {k: v for k, v in _flat(_canonical(dict(saved))).items() if k not in skip}
    ours = {k: v for k, v in _flat(_canonical(dict(current))).items() if k not in skip}
    where = repr(os.fspath(source))
    if theirs != ours:
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        shown = "; ".join(
            f"{k} {_short(theirs.get(k, '(absent)'))} -> {_short(ours.get(k, '(absent)'))}"
            for k in changed
        )
        msg = (
            f"cannot resume stage {stage!r} from {where}: it was made with different settings "
            f"({shown}); start it afresh (--fresh, or resume=False in Python) or use another "
            "output folder."
        )
        raise ResumeRefusedError(msg)
    if int(done) > int(iterations):
        msg = (
            f"cannot resume stage {stage!r} from {where}: it has already done {int(done)} "
            f"iterations, more than the {int(iterations)} asked for; ask for at least "
            f"{int(done)}, or start it afresh (--fresh, or resume=False in Python)."
        )
        raise ResumeRefusedError(msg)
