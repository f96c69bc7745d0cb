"""Every start-up refusal of the `pyloto` command is one line on stderr that says what to
change, with a non-zero exit; and the commands read the store the settings name."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.cli import main
from tests.e2e.servers import ServeProcess, process_env, pyloto_command
from tests.support.redis_server import RedisServer, free_port

TRAJECTORY = "received → deduped → buffered → fallback → queued_outbound → sending → sent"
LLM_TRAJECTORY = (
    "received → deduped → buffered → llm1 → llm2 → llm3 → queued_outbound → sending → sent"
)


def one_line(err: str) -> str:
    """The single line of a refusal (no traceback, no log lines)."""
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("pyloto: "), err
    return err


def message_id_of(out: str) -> str:
    """The id `pyloto simulate` printed first."""
    return out.splitlines()[0].removeprefix("message ").strip()


@pytest.fixture
def held_database(cli_env: dict[str, str]) -> Iterator[Path]:
    """The CLI's SQLite file, opened and locked as a running `pyloto serve` holds it."""
    path = Path(cli_env["STATE_SQLITE_PATH"])
    store = SQLiteStore(path, ["sent", "failed", "ignored"], exclusive=True)
    asyncio.run(store.ping())
    yield path
    asyncio.run(store.close())


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_simulate_in_process_beside_a_server_refuses_in_one_line(
    held_database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a server holds the SQLite file, `simulate --in-process` exits 1 with one line
    that says to drop --in-process or to use another STATE_SQLITE_PATH; `inspect` still
    reads the file beside it."""
    assert main(["simulate", "--in-process", "Oi"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert str(held_database) in line
    assert "--in-process" in line
    assert "STATE_SQLITE_PATH" in line

    assert main(["inspect", "wamid.none"]) == 1  # read beside the lock: no record, no error
    assert "no record for wamid.none" in capsys.readouterr().err


def test_serve_on_a_database_in_use_refuses_in_one_line(
    held_database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `pyloto serve` on the same SQLite file exits 1 before starting, with one line
    naming the file and STATE_SQLITE_PATH."""
    assert main(["serve", "--port", str(free_port())]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert str(held_database) in line
    assert "STATE_SQLITE_PATH" in line


def test_serve_on_a_port_in_use_refuses_in_one_line(
    cli_env: dict[str, str], listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyloto serve --port N` with N taken exits 1 with one line naming the port and --port,
    before anything starts (no database is created)."""
    assert main(["serve", "--port", str(listening)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert f"port {listening}" in line
    assert "--port" in line
    assert not Path(cli_env["STATE_SQLITE_PATH"]).exists()


def test_serve_on_an_address_it_cannot_bind_refuses_in_one_line(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A --host that is not this machine's exits 1 with one line naming --host."""
    assert main(["serve", "--host", "192.0.2.1", "--port", str(free_port())]) == 1
    assert "--host" in one_line(capsys.readouterr().err)


def test_inspect_reads_the_configured_redis(
    cli_env: dict[str, str],
    redis_server: RedisServer,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With STATE_BACKEND=redis, `pyloto inspect ID` (no --url) finds the record in Redis."""
    monkeypatch.setenv("STATE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    assert main(["simulate", "--in-process", "Oi"]) == 0
    message_id = message_id_of(capsys.readouterr().out)
    assert not Path(cli_env["STATE_SQLITE_PATH"]).exists(), "nothing went to SQLite"

    assert main(["inspect", message_id]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["message_id"] == message_id
    assert view["state"] == "sent"


def test_inspect_of_an_unreachable_redis_is_one_line(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis that does not answer → exit 1, one line that names the store."""
    monkeypatch.setenv("STATE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("REDIS_TIMEOUT_SECONDS", "0.5")
    assert main(["inspect", "wamid.x"]) == 1
    assert "state store" in one_line(capsys.readouterr().err)


@pytest.fixture
def fake_openai(tmp_path: Path) -> Iterator[str]:
    """`pyloto fake-openai --port 0`, started from a directory outside the checkout; yields
    the OPENAI_BASE_URL it prints."""
    process = subprocess.Popen(
        [*pyloto_command(), "fake-openai", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("OPENAI_BASE_URL=http://127.0.0.1:"), first
        yield first.strip().removeprefix("OPENAI_BASE_URL=")
    finally:
        process.terminate()
        process.communicate(timeout=10)  # also closes the pipe


def test_llm_demo_runs_on_pyloto_fake_openai(
    cli_env: dict[str, str],
    fake_openai: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's LLM demo: `pyloto fake-openai` and `simulate --in-process` with
    OPENAI_API_KEY and OPENAI_BASE_URL run the three LLM steps to an interactive reply."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai)
    assert main(["simulate", "--in-process", "Quanto custa o corte?"]) == 0
    out = capsys.readouterr().out
    assert LLM_TRAJECTORY in out.splitlines(), out
    assert "reply (interactive button)" in out


def test_fake_openai_on_a_port_in_use_refuses_in_one_line(
    listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyloto fake-openai --port N` with N taken → exit 1, one line naming the port."""
    assert main(["fake-openai", "--port", str(listening)]) == 1
    assert f"port {listening}" in one_line(capsys.readouterr().err)


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """A running `pyloto serve` on the CLI's database."""
    server = ServeProcess(process_env(cli_env), tmp_path / "server.log")
    server.start("/health")
    yield server
    server.cleanup()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pyloto_command(), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_beside_a_running_server_every_mistake_is_one_line(
    served: ServeProcess, cli_env: dict[str, str]
) -> None:
    """Beside a real `pyloto serve`: a second server on its file, a server on its port and
    `simulate --in-process` each exit 1 with one line; a webhook signed with another secret
    is refused with a hint at --secret-from-env, and the server logs why it refused."""
    second = _run(["serve", "--port", str(free_port())], served.env)
    assert second.returncode == 1
    assert "STATE_SQLITE_PATH" in one_line(second.stderr)

    other_file = process_env(cli_env, STATE_SQLITE_PATH=str(Path(served.log).parent / "b.db"))
    same_port = _run(["serve", "--port", str(served.port)], other_file)
    assert same_port.returncode == 1
    assert "--port" in one_line(same_port.stderr)

    in_process = _run(["simulate", "--in-process", "Oi"], served.env)
    assert in_process.returncode == 1
    assert "--in-process" in one_line(in_process.stderr)

    env = process_env(cli_env)
    del env["WHATSAPP_APP_SECRET"]  # signs with the development secret
    refused = _run(["simulate", "--url", served.url, "Oi"], env)
    assert refused.returncode == 1
    assert "403" in refused.stderr
    assert "--secret-from-env" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200

    served.terminate()
    rejected = [
        json.loads(line)
        for line in served.log.read_text().splitlines()
        if '"webhook_rejected"' in line
    ]
    assert [(line["severity"], line["reason"]) for line in rejected] == [
        ("WARNING", "bad_signature")
    ]


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    """`pyloto ... | head -1`: when the reader goes away the command stops without a
    traceback (here pii-scan with thousands of findings to print)."""
    log = tmp_path / "app.log"
    log.write_text("cliente 123.456.789-09 escreveu\n" * 20_000, encoding="utf-8")
    process = subprocess.Popen(
        [*pyloto_command(), "pii-scan", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("line 1: cpf: ")
    process.stdout.close()  # as `head -1` does once it has its line
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in err
    assert "BrokenPipe" not in err
