"""`pyloto config docs [--check]`: docs/configuration.md is generated from the settings model,
every variable documented, and `--check` fails while the committed page is stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pyloto_corp.cli import main
from pyloto_corp.config import Settings
from pyloto_corp.config_docs import UndocumentedSetting, render_markdown, undocumented
from tests.support.helpers import REPO

PAGE = REPO / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default page, docs/configuration.md, lands in tmp_path."""
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `pyloto *argv`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_setting_has_a_variable_name_and_a_description() -> None:
    """No field of the settings model is left without its variable or its description."""
    assert undocumented(Settings) == []


class _Loose(BaseModel):
    """A section with one undocumented field."""

    kept: int = Field(1, alias="KEPT", description="Documented.")
    bare: int = Field(2, alias="BARE")


class _LooseSettings(BaseModel):
    loose: _Loose = Field(default_factory=_Loose)  # type: ignore[arg-type]


def test_an_undocumented_setting_is_named_and_refused() -> None:
    """A field without a description is reported by name, and the page is not rendered."""
    assert undocumented(_LooseSettings) == ["loose.bare (BARE)"]
    with pytest.raises(UndocumentedSetting, match=r"loose\.bare \(BARE\)"):
        render_markdown(_LooseSettings)


def test_every_variable_is_on_the_page_with_its_type_and_default() -> None:
    """Each variable of the model has one row; types, limits and defaults read plainly."""
    page = render_markdown(Settings)
    for section in Settings.model_fields.values():
        assert isinstance(section.annotation, type)
        for info in section.annotation.model_fields.values():
            assert page.count(f"| `{info.alias}` |") == 1, info.alias
    assert "| `PORT` | integer, ≥ 1, ≤ 65535 | `8000` | " in page
    assert "| `OPS_CONSOLE_ENABLED` | boolean | `false` | " in page
    assert "| `STATE_SQLITE_PATH` | path | `./pyloto.db` | " in page
    assert "| `REDIS_DURABILITY` | one of `always`, `everysec`, `none` | `always` | " in page
    assert "| `WHATSAPP_APP_SECRET` | text | dev value (development only) | " in page
    assert "| `REDIS_URL` | text, matching `^(redis\\|rediss\\|unix)://` | — | " in page
    assert "## OpenAI\n\nThe three LLM steps.\n" in page
    assert "| `SSL_CERT_FILE` | path | certifi's roots | " in page


def test_the_committed_page_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/configuration.md is what the settings model renders to."""
    code, out, err = run(capsys, "config", "docs", "--check", "--out", str(PAGE))
    assert (code, err) == (0, "")
    assert out == f"configuration reference up to date ({PAGE})\n"


def test_check_fails_on_a_stale_page_and_passes_on_a_fresh_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A page edited by hand makes `--check` exit 1 with a diff, naming the variable;
    `config docs` rewrites it and `--check` exits 0."""
    assert run(capsys, "config", "docs")[:2] == (0, "wrote docs/configuration.md\n")
    page = Path("docs/configuration.md")
    text = page.read_text(encoding="utf-8")
    row = "| `PORT` | integer, ≥ 1, ≤ 65535 | `8000` |"
    assert row in text
    page.write_text(text.replace(row, "| `PORT` | integer | `8080` |"), encoding="utf-8")

    code, out, err = run(capsys, "config", "docs", "--check")
    assert code == 1
    assert out.startswith("--- docs/configuration.md (committed)\n+++ docs/configuration.md (")
    assert "-| `PORT` | integer | `8080` |" in out
    assert f"+{row}" in out
    assert err == (
        "pyloto: docs/configuration.md is out of date (PORT): run `pyloto config docs`\n"
    )
    assert page.read_text(encoding="utf-8") != text  # --check writes nothing

    assert run(capsys, "config", "docs")[0] == 0
    assert run(capsys, "config", "docs", "--check")[:2] == (
        0,
        "configuration reference up to date (docs/configuration.md)\n",
    )


def test_check_fails_when_the_page_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    """Without the page, `--check` exits 1 with the whole page as added lines."""
    code, out, _ = run(capsys, "config", "docs", "--check", "--out", "none.md")
    assert code == 1
    assert out.startswith("--- none.md (missing)\n+++ none.md (rendered)\n")
    assert not Path("none.md").exists()


def test_config_docs_needs_no_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an environment the settings refuse, other commands exit 2 but this one works:
    the page describes the model, not this environment's values."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("PORT", "not-a-port")
    monkeypatch.setenv("BUSINESS_NAME", "Loja do Cliente")
    assert run(capsys, "inspect", "wamid.X")[0] == 2
    assert run(capsys, "config", "docs")[0] == 0
    assert Path("docs/configuration.md").read_bytes() == render_markdown(Settings).encode()
    assert "Loja do Cliente" not in Path("docs/configuration.md").read_text(encoding="utf-8")
