"""Metrics log (JSON lines) and progress bar of the training stages (private)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "Progress", "read_metrics"]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSON-lines log; on resume, entries after the resumed iteration are dropped."""

    def __init__(self, path: Path | None, *, resume_iteration: int | None = None) -> None:
        self.path = path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_iteration is None:
            path.write_text("")
        elif path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= resume_iteration
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.path is None:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(_plain(record)) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a stage's ``metrics.jsonl`` (one record per line).

    Parameters
    ----------
    path : str or Path
        The log file.

    Returns
    -------
    list of dict
        Training records (``stage``, ``iteration``, ``loss``, ``it_per_s``, ``elapsed_s``) and
        validation records (``iteration``, ``val_dice``, ...), in order.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from contrastlocal.training import read_metrics
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     log = Path(tmp) / "metrics.jsonl"
    ...     _ = log.write_text(json.dumps({"stage": "global", "iteration": 50, "loss": 4.2}))
    ...     records = read_metrics(log)
    >>> records[0]["iteration"], records[0]["loss"]
    (50, 4.2)
    """
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class Progress:
    """A tqdm bar when enabled and stderr is a terminal; otherwise silent."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True, leave=False
            )

    def update(self, n: int = 1) -> None:
        """Advance by `n` iterations."""
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Show values (loss, validation Dice) next to the bar."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
