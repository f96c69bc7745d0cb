"""The `pyloto` command: simulate, inspect, configuration errors, and serve as a real process."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyloto_corp.cli import DEFAULT_NAME, DEFAULT_SENDER, main
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from tests.e2e.servers import ServeProcess, process_env, pyloto_command
from tests.support.helpers import INTERNAL_TOKEN, encode, envelope, signed_headers, text_message
from tests.support.media_files import png, voice_note

TEXT = "Olá, quero saber o preço"
TRAJECTORY = "received → deduped → buffered → fallback → queued_outbound → sending → sent"
MASKED_SENDER = "*" * (len(DEFAULT_SENDER) - 4) + DEFAULT_SENDER[-4:]


def _message_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("message wamid."), stdout
    return first.removeprefix("message ").strip()


def _check_simulated(stdout: str) -> str:
    """The simulate output shows the trajectory and the reply; returns the message id."""
    lines = stdout.splitlines()
    assert TRAJECTORY in lines, stdout
    [reply] = [line for line in lines if line.startswith("reply (text): ")]
    assert "Olá! Obrigado por entrar em contato com nossa empresa." in reply
    return _message_id(stdout)


def test_simulate_in_process_then_inspect(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyloto simulate --in-process TEXT` prints the trajectory and the reply (exit 0); then
    `pyloto inspect ID` prints the record as JSON with the phone number masked."""
    assert main(["simulate", "--in-process", TEXT]) == 0
    out, err = capsys.readouterr()
    message_id = _check_simulated(out)
    assert "fallback reason: llm_disabled" in out
    assert err == ""
    assert Path(cli_env["STATE_SQLITE_PATH"]).exists(), "state went where the variable said"
    assert not list(Path.cwd().iterdir()), "nothing written to the working directory"

    assert main(["inspect", message_id]) == 0
    out, _ = capsys.readouterr()
    view = json.loads(out)
    assert view["message_id"] == message_id
    assert view["state"] == "sent"
    assert view["inbound"]["from"] == MASKED_SENDER
    assert view["reply"]["to"] == MASKED_SENDER
    assert view["inbound"]["text"] == TEXT
    assert DEFAULT_SENDER not in out
    assert DEFAULT_NAME not in out


