"""Settings of a command: the dataset's preset, a TOML file, ``--set`` items, ``--device``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrastlocal.training import ExperimentConfig

__all__ = ["UsageError", "experiment", "parse_set_option"]


class UsageError(ValueError):
    """A bad argument found after parsing (reported like a parser error)."""


def parse_set_option(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items into a mapping of dotted keys to values.

    Parameters
    ----------
    items : sequence of str
        Each ``"section.key=value"``; the value is read as a TOML literal (``10``, ``1e-3``,
        ``true``, ``[16, 32]``, ``"text"``); a value that is not valid TOML is kept as a string.

    Returns
    -------
    dict
        ``{"section.key": value}``, in order (a later item wins).

    Raises
    ------
    ValueError
        If an item has no ``=`` or an empty key.

    Examples
    --------
    >>> parse_set_option(["finetune.iterations=50", "runtime.device=cpu", "model.channels=[4, 8]"])
    {'finetune.iterations': 50, 'runtime.device': 'cpu', 'model.channels': [4, 8]}
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            msg = f"`--set` expects section.key=value; got {item!r}."
            raise ValueError(msg)
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.is_file():
        msg = f"`--config` {os.fspath(path)!r} does not exist or is not a file."
        raise UsageError(msg)
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        msg = f"`--config` {os.fspath(path)!r} is not valid TOML: {err}."
        raise UsageError(msg) from None
    except UnicodeDecodeError:
        msg = f"`--config` {os.fspath(path)!r} is not a UTF-8 text file."
        raise UsageError(msg) from None
    return data


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            msg = f"`--device {device}` was asked for but CUDA is not available on this machine."
            raise UsageError(msg)
    elif device.startswith("mps"):
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            msg = f"`--device {device}` was asked for but MPS is not available on this machine."
            raise UsageError(msg)


def experiment(args: argparse.Namespace, dataset: str) -> ExperimentConfig:
    """Build the settings: preset of `dataset`, TOML file, ``--set``, ``--device``."""
    from contrastlocal.training import preset

    cfg = preset(dataset)
    if getattr(args, "config", None) is not None:
        data = _read_toml(Path(args.config))
        named = data.pop("preset", data.get("dataset", dataset))
        if named != dataset:
            msg = (
                f"`--config` {os.fspath(args.config)!r} is for dataset {named!r}, but "
                f"--dataset is {dataset!r}."
            )
            raise UsageError(msg)
        try:
            cfg = cfg.replace(**data)
        except (ValueError, TypeError) as err:
            msg = f"`--config` {os.fspath(args.config)!r}: {err}"
            raise UsageError(msg) from None
    overrides = parse_set_option(getattr(args, "set", None) or [])
    if overrides:
        try:
            cfg = cfg.replace(**overrides)
        except (ValueError, TypeError) as err:
            msg = f"`--set`: {err}"
            raise UsageError(msg) from None
    if cfg.dataset != dataset:
        msg = f"the settings name dataset {cfg.dataset!r}, but --dataset is {dataset!r}."
        raise UsageError(msg)
    device = getattr(args, "device", None)
    if device is not None:
        cfg = cfg.replace(runtime={"device": device})
    _check_device(cfg.runtime.device)
    if getattr(args, "no_progress", False):
        cfg = cfg.replace(runtime={"progress": False})
    return cfg
