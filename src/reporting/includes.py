"""Numbers in README.md and docs/ come from the generated report, not from a hand: include blocks.

A document holds::

    <!-- generated from docs/results/cifar10_depth/summary.md -->
    ...the file's text, copied in by the report command...
    <!-- end generated -->

``python -m src.report`` rewrites the blocks that name a file it wrote (``refresh``); ``--check`` and the
test suite fail when a block differs from its file (``stale_blocks``), so a result typed or edited by hand
cannot survive the next check.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCUMENTS = ("README.md", "docs/results.md")  # where results are quoted, relative to the repository root
BLOCK = re.compile(r"(<!-- generated from (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def blocks(document: Path) -> list[tuple[str, str]]:
    """``(included path, current body)`` of every block in ``document``."""
    if not document.is_file():
        return []
    return [(match["path"], match["body"]) for match in BLOCK.finditer(document.read_text())]


def _inside(path: str, under: str) -> bool:
    return not under or Path(under).resolve() in Path(path).resolve().parents


def refresh(document: Path, under: str) -> bool:
    """Copy each included file below ``under`` into its block; whether ``document`` changed."""
    if not document.is_file():
        return False
    text = document.read_text()

    def body(match: re.Match) -> str:
        path = Path(match["path"])
        if not _inside(match["path"], under) or not path.is_file():
            return match[0]
        return match[1] + path.read_text() + match[4]

    new = BLOCK.sub(body, text)
    if new != text:
        document.write_text(new)
    return new != text


def stale_blocks(document: Path, under: str = "") -> list[str]:
    """A line for each block (below ``under``, if given) whose body is not its file's current text."""
    problems = []
    for path, body in blocks(document):
        if not _inside(path, under):
            continue
        if not Path(path).is_file():
            problems.append(f"{document}: includes {path}, which does not exist")
        elif Path(path).read_text() != body:
            problems.append(f"{document}: the block generated from {path} differs from it (regenerate the report)")
    return problems
