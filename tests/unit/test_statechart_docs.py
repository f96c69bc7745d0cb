"""`pyloto statecharts render | check`: docs/statecharts/ is rendered from the loaded
statechart, byte for byte the same each time, and `check` fails while a page is stale."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pyloto_corp.adapters.statechart_yaml import load_statechart
from pyloto_corp.bootstrap import STATECHART_FILE, load_chart, statechart_dir
from pyloto_corp.cli import main
from pyloto_corp.domain.statechart import ANY_STATE
from pyloto_corp.domain.statechart_docs import dot, mermaid, render_markdown, stale_diff
from tests.support.helpers import REPO

SOURCE = f"statecharts/{STATECHART_FILE}"
PAGE = "inbound_message.md"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (`--out first`, the default docs/statecharts) land in tmp_path."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def charts(tmp_path: Path) -> Path:
    """A copy of statecharts/ in a folder of that name, free to edit."""
    folder = tmp_path / "statecharts"
    shutil.copytree(statechart_dir(), folder)
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `pyloto *argv`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_twice_gives_identical_bytes(
    tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two renders of one chart into two folders write byte-identical pages."""
    for out in ("first", "second"):
        code, stdout, _ = run(capsys, "statecharts", "render", "--dir", str(charts), "--out", out)
        assert code == 0
        assert f"wrote {out}/{PAGE}\n" in stdout
    first = (Path("first") / PAGE).read_bytes()
    assert first == (Path("second") / PAGE).read_bytes()
    chart = load_chart(charts / STATECHART_FILE)
    assert render_markdown(chart, SOURCE) == render_markdown(chart, SOURCE) == first.decode()
    assert dot(chart) == dot(chart)


def test_committed_page_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/statecharts/inbound_message.md is what the shipped statechart renders to."""
    docs = REPO / "docs" / "statecharts"
    code, out, err = run(
        capsys, "statecharts", "check", "--dir", str(REPO / "statecharts"), "--out", str(docs)
    )
    assert (code, err) == (0, "")
    assert out == f"state diagrams up to date (2 in {docs})\n"


def test_check_fails_with_a_diff_after_an_edit_and_passes_after_render(
    charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editing a description makes `check` exit 1 with a unified diff of the page; `render`
    brings the page up to date and `check` exits 0."""
    assert run(capsys, "statecharts", "render", "--dir", str(charts))[0] == 0
    path = charts / STATECHART_FILE
    text = path.read_text(encoding="utf-8")
    old = "Dead letter with a reason; replayable."
    path.write_text(text.replace(old, "Dead letter; an operator replays it."), encoding="utf-8")

    code, out, err = run(capsys, "statecharts", "check", "--dir", str(charts))
    assert code == 1
    page = f"docs/statecharts/{PAGE}"
    assert out.startswith(f"--- {page} (committed)\n+++ {page} (rendered)\n@@ ")
    assert f"-| `failed` | — | yes | {old} |\n" in out
    assert "+| `failed` | — | yes | Dead letter; an operator replays it. |\n" in out
    assert "pyloto statecharts render" in err

    assert run(capsys, "statecharts", "render", "--dir", str(charts))[0] == 0
    assert run(capsys, "statecharts", "check", "--dir", str(charts))[:2] == (
        0,
        "state diagrams up to date (2 in docs/statecharts)\n",
    )


def test_check_fails_when_a_page_is_missing(
    charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chart without its page is stale: exit 1, the whole page as added lines."""
    code, out, _ = run(capsys, "statecharts", "check", "--dir", str(charts), "--out", "empty")
    assert code == 1
    assert f"--- empty/{PAGE} (missing)\n+++ empty/{PAGE} (rendered)\n" in out
    assert "+```mermaid\n" in out


def test_check_refuses_a_chart_that_fails_the_lint(
    charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` loads each chart with the service's loader, so a lint error fails it (exit 2)
    with the file, line and state, before any page is compared."""
    path = charts / STATECHART_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("llm1, llm2, llm3, fallback", "llm1, llm2, llm3"), "utf-8")
    code, out, err = run(capsys, "statecharts", "check", "--dir", str(charts))
    assert (code, out) == (2, "")
    assert err.startswith(f"pyloto: {SOURCE}:")
    assert "state 'fallback' can fail but has no 'dead_letter' exit" in err


