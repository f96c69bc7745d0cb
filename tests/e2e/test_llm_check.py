"""`pyloto llm check`: one line per step for the configured provider (the fake server in each
profile), exit 0 when every step works, 1 when one does not, 2 when the LLM is off."""

from __future__ import annotations

import re

import pytest

from pyloto_corp.cli import main
from pyloto_corp.devtools.fake_openai import FakeOpenAI, Profile, error
from tests.support.redis_server import free_port

CHAT_STEPS = ("llm1", "llm2", "llm3")
# "<step>: ok: <mode>, <temperature>, <n> ms, model <model>"
OK_LINE = re.compile(r"^(\w+): ok: (json_schema|json_object|prompt), (.+), \d+ ms, model (\S+)$")


@pytest.fixture
def llm_env(
    cli_env: dict[str, str], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> FakeOpenAI:
    """The CLI's environment with the LLM on the fake server, no SDK retries."""
    for name, value in {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_TIMEOUT_SECONDS": "5",
    }.items():
        monkeypatch.setenv(name, value)
    return fake_openai


def run_check(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """`pyloto llm check`: (exit code, stdout lines, stderr)."""
    code = main(["llm", "check"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def parsed(lines: list[str]) -> list[tuple[str, ...]]:
    """(step, mode, temperature, model) of each ok line; a line that is not one fails."""
    found = []
    for line in lines:
        match = OK_LINE.match(line)
        assert match is not None, line
        found.append(match.groups())
    return found


@pytest.mark.parametrize(
    ("profile", "mode", "temperature"),
    [
        ("openai", "json_schema", "temperature 0.2 sent"),
        ("llamacpp", "json_object", "temperature 0.2 sent"),
        ("gpt5", "json_schema", "no temperature sent"),
        ("prose", "json_schema", "temperature 0.2 sent"),
    ],
)
def test_each_profile_is_reported_step_by_step_with_what_works(
    llm_env: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: Profile,
    mode: str,
    temperature: str,
) -> None:
    """With OPENAI_TEMPERATURE=0.2 and auto: each chat step gets one ok line naming the mode
    it was served in and whether a temperature was sent; exit 0."""
    llm_env.profile = profile
    monkeypatch.setenv("OPENAI_TEMPERATURE", "0.2")
    code, lines, _ = run_check(capsys)
    assert code == 0, lines
    assert parsed(lines) == [(step, mode, temperature, "gpt-4o-mini") for step in CHAT_STEPS]


def test_vision_and_transcription_are_probed_when_configured(
    llm_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OPENAI_VISION_MODEL and OPENAI_TRANSCRIPTION_* add a line each: the picture is described
    by the vision model, the audio goes to the transcription server with its own key."""
    transcriber = FakeOpenAI()
    transcriber.start()
    try:
        monkeypatch.setenv("OPENAI_VISION_MODEL", "local-vision")
        monkeypatch.setenv("OPENAI_TRANSCRIPTION_BASE_URL", transcriber.base_url)
        monkeypatch.setenv("OPENAI_TRANSCRIPTION_API_KEY", "sk-audio")
        monkeypatch.setenv("OPENAI_TRANSCRIPTION_MODEL", "whisper-1")
        code, lines, _ = run_check(capsys)
    finally:
        transcriber.stop()
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == [*CHAT_STEPS, "vision", "transcription"]
    assert parsed(lines[:4])[3] == ("vision", "json_schema", "no temperature sent", "local-vision")
    assert re.fullmatch(r"transcription: ok: \d+ ms, model whisper-1", lines[4]), lines[4]
    assert llm_env.uploads == [], "the chat server got no audio"
    (upload,) = transcriber.uploads
    assert upload.fields["model"] == "whisper-1"
    assert upload.headers["authorization"] == "Bearer sk-audio"


def test_a_fixed_mode_the_server_refuses_fails_every_step_with_its_reason(
    llm_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OPENAI_STRUCTURED_OUTPUT=json_schema on llama.cpp: one FAILED line per step saying the
    format was refused; exit 1."""
    llm_env.profile = "llamacpp"
    monkeypatch.setenv("OPENAI_STRUCTURED_OUTPUT", "json_schema")
    code, lines, _ = run_check(capsys)
    assert code == 1
    assert lines == [
        f"{step}: FAILED: api_error: HTTP 500: the structured-output format was refused"
        for step in CHAT_STEPS
    ]


def test_one_failing_step_makes_the_check_fail_and_the_others_still_report(
    llm_env: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """LLM#2 refused with a 401: its line says so, LLM#1 and LLM#3 are ok; exit 1."""
    llm_env.always("ReplyDraft", error(401))
    code, lines, _ = run_check(capsys)
    assert code == 1
    assert lines[1] == "llm2: FAILED: api_error: HTTP 401"
    assert [step for step, *_ in parsed([lines[0], lines[2]])] == ["llm1", "llm3"]


def test_an_unreachable_server_fails_every_step(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening at OPENAI_BASE_URL: each line says the connection failed; exit 1."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "0")
    code, lines, _ = run_check(capsys)
    assert code == 1
    assert lines == [f"{step}: FAILED: api_error: connection failed" for step in CHAT_STEPS]


@pytest.mark.parametrize(
    "variables",
    [{}, {"OPENAI_API_KEY": "sk-test", "OPENAI_ENABLED": "false"}],
    ids=["no-key", "disabled"],
)
def test_without_an_llm_the_check_says_so_in_one_line_with_exit_2(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
) -> None:
    """The LLM off: nothing is probed, one line on stderr names the variable; exit 2."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, lines, err = run_check(capsys)
    assert code == 2
    assert lines == []
    assert err.splitlines() == [
        "pyloto: llm check: the LLM is off: set OPENAI_API_KEY (and leave OPENAI_ENABLED "
        "unset or true)"
    ]
