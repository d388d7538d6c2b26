"""Fill the paper-number tables of docs/reproducing.md from the package's shipped data.

Every block of the page delimited by ``<!-- paper-table: N [dataset] -->`` and
``<!-- /paper-table -->`` holds :func:`contrastlocal.paper.paper_table` ``(N, dataset)`` as
Markdown. Regenerate after the data changes with::

    python docs/_ext/paper_tables.py

``tests/test_paper.py`` regenerates the blocks and fails if the committed page differs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from contrastlocal.paper import paper_table

PAGE = Path(__file__).resolve().parents[1] / "reproducing.md"
_BLOCK = re.compile(
    r"(<!-- paper-table: (\d+)(?: (\w+))? -->\n)(.*?)(<!-- /paper-table -->)", re.DOTALL
)


def render(text: str) -> str:
    """Return `text` with every paper-table block refilled from the shipped data."""

    def fill(match: re.Match[str]) -> str:
        table = paper_table(int(match.group(2)), match.group(3))
        return f"{match.group(1)}{table.to_markdown()}\n{match.group(5)}"

    return _BLOCK.sub(fill, text)


def blocks(text: str) -> list[tuple[int, str | None]]:
    """(table, dataset) of every paper-table block of `text`, in order."""
    return [(int(m.group(2)), m.group(3)) for m in _BLOCK.finditer(text)]


if __name__ == "__main__":
    page = Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE
    page.write_text(render(page.read_text(encoding="utf-8")), encoding="utf-8")
