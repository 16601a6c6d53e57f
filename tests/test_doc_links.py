"""Every relative link of the README and docs/ leads to a file of the tree: moving a folder breaks
them silently otherwise (moving the tooling under tools/ broke three plots' links)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def broken_links(root: Path) -> list[str]:
    broken = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)}: {target}")
    return broken


def test_every_relative_link_of_the_docs_resolves():
    assert broken_links(ROOT) == []


def test_a_link_to_a_moved_file_is_named(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "plot.png").write_bytes(b"")
    (tmp_path / "README.md").write_text("[runbook](docs/runbook.md) and [web](https://example.com/x)\n")
    (tmp_path / "docs" / "runbook.md").write_text("![plot](../tools/plot.png) ![old](../benchmarks/plot.png)\n")
    assert broken_links(tmp_path) == ["docs/runbook.md: ../benchmarks/plot.png"]
