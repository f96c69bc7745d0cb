"""`pyloto simulate` against a real `pyloto serve` with no Meta account: a voice note from
another working directory, and the documented recipe that makes a dead letter to replay."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyloto_corp.cli import main
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from tests.e2e.servers import START_SECONDS, ServeProcess, process_env, pyloto_command
from tests.e2e.support import message_view, wait_in_state
from tests.support.helpers import INTERNAL_TOKEN
from tests.support.media_files import voice_note
from tests.support.redis_server import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}
BASH = shutil.which("bash") or "/bin/bash"


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pyloto_command(), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _serve(servers: list[ServeProcess], env: dict[str, str], cwd: Path, log: Path) -> ServeProcess:
    server = ServeProcess(env, log, cwd=cwd)
    servers.append(server)
    server.start("/health")
    return server


def test_a_voice_note_from_another_directory_is_transcribed(
    cli_env: dict[str, str],
    fake_openai: FakeOpenAI,
    servers: list[ServeProcess],
    tmp_path: Path,
) -> None:
    """The server runs in directory A with the default (relative) media folder; `simulate
    --voice nota.ogg` runs in directory B: the file reaches the server's folder in A and the
    voice note is transcribed (fake OpenAI); B gets no media folder."""
    server_dir, client_dir = tmp_path / "a", tmp_path / "b"
    server_dir.mkdir()
    client_dir.mkdir()
    llm = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.base_url}
    env = process_env(cli_env, **llm)
    server = _serve(servers, env, server_dir, tmp_path / "server.log")
    note = voice_note()
    (client_dir / "nota.ogg").write_bytes(note)

    result = _run(["simulate", "--url", server.url, "--voice", "nota.ogg"], env, client_dir)

    assert result.returncode == 0, result.stderr
    assert " → media → " in result.stdout
    assert "transcript (masked): Olá, quanto custa o corte de cabelo?" in result.stdout
    (upload,) = fake_openai.uploads
    assert upload.data == note
    stored = [p for p in (server_dir / "pyloto-media").iterdir() if p.suffix != ".json"]
    assert [p.read_bytes() for p in stored] == [note]
    assert not (client_dir / "pyloto-media").exists()


def test_simulate_says_why_the_server_cannot_take_the_file(
    cli_env: dict[str, str], servers: list[ServeProcess], tmp_path: Path
) -> None:
    """A server with another INTERNAL_TASK_TOKEN, one that reads media from the Graph API,
    and no server at all: exit 1 with the reason on stderr, no traceback."""
    (tmp_path / "nota.ogg").write_bytes(voice_note())
    voice = ["simulate", "--voice", "nota.ogg"]
    other = _serve(
        servers,
        process_env(cli_env, INTERNAL_TASK_TOKEN="another-token"),
        tmp_path,
        tmp_path / "other.log",
    )
    result = _run([*voice[:1], "--url", other.url, *voice[1:]], process_env(cli_env), tmp_path)
    assert result.returncode == 1
    assert "the server cannot take the file" in result.stderr
    assert "INTERNAL_TASK_TOKEN" in result.stderr
    other.terminate()

    graph = process_env(
        cli_env,
        WHATSAPP_ACCESS_TOKEN="local",
        WHATSAPP_PHONE_NUMBER_ID="106540352242922",
        WHATSAPP_API_BASE_URL=f"http://127.0.0.1:{free_port()}",
    )
    sending = _serve(servers, graph, tmp_path, tmp_path / "graph.log")
    plain = process_env(cli_env)
    result = _run([*voice[:1], "--url", sending.url, *voice[1:]], plain, tmp_path)
    assert result.returncode == 1
    assert "the server cannot take the file: this server reads media" in result.stderr
    refused = _run(["simulate", "--url", sending.url, "--fail-send", "Olá"], plain, tmp_path)
    assert refused.returncode == 1
    assert "cannot refuse the send (--fail-send)" in refused.stderr
    assert "Graph API" in refused.stderr
    sending.terminate()

    nobody = f"http://127.0.0.1:{free_port()}"
    result = _run([*voice[:1], "--url", nobody, *voice[1:]], plain, tmp_path)
    assert result.returncode == 1
    assert f"cannot reach {nobody}" in result.stderr
    for run in (result, refused):
        assert "Traceback" not in run.stderr


def test_the_upload_route_refuses_what_it_cannot_store(
    cli_env: dict[str, str], servers: list[ServeProcess], tmp_path: Path
) -> None:
    """POST /internal/local/media: the token only, an audio or image type, a body; a clear
    4xx otherwise, never a 500."""
    server = _serve(servers, process_env(cli_env), tmp_path, tmp_path / "server.log")
    url = f"{server.url}/internal/local/media"
    ogg = {**TOKEN, "Content-Type": "audio/ogg; codecs=opus"}
    assert httpx.post(url, content=b"x", headers={"Content-Type": "audio/ogg"}).status_code == 401
    text = httpx.post(url, content=b"x", headers={**TOKEN, "Content-Type": "text/plain"})
    assert text.status_code == 400
    assert "audio/" in text.json()["detail"]
    assert httpx.post(url, content=b"", headers=ogg).status_code == 400
    stored = httpx.post(url, content=b"OggS", headers=ogg)
    assert stored.status_code == 200
    assert re.fullmatch(r"\d{16}", stored.json()["media_id"])
    refuse = f"{server.url}/internal/local/refuse-send"
    assert httpx.post(refuse, content=b"{", headers=TOKEN).status_code == 400
    assert httpx.post(refuse, content=b'{"message_id": ""}', headers=TOKEN).status_code == 400


def _recipe(page: Path) -> list[str]:
    """The command lines of the 'try a replay' recipe in `page` (its first sh block after
    the recipe's `--fail-send` mention), comments dropped."""
    text = page.read_text("utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "--fail-send" in b]
    return [line.split("    #")[0].strip() for line in block.splitlines() if line.strip()]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _hidden(html: str, form_id: str) -> dict[str, str]:
    form = html[html.index(f'id="{form_id}"') :]
    form = form[: form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))


def test_the_documented_replay_recipe_makes_a_dead_letter_then_replays_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """docs/console.md's recipe, run as written (`.venv/bin/pyloto` is this install's
    script): the record ends `failed` with the refusal's reason, the console lists it, and
    its replay from the console sends it (`sent`, one reply in the dry-run outbox)."""
    lines = _recipe(DOCS / "console.md")
    assert lines == _recipe(DOCS / "local-development.md"), "both pages give one recipe"
    assert len(lines) == 3
    work = tmp_path / "checkout"
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "pyloto").symlink_to(pyloto_command()[0])
    port = free_port()
    env = process_env(cli_env, PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    server: subprocess.Popen[bytes] | None = None
    try:
        outputs = []
        for line in lines:
            if line.endswith(" serve"):
                server = subprocess.Popen(
                    [BASH, "-c", line], cwd=work, env=env, stdout=log, stderr=log
                )
                _wait_health(base, server, tmp_path / "serve.log")
                continue
            done = subprocess.run(
                [BASH, "-c", line],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            outputs.append(done.stdout)
        simulated = outputs[-1]
        assert " → sending → failed" in simulated
        assert "failure reason: permanent: dry run: send refused as asked" in simulated
        found = re.search(r"^message (\S+)$", simulated, re.M)
        assert found, simulated
        message_id = found.group(1)
        assert f"pyloto replay {message_id}" in simulated

        with httpx.Client(base_url=base, timeout=10) as client:
            signed = client.post("/ops/login", data={"name": "admin", "password": "dev-password"})
            assert signed.status_code == 303, signed.text
            letters = client.get("/ops/dead-letters")
            assert "dry run: send refused as asked" in letters.text
            assert message_id not in letters.text, "the console masks message ids"
            fields = _hidden(letters.text, "dead-letters")
            asked = client.post("/ops/replay", data=fields)
            assert asked.status_code == 200
            done = client.post("/ops/replay", data=_hidden(asked.text, "confirm-replay"))
            assert done.status_code == 200
            assert "<b>1</b> replayed" in done.text
            view = _wait_state(base, message_id, "sent")
            assert view["state"] == "sent"
            again = client.get("/ops/dead-letters")
            assert 'id="no-dead-letters"' in again.text
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        log.close()


def _wait_health(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(log.read_text())


def _wait_state(base: str, message_id: str, state: str) -> dict[str, Any]:
    with httpx.Client(headers=TOKEN, timeout=10) as http:
        return wait_in_state(lambda: message_view(http, base, message_id), (state,), 30)


def test_fail_send_in_process_then_replay_from_the_shell(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    servers: list[ServeProcess],
    tmp_path: Path,
) -> None:
    """`simulate --in-process --fail-send` ends the record `failed` (exit 0, the replay
    hint); `pyloto replay ID` to a server on that database then sends it. With
    WHATSAPP_ACCESS_TOKEN set the in-process run refuses (exit 2)."""
    assert main(["simulate", "--in-process", "--fail-send", "Olá"]) == 0
    out = capsys.readouterr().out
    assert " → sending → failed" in out
    found = re.search(r"^message (\S+)$", out, re.M)
    assert found, out
    message_id = found.group(1)
    assert f"`pyloto replay {message_id}`" in out

    env = process_env(cli_env)
    server = _serve(servers, env, tmp_path, tmp_path / "server.log")
    replayed = _run(["replay", "--url", server.url, message_id], env, tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {message_id}" in replayed.stdout
    assert _wait_state(server.url, message_id, "sent")["state"] == "sent"
    server.terminate()

    monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", "local")
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "106540352242922")
    assert main(["simulate", "--in-process", "--fail-send", "Olá"]) == 2
    assert "--fail-send only work without it" in capsys.readouterr().err
