"""`pyloto docs architecture [--check]`: docs/architecture.md's table of each state's step is
generated from the step registry and the statechart, every row leads to the function, the
README embeds the statechart's diagram, and `--check` fails while a page is stale."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

from pyloto_corp.application.steps import STEPS
from pyloto_corp.architecture_docs import begin_marker, end_marker
from pyloto_corp.bootstrap import load_chart
from pyloto_corp.cli import main
from pyloto_corp.domain.statechart_docs import mermaid
from tests.support.helpers import REPO

PAGE = REPO / "docs" / "architecture.md"
README = REPO / "README.md"
STEP_ROW = re.compile(
    r"^\| `(?P<state>[a-z_0-9]+)` \| (?P<queue>\w+) \| `(?P<name>[\w.]+)` \| "
    r"\[`(?P<path>[^`]+)`\]\((?P<link>[^)]+)\) \|$"
)
TERMINAL_ROW = re.compile(r"^\| `(?P<state>[a-z_0-9]+)` \| — \| terminal: no step \| — \|$")


def generated(text: str, part: str) -> list[str]:
    """The lines between a generated part's markers."""
    start = text.index(begin_marker(part)) + len(begin_marker(part))
    return text[start : text.index(end_marker(part))].strip("\n").splitlines()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_names_every_state_and_each_step_where_it_is_defined() -> None:
    """Every non-terminal state has a row naming its step, whose file exists and defines
    that function; every terminal state is marked as having no step."""
    chart = load_chart(REPO / "statecharts" / "inbound_message.yaml")
    rows = generated(PAGE.read_text(encoding="utf-8"), "steps")[2:]  # after the header
    steps = {m["state"]: m for m in map(STEP_ROW.match, rows) if m}
    terminals = {m["state"] for m in map(TERMINAL_ROW.match, rows) if m}
    assert len(steps) + len(terminals) == len(rows), rows
    assert set(steps) == {name for name, spec in chart.states.items() if not spec.terminal}
    assert terminals == {name for name, spec in chart.states.items() if spec.terminal}
    assert steps["media"]["name"] == "pyloto_corp.application.bursts.after_media"
    for state, row in steps.items():
        source = REPO / row["path"]
        assert source.is_file(), row["path"]
        assert row["link"] == f"../{row['path']}"
        module, _, function = row["name"].rpartition(".")
        assert row["path"] == "src/" + module.replace(".", "/") + ".py"
        assert STEPS[state].__qualname__ == function, state
        assert row["queue"] == chart.states[state].queue
        defined = {
            node.name
            for node in ast.parse(source.read_text(encoding="utf-8")).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        assert function in defined, (state, function, row["path"])


def test_the_readme_embeds_the_statechart_diagram_with_the_media_state() -> None:
    """The README's diagram is the one docs/statecharts draws, `media` included."""
    chart = load_chart(REPO / "statecharts" / "inbound_message.yaml")
    diagram = generated(README.read_text(encoding="utf-8"), "diagram")
    assert diagram == ["```mermaid", *mermaid(chart), "```"]
    assert "    deduped --> media: understand_media" in diagram
    drawn = (REPO / "docs" / "statecharts" / "inbound_message.md").read_text(encoding="utf-8")
    assert "\n".join(diagram[1:-1]) in drawn


def test_the_committed_pages_are_up_to_date(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    code, out, err = run(capsys, "docs", "architecture", "--check")
    assert (code, out, err) == (
        0,
        "generated docs up to date (docs/architecture.md, README.md)\n",
        "",
    )


@pytest.fixture
def pages(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the committed architecture page and README."""
    page, readme = tmp_path / "architecture.md", tmp_path / "README.md"
    shutil.copy(PAGE, page)
    shutil.copy(README, readme)
    return page, readme


def test_check_fails_with_a_diff_on_a_modified_page_and_render_repairs_it(
    pages: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand edit inside the generated part: --check exits 1 with a diff naming the page and
    writes nothing; the render puts the table back and keeps the prose around it."""
    page, readme = pages
    args = ("docs", "architecture", "--page", str(page), "--readme", str(readme))
    text = page.read_text(encoding="utf-8")
    edited = text.replace("steps.claim_send`", "steps.claim_it`", 1)
    edited = edited.replace("# Architecture", "# Architecture, edited by hand", 1)
    assert edited.count("claim_it") == 1
    page.write_text(edited, encoding="utf-8")

    code, out, err = run(capsys, *args, "--check")
    assert code == 1
    assert f"--- {page} (committed)" in out
    assert "-| `queued_outbound` | outbound | `pyloto_corp.application.steps.claim_it`" in out
    assert "+| `queued_outbound` | outbound | `pyloto_corp.application.steps.claim_send`" in out
    assert f"{page} out of date" in err
    assert "pyloto docs architecture" in err
    assert page.read_text(encoding="utf-8") == edited

    assert run(capsys, *args)[0] == 0
    assert page.read_text(encoding="utf-8") == text.replace(
        "# Architecture", "# Architecture, edited by hand", 1
    )
    assert run(capsys, *args, "--check")[0] == 0


def test_check_fails_on_a_stale_readme_diagram(
    pages: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    page, readme = pages
    readme.write_text(
        readme.read_text(encoding="utf-8").replace("    deduped --> media: understand_media\n", ""),
        encoding="utf-8",
    )
    code, out, err = run(
        capsys, "docs", "architecture", "--page", str(page), "--readme", str(readme), "--check"
    )
    assert code == 1
    assert "+    deduped --> media: understand_media" in out
    assert f"{readme} out of date" in err


def test_a_page_without_its_markers_is_refused_and_nothing_is_written(
    pages: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    page, readme = pages
    before = readme.read_text(encoding="utf-8")
    page.write_text("# Architecture\n\nNo generated part.\n", encoding="utf-8")
    code, _, err = run(capsys, "docs", "architecture", "--page", str(page), "--readme", str(readme))
    assert code == 2
    assert "expected one generated part 'steps'" in err
    assert readme.read_text(encoding="utf-8") == before