def test_statecharts_commands_need_no_settings(
    charts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an environment the settings refuse (production, no secrets, a bad PORT), the
    other commands exit 2 but `render` and `check` work."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("PORT", "not-a-port")
    assert run(capsys, "inspect", "wamid.X")[0] == 2
    assert run(capsys, "statecharts", "render", "--dir", str(charts))[0] == 0
    assert run(capsys, "statecharts", "check", "--dir", str(charts))[0] == 0


def test_default_folder_is_the_working_directory_statecharts(
    tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --dir the charts are ./statecharts and the pages go to ./docs/statecharts."""
    assert charts == tmp_path / "statecharts"
    code, out, _ = run(capsys, "statecharts", "render")
    assert (code, f"wrote docs/statecharts/{PAGE}" in out.splitlines()) == (0, True)
    assert (tmp_path / "docs" / "statecharts" / PAGE).is_file()


def test_without_local_statecharts_the_packaged_copy_is_used(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In a folder with no statecharts/ the command falls back to the chart the service
    itself loads, so an installed `pyloto` can check a checkout's pages."""
    docs = REPO / "docs" / "statecharts"
    code, out, _ = run(capsys, "statecharts", "check", "--out", str(docs))
    assert (code, out) == (0, f"state diagrams up to date (2 in {docs})\n")


def test_unknown_dir_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A --dir that does not exist exits 2 and names it."""
    code, _, err = run(capsys, "statecharts", "render", "--dir", "nowhere")
    assert (code, err) == (2, "pyloto: --dir nowhere: no such folder\n")


def test_render_writes_svg_exactly_when_graphviz_is_installed(
    charts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An SVG beside the page when `dot` is on PATH, and none (silently) when it is not."""
    code, out, err = run(capsys, "statecharts", "render", "--dir", str(charts))
    assert (code, err) == (0, "")
    has_dot = shutil.which("dot") is not None
    assert Path("docs/statecharts/inbound_message.svg").is_file() == has_dot
    assert ("inbound_message.svg" in out) == has_dot


def test_page_has_header_mermaid_diagram_and_tables() -> None:
    """The page says it is generated and from which file, holds a fenced Mermaid state
    diagram, and lists every state and transition in file order."""
    chart = load_chart()
    page = render_markdown(chart, SOURCE)
    assert page.startswith(
        f"<!-- Generated by `pyloto statecharts render` from {SOURCE}.\n     Do not edit by hand:"
    )
    diagram = page.split("```mermaid\n", 1)[1].split("```\n", 1)[0]
    assert diagram.splitlines() == mermaid(chart)
    assert diagram.startswith("stateDiagram-v2\n    [*] --> received\n")
    assert "    failed --> queued_outbound: replay_send (manual)\n" in diagram
    assert "    sent --> [*]\n" in diagram
    state_rows = [line for line in page.splitlines() if line.startswith("| `")][: len(chart.states)]
    assert [row.split("`")[1] for row in state_rows] == list(chart.states)
    assert "| `queued_outbound` | outbound | no | The Graph API request is built" in page
    assert "| `llm2` | `fall_back` | `fallback` | no | LLM disabled, sampled out" in page
    assert "| `failed` | `replay_reply` | `fallback` | yes | Operator replay" in page


ODD = textwrap.dedent(
    """\
    name: odd
    initial: end
    states:
      end:
        description: "A name Mermaid reserves | and a pipe."
      on-hold:
        description: A name with a dash.
      closed:
        terminal: true
    transitions:
      - trigger: hold
        source: end
        dest: on-hold
      - trigger: "close: now"
        source: [end, on-hold]
        dest: closed
    """
)


def test_names_mermaid_cannot_read_get_aliases_and_escapes() -> None:
    """States named like Mermaid keywords or with dashes are aliased and quoted, odd
    characters in labels become entities, and `|` in a table cell is escaped."""
    handlers = {"end": {"hold"}, "on-hold": {"close: now"}, ANY_STATE: {"close: now"}}
    chart = load_statechart(ODD, "charts/odd.yaml", handlers)
    assert mermaid(chart) == [
        "stateDiagram-v2",
        '    state "end" as s1',
        '    state "on-hold" as s2',
        "    [*] --> s1",
        "    s1 --> s2: hold",
        "    s1 --> closed: close#58; now",
        "    s2 --> closed: close#58; now",
        "    closed --> [*]",
    ]
    assert "| `end` | inbound | no | A name Mermaid reserves \\| and a pipe. |" in (
        render_markdown(chart, "statecharts/odd.yaml")
    )


def test_dot_marks_terminal_states_and_manual_edges() -> None:
    """The Graphviz source outlines terminal states twice and dashes manual transitions."""
    graph = dot(load_chart())
    assert graph.startswith('digraph "inbound_message" {\n')
    assert '    "sent" [tooltip="The reply was accepted' in graph
    assert 'peripheries=2];\n    "failed"' in graph
    assert '    "failed" -> "fallback" [label="replay_reply", style=dashed];\n' in graph
    assert '    "received" -> "deduped" [label="accept"];\n' in graph


def test_stale_diff_is_empty_only_for_an_identical_page() -> None:
    """No diff when the committed page is the rendering; one for any byte of difference."""
    assert stale_diff("a\n", "a\n", "p.md") == ""
    assert stale_diff("a\n", "a", "p.md") != ""
    assert stale_diff("a\n", None, "p.md").startswith("--- p.md (missing)\n")
