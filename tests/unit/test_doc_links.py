"""Every relative link of the README and of docs/ leads to a file or folder of the
repository, so moving or renaming one cannot leave a page pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.helpers import REPO

# `](target)` or `](target "title")`, outside code; the target stops at a space or `)`.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text that point into the repository, without their
    #fragment: code blocks and code spans left out, and URLs, mail and bare anchors too."""
    targets = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            targets.append(target.split("#", 1)[0])
    return targets


def test_the_link_parser_finds_relative_links_only() -> None:
    """A check that finds no links would pass on anything: the parser is held to a sample."""
    sample = "\n".join(
        [
            'See [a](docs/a.md), [b](../b.md#part "title") and ![c](images/c.png).',
            "Not [web](https://example.com/x), [mail](mailto:x@example.com), [top](#top),",
            "nor `[code](span.md)`.",
            "```",
            "[fenced](fenced.md)",
            "```",
        ]
    )
    assert relative_links(sample) == ["docs/a.md", "../b.md", "images/c.png"]


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    """Each relative link of the page names an existing path, read from the page's folder."""
    broken = [
        target
        for target in relative_links(page.read_text(encoding="utf-8"))
        if not (page.parent / target).exists()
    ]
    assert broken == [], f"{page.relative_to(REPO)}: {broken}"


def test_the_pages_link_somewhere() -> None:
    """The README and the docs index link into docs/ (a parser gone blind finds nothing)."""
    readme = relative_links((REPO / "README.md").read_text(encoding="utf-8"))
    index = relative_links((REPO / "docs" / "README.md").read_text(encoding="utf-8"))
    assert "docs/README.md" in readme
    assert len(index) >= 10