def test_inspect_of_an_unknown_id_exits_1(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyloto inspect nope` → exit 1 and a message naming the id (with or without a database)."""
    assert main(["inspect", "nope"]) == 1
    _, err = capsys.readouterr()
    assert "nope" in err

    assert main(["simulate", "--in-process", "Oi"]) == 0
    capsys.readouterr()
    assert main(["inspect", "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "no record for nope" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPENAI_TIMEOUT_SECONDS", "abc"),
        ("WEBHOOK_MAX_BODY_BYTES", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("PORT", "70000"),
        ("STATE_RETENTION_DAYS", "1"),
        ("QUEUE_BACKEND", "carrier-pigeon"),
    ],
)
def test_invalid_variable_exits_2_naming_it(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    """An invalid variable → exit 2 and a one-line message that names the variable."""
    monkeypatch.setenv(variable, value)
    assert main(["simulate", "--in-process", TEXT]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert variable in err
    assert "Traceback" not in err
    assert not Path(cli_env["STATE_SQLITE_PATH"]).exists(), "nothing started"


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pyloto_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_console_script_reports_an_invalid_variable_with_exit_2(cli_env: dict[str, str]) -> None:
    """The installed `pyloto` script exits 2 with the variable's name on stderr."""
    result = _run(["inspect", "x"], process_env(cli_env, OPENAI_TIMEOUT_SECONDS="abc"))
    assert result.returncode == 2
    assert "OPENAI_TIMEOUT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """A server to start (on the test's database); killed at the end if still running."""
    server = ServeProcess(process_env(cli_env), tmp_path / "server.log")
    yield server
    server.cleanup()


@pytest.mark.parametrize("present", ["", "WHATSAPP_APP_SECRET", "INTERNAL_TASK_TOKEN"])
def test_simulate_secret_from_env_refuses_the_development_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], present: str
) -> None:
    """With --secret-from-env a missing secret is an error naming it (exit 2), not a webhook
    signed with the public development secret that a deployed service would answer 403."""
    for name in ("WHATSAPP_APP_SECRET", "INTERNAL_TASK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if present:
        monkeypatch.setenv(present, "set-by-the-operator")
    code = main(["simulate", "--url", "http://127.0.0.1:9", "--secret-from-env", TEXT])
    assert code == 2
    error = capsys.readouterr().err
    for name in ("WHATSAPP_APP_SECRET", "INTERNAL_TASK_TOKEN"):
        assert (name in error) == (name != present), error


@pytest.mark.slow
def test_serve_then_simulate_over_http_then_sigterm(served: ServeProcess) -> None:
    """`pyloto serve` answers /health; `pyloto simulate --url` prints the same trajectory and the
    reply; `pyloto inspect --url` masks the phone; SIGTERM shuts the server down cleanly."""
    served.start("/health")
    assert httpx.get(f"{served.url}/ready", timeout=5).status_code == 200

    result = _run(["simulate", "--url", served.url, "--secret-from-env", TEXT], served.env)
    assert result.returncode == 0, result.stderr
    message_id = _check_simulated(result.stdout)

    inspected = _run(["inspect", "--url", served.url, message_id], served.env)
    assert inspected.returncode == 0, inspected.stderr
    view = json.loads(inspected.stdout)
    assert view["state"] == "sent"
    assert view["inbound"]["from"] == MASKED_SENDER
    assert DEFAULT_SENDER not in inspected.stdout

    code = served.terminate()
    log = served.log.read_text()
    assert code == 0, log
    assert '"event":"stopped"' in log, log
    assert "Traceback" not in log, log
    assert re.search(r'"severity":\s*"ERROR"', log) is None, log
    assert "graph_version_ending" not in log, "the default Graph API version is current"
    for line in log.splitlines():
        assert DEFAULT_SENDER not in line, line
        assert DEFAULT_NAME not in line, line

    # The lock on the database is released: the record is still readable offline.
    offline = _run(["inspect", message_id], served.env)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["state"] == "sent"


@pytest.mark.slow
def test_serve_warns_in_one_line_about_a_graph_version_meta_is_retiring(
    served: ServeProcess,
) -> None:
    """With WHATSAPP_API_VERSION=v21.0 (ends 2027-01-21) `pyloto serve` starts and logs one
    WARNING naming the variable and the date, nearing or past."""
    served.env["WHATSAPP_API_VERSION"] = "v21.0"
    served.start("/health")
    served.terminate()
    lines = [line for line in served.log.read_text().splitlines() if "graph_version_ending" in line]
    assert len(lines) == 1, served.log.read_text()
    entry = json.loads(lines[0])
    assert entry["severity"] == "WARNING"
    assert "WHATSAPP_API_VERSION=v21.0" in entry["message"]
    assert "2027-01-21" in entry["message"]


@pytest.mark.slow
def test_served_body_limit_holds_for_chunked_uploads(served: ServeProcess) -> None:
    """On a real server with WEBHOOK_MAX_BODY_BYTES=2048, a signed 4096-byte body → 413 whether
    it has a Content-Length or is streamed chunked; nothing is stored."""
    served.env["WEBHOOK_MAX_BODY_BYTES"] = "2048"
    served.start("/health")
    message = text_message("a")
    message["text"]["body"] = "a" * (4096 - len(encode(envelope([message]))) + 1)
    body = encode(envelope([message]))
    assert len(body) == 4096
    headers = signed_headers(body)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with httpx.Client(base_url=served.url, timeout=10) as client:
        assert client.post("/webhook", content=body, headers=headers).status_code == 413
        assert client.post("/webhook", content=chunks(), headers=headers).status_code == 413
        token = {"X-Internal-Token": INTERNAL_TOKEN}
        assert client.get(f"/internal/messages/{message['id']}", headers=token).status_code == 404
        small = encode(envelope([text_message("Oi")]))
        assert (
            client.post("/webhook", content=small, headers=signed_headers(small)).status_code == 200
        )


def test_simulate_a_voice_note_from_a_local_file(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    """`pyloto simulate --voice nota.ogg` puts the file in the local media folder, posts a voice
    note naming it, and the media step transcribes it on the (fake) OpenAI API: the output
    shows the media state, the masked transcript and an LLM reply."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("WHATSAPP_LOCAL_MEDIA_DIR", str(tmp_path / "media"))
    note = tmp_path / "nota.ogg"
    note.write_bytes(voice_note())
    assert main(["simulate", "--in-process", "--voice", str(note)]) == 0
    out, _ = capsys.readouterr()
    trajectory = (
        "received → deduped → media → buffered → llm1 → llm2 → llm3 → queued_outbound → sending"
        " → sent"
    )
    assert trajectory in out.splitlines(), out
    assert "transcript (masked): Olá, quanto custa o corte de cabelo?" in out
    (upload,) = fake_openai.uploads
    assert upload.data == note.read_bytes()
    assert upload.fields["language"] == "pt"

    picture = tmp_path / "foto.png"
    picture.write_bytes(png())
    assert main(["simulate", "--in-process", "--image", str(picture), "Chegou assim"]) == 0
    out, _ = capsys.readouterr()
    assert "description (masked): " in out


def test_simulate_refuses_a_media_file_it_cannot_send(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file of an unknown type, a missing file, or no text at all: exit 2 with the reason."""
    odd = tmp_path / "nota.txt"
    odd.write_text("not audio")
    assert main(["simulate", "--in-process", "--voice", str(odd)]) == 2
    assert ".ogg" in capsys.readouterr().err
    assert main(["simulate", "--in-process", "--voice", str(tmp_path / "absent.ogg")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["simulate", "--in-process"]) == 2
    assert "--voice FILE" in capsys.readouterr().err
