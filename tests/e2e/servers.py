"""`pyloto serve` as a real child process, for the end-to-end tests that need one.

The process gets a clean environment (none of the developer's pyloto variables leak in) plus
the test's variables, writes its log to a file, and is waited for by polling an HTTP path.
For servers on Redis: their variables, and a view of what they stored read from Redis itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import redis

from pyloto_corp.adapters.redis import RedisKeys, RedisStore, connect
from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from pyloto_corp.domain.records import Record
from tests.e2e.support import SETTINGS_VARIABLES
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph
from tests.support.helpers import (
    APP_SECRET,
    INTERNAL_TOKEN,
    VERIFY_TOKEN,
    encode,
    envelope,
    signed_headers,
    text_message,
)
from tests.support.redis_server import free_port

START_SECONDS = 30.0
TERMINAL_STATES = ("sent", "failed", "ignored", "with_agent")
RETENTION_SECONDS = 8 * 86400  # STATE_RETENTION_DAYS' default


def pyloto_command() -> list[str]:
    """The installed console script (falls back to `python -m` if it is not installed)."""
    script = Path(sys.executable).parent / "pyloto"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pyloto_corp.cli"]


def process_env(variables: dict[str, str], **extra: str) -> dict[str, str]:
    """This process's environment without pyloto's variables, plus `variables` and `extra`."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    return {**clean, **variables, **extra}


# The log file of every `pyloto serve` a test starts, in order.
SERVER_LOGS: list[Path] = []


class ServeProcess:
    """`pyloto serve --port N` in a child process, its output appended to `log`."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        SERVER_LOGS.append(log)  # read by the suite's check for message ids in log lines
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log = log
        self.cwd = cwd  # the working directory (None: the test's)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        """The command line that starts this server."""
        return [*pyloto_command(), "serve", "--port", str(self.port)]

    def start(self, wait_path: str = "/ready") -> None:
        """Start the process and wait until `wait_path` answers 200."""
        self.launch()
        self.wait(wait_path)

    def launch(self) -> None:
        """Start the process without waiting (to start several at once)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd
            )

    def wait(self, path: str = "/ready") -> None:
        """Wait until the launched process answers 200 on `path`."""
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not answer {path}:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        """Shut down gracefully if still running (SIGTERM, then SIGKILL if it hangs)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.cleanup()

    def cleanup(self) -> None:
        """SIGKILL if still running (end of a test, whatever happened)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


# --- Servers on Redis -----------------------------------------------------------------------


def sqlite_server(database: Path, log: Path, **extra: str) -> ServeProcess:
    """`pyloto serve` on a private SQLite database, with the test secrets and quick retries."""
    variables = {
        "STATE_SQLITE_PATH": str(database),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
        # One reply per message, as most tests expect: tests/e2e/test_bursts.py
        # turns burst coalescing on.
        "BURST_QUIET_SECONDS": "0",
        **extra,
    }
    return ServeProcess(process_env(variables), log)


def redis_variables(url: str, prefix: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """Variables of a `pyloto serve` on Redis (the SQLite path points at an unused tmp file)."""
    return {
        "STATE_BACKEND": "redis",
        "REDIS_URL": url,
        "REDIS_KEY_PREFIX": prefix,
        "REDIS_TIMEOUT_SECONDS": "0.5",
        "STATE_SQLITE_PATH": str(state_dir / "unused.db"),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
        # One reply per message, as most tests expect: tests/e2e/test_bursts.py
        # turns burst coalescing on.
        "BURST_QUIET_SECONDS": "0",
        **extra,
    }


class RedisView:
    """What a test reads straight from the Redis the servers share (never through pyloto)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)

    def states(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """message id → state of its record (None if there is no record), in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.hget(self.keys.record(message_id), "s")
            found = pipe.execute()
        return {
            message_id: state.decode() if state is not None else None
            for message_id, state in zip(message_ids, found, strict=True)
        }

    def failure_reasons(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """message id → the failure reason of its record (None if none), for a failed test's
        message."""
        with self.client.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.hget(self.keys.record(message_id), "d")
            found = pipe.execute()
        return {
            message_id: json.loads(data).get("failure_reason") if data else None
            for message_id, data in zip(message_ids, found, strict=True)
        }

    def record_ids(self) -> set[str]:
        """Ids of every record under the prefix."""
        head = self.keys.record("")
        return {key.decode()[len(head) :] for key in self.client.scan_iter(f"{head}*", count=1000)}

    def replies(self) -> Counter[str]:
        """Dry-run sends by the record they answer (the message they reply to in context)."""
        entries = self.client.lrange(self.keys.dry_run_log, 0, -1)
        return Counter(str(json.loads(entry)["body"]["context"]["message_id"]) for entry in entries)

    def wait_for(
        self, message_ids: Sequence[str], state: str = "sent", seconds: float = 30.0
    ) -> dict[str, str | None]:
        """Poll until every record is in `state` or the deadline passes; the last states."""
        deadline = time.monotonic() + seconds
        states = self.states(message_ids)
        while time.monotonic() < deadline and any(s != state for s in states.values()):
            time.sleep(0.1)
            states = self.states(message_ids)
        return states


def post_webhook(client: httpx.Client, url: str, payload: dict[str, Any]) -> httpx.Response:
    """POST a signed webhook with Meta's serialisation."""
    body = encode(payload)
    return client.post(f"{url}/webhook", content=body, headers=signed_headers(body))


def wait_status(url: str, status: int, seconds: float = 15.0, path: str = "/ready") -> None:
    """Poll `path` until it answers `status` (fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    seen: int | str = "nothing"
    while time.monotonic() < deadline:
        try:
            seen = httpx.get(f"{url}{path}", timeout=2).status_code
        except httpx.HTTPError as error:
            seen = repr(error)
        if seen == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not answer {status} in {seconds} s (last: {seen})")


def make_record(text: str, at: float, state: str = "received", **changes: Any) -> Record:
    """A record of a new text message, last updated at `at`, in `state`."""
    [message] = parse_webhook(encode(envelope([text_message(text)]))).messages
    return replace(Record.received(message, at), state=state, **changes)


def write_records(url: str, prefix: str, records: list[Record]) -> None:
    """Store records exactly as given, through RedisStore itself: no task is queued for them
    (as a crashed instance leaves them)."""

    async def write() -> None:
        store = RedisStore(connect(url), TERMINAL_STATES, RETENTION_SECONDS, RedisKeys(prefix))
        try:
            assert await store.create_if_absent(records) == [True] * len(records)
        finally:
            await store.close()

    asyncio.run(write())


def graph_variables(graph: FakeGraph, fake_openai: FakeOpenAI, llm: bool) -> dict[str, str]:
    """Variables of a `pyloto serve` on the fake Graph API and, with `llm`, the fake OpenAI
    server (no retries: what the fakes received is what the service asked)."""
    variables = {
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": graph.base_url,
        "WHATSAPP_TIMEOUT_SECONDS": "2",
        "WHATSAPP_PACING_SECONDS": "0",
    }
    if llm:
        variables |= {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_MAX_RETRIES": "0",
        }
    return variables
