"""Replay of dead letters through the app: `POST /internal/replay` and `pyloto replay`.

The outbox is one of our own behind the Outbound port: it refuses the first sends with a
permanent error (so the record is dead-lettered in `queued_outbound`), then accepts, and it
counts every accepted send, so a replay that sent twice would show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.application.ports import PermanentStepError
from pyloto_corp.bootstrap import bootstrap, load_chart
from pyloto_corp.cli import main
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.replies import reply_key
from pyloto_corp.http.app import create_app
from tests.e2e.servers import ServeProcess, make_record, process_env
from tests.e2e.support import Pyloto
from tests.support.helpers import INTERNAL_TOKEN, envelope, text_message

pytestmark = pytest.mark.anyio

TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}


class RefusingOutbox:
    """Refuses the first `refusals` sends permanently, then accepts; keeps what it accepted."""

    reconcile_seconds = 0.0

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.accepted: list[dict[str, Any]] = []

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        if self.refusals > 0:
            self.refusals -= 1
            raise PermanentStepError("131026: message undeliverable")
        self.accepted.append(body)
        return f"wamid.out.{len(self.accepted)}"

    async def find_sent(self, message_id: str) -> str | None:
        for number, body in enumerate(self.accepted, start=1):
            if body.get("biz_opaque_callback_data") == reply_key(message_id):
                return f"wamid.out.{number}"
        return None

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        return None

    def sends_for(self, message_id: str) -> int:
        """Accepted sends answering `message_id`."""
        key = reply_key(message_id)
        return sum(1 for b in self.accepted if b.get("biz_opaque_callback_data") == key)


@pytest.fixture
def outbox() -> RefusingOutbox:
    """Refuses the first send only."""
    return RefusingOutbox(refusals=1)


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings], outbox: RefusingOutbox
) -> AsyncIterator[Pyloto]:
    """The app on embedded defaults with the refusing outbox in front."""
    built = create_app(bootstrap(make_settings(), outbox=outbox))
    async with AsyncTestClient(app=built) as client:
        yield Pyloto(client)


def states_of(view: dict[str, Any]) -> list[str]:
    """The record's path: its first state, then every state it moved to."""
    return [view["history"][0]["from"], *(step["to"] for step in view["history"])]


async def replay(app: Pyloto, body: dict[str, Any]) -> dict[str, Any]:
    """POST /internal/replay; the summary (the answer must be 200)."""
    response = await app.client.post("/internal/replay", json=body, headers=TOKEN)
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    return summary


async def store_records(app: Pyloto, records: list[Record]) -> None:
    """Store records exactly as given (no task is queued for them)."""
    assert await app.container.store.create_if_absent(records) == [True] * len(records)


async def dead_letter_one(app: Pyloto) -> str:
    """Post a text message; the outbox refuses its reply, so it ends in `failed`."""
    message = text_message("Olá, quero saber o preço")
    assert (await app.post(envelope([message]))).status_code == 200
    view = await app.wait_for(message["id"])
    assert view["state"] == "failed"
    return str(message["id"])


async def test_replay_of_a_record_failed_while_sending_sends_once(
    app: Pyloto, outbox: RefusingOutbox
) -> None:
    """A reply refused permanently is dead-lettered; replaying it sends it exactly once, and
    the history shows failed → queued_outbound → sending → sent with the old failure kept."""
    message_id = await dead_letter_one(app)
    assert outbox.sends_for(message_id) == 0

    assert await replay(app, {"message_id": message_id}) == {
        "replayed": [message_id],
        "skipped": {},
    }

    view = await app.wait_for(message_id, {"sent"})
    await app.wait_idle()
    assert outbox.sends_for(message_id) == 1
    assert states_of(view)[-5:] == ["sending", "failed", "queued_outbound", "sending", "sent"]
    assert [step["trigger"] for step in view["history"][-4:]] == [
        "dead_letter",
        "replay_send",
        "claim_send",
        "send",
    ]
    assert "131026" in view["results"]["previous_failure"]
    assert view["failure_reason"] is None


async def test_replay_of_a_record_failed_before_its_reply_builds_a_template(
    app: Pyloto, outbox: RefusingOutbox
) -> None:
    """A record dead-lettered before it had a reply goes failed → fallback → queued_outbound →
    sent on replay, with a template reply (sent once: the outbox's one refusal is used up
    first so this send is accepted)."""
    outbox.refusals = 0
    record = make_record(
        "Oi", time.time(), state="failed", failure_reason="out of attempts (5): timeout"
    )
    await store_records(app, [record])

    summary = await replay(app, {"message_id": record.message_id})

    assert summary == {"replayed": [record.message_id], "skipped": {}}
    view = await app.wait_for(record.message_id, {"sent"})
    assert states_of(view) == ["failed", "fallback", "queued_outbound", "sending", "sent"]
    assert view["history"][0]["trigger"] == "replay_reply"
    assert view["results"]["template"]
    assert outbox.sends_for(record.message_id) == 1


async def test_replay_of_a_sent_record_is_skipped(app: Pyloto, outbox: RefusingOutbox) -> None:
    """Replaying a record that is not `failed` changes nothing and sends nothing."""
    message_id = await dead_letter_one(app)
    await replay(app, {"message_id": message_id})
    before = await app.wait_for(message_id, {"sent"})
    await app.wait_idle()

    summary = await replay(app, {"message_id": message_id})

    assert summary == {"replayed": [], "skipped": {message_id: "state is sent"}}
    await app.wait_idle()
    assert outbox.sends_for(message_id) == 1
    assert (await app.view(message_id))["history"] == before["history"]


async def test_replay_of_an_unknown_record_is_skipped(app: Pyloto) -> None:
    """An id with no record is reported, not an error."""
    summary = await replay(app, {"message_id": "wamid.NOPE"})
    assert summary == {"replayed": [], "skipped": {"wamid.NOPE": "no such record"}}


async def test_replay_failed_since_picks_only_records_failed_after_the_bound(
    app: Pyloto, outbox: RefusingOutbox
) -> None:
    """`{"failed": true, "since": T}` replays the failed records updated at or after T only;
    an older dead letter and a sent record are left as they are."""
    outbox.refusals = 0
    now = time.time()
    old = make_record("Oi", now - 7200, state="failed", failure_reason="old")
    recent = make_record("Olá", now - 10, state="failed", failure_reason="recent")
    done = make_record("Bom dia", now - 10, state="sent")
    await store_records(app, [old, recent, done])

    summary = await replay(app, {"failed": True, "since": now - 3600})

    assert summary == {"replayed": [recent.message_id], "skipped": {}}
    await app.wait_for(recent.message_id, {"sent"})
    await app.wait_idle()
    assert (await app.view(old.message_id))["state"] == "failed"
    assert outbox.sends_for(old.message_id) == 0
    assert outbox.sends_for(done.message_id) == 0

    everything = await replay(app, {"failed": True, "since": None})
    assert everything == {"replayed": [old.message_id], "skipped": {}}
    await app.wait_for(old.message_id, {"sent"})


async def test_replay_of_a_reply_the_outbox_already_sent_is_skipped(
    app: Pyloto, outbox: RefusingOutbox
) -> None:
    """A dead letter whose reply the outbox already knows was sent (a crash after the send)
    is skipped as "already sent": no second send, and it stays `failed`."""
    outbox.refusals = 0
    record = make_record("Oi", time.time(), state="failed", failure_reason="out of attempts")
    reply = {
        "messaging_product": "whatsapp",
        "to": record.inbound.sender,
        "type": "text",
        "text": {"body": "Olá!"},
        "biz_opaque_callback_data": reply_key(record.message_id),
    }
    record.reply = reply
    await outbox.send(reply)
    await store_records(app, [record])

    summary = await replay(app, {"message_id": record.message_id})

    assert summary == {"replayed": [], "skipped": {record.message_id: "already sent"}}
    await app.wait_idle()
    assert outbox.sends_for(record.message_id) == 1
    assert (await app.view(record.message_id))["state"] == "failed"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"message_id": "wamid.X", "failed": true}',
        b'{"message_id": "wamid.X", "since": 5}',
        b'{"failed": false}',
        b'{"failed": true, "since": "yesterday"}',
        b'{"failed": true, "colour": "red"}',
        b'{"failed": true, "confirm_unknown": true}',
        b'{"message_id": "wamid.X", "confirm_unknown": "yes"}',
    ],
)
async def test_a_bad_replay_body_is_400(app: Pyloto, body: bytes) -> None:
    """Anything but one message id or `failed: true` (with a numeric `since`) → 400."""
    response = await app.client.post("/internal/replay", content=body, headers=TOKEN)
    assert response.status_code == 400, response.text


async def test_replay_needs_the_internal_token(app: Pyloto) -> None:
    """No token → 401, a wrong one → 403: replay is an operator route."""
    body = {"failed": True}
    assert (await app.client.post("/internal/replay", json=body)).status_code == 401
    wrong = {"X-Internal-Token": "wrong"}
    response = await app.client.post("/internal/replay", json=body, headers=wrong)
    assert response.status_code == 403


# --- pyloto replay against a real server ----------------------------------------------------


def _store_failed(path: Path, records: list[Record]) -> None:
    terminal = [name for name, spec in load_chart().states.items() if spec.terminal]

    async def write() -> None:
        store = SQLiteStore(path, terminal)
        try:
            assert await store.create_if_absent(records) == [True] * len(records)
        finally:
            await store.close()

    asyncio.run(write())


def _wait_sent(url: str, message_id: str, seconds: float = 15.0) -> str:
    deadline = time.monotonic() + seconds
    state = ""
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/internal/messages/{message_id}", headers=TOKEN).json()["state"]
        if state == "sent":
            break
        time.sleep(0.05)
    return state


@pytest.mark.slow
def test_cli_replay_prints_the_summary(
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pyloto replay --failed --since 3600 --url` against `pyloto serve` replays the recent
    dead letter only and prints `replayed 1, skipped 0` and its id; replaying it again by id
    prints the skip reason; a wrong token → exit 1."""
    now = time.time()
    recent = make_record("Oi", now - 10, state="failed", failure_reason="timeout")
    old = make_record("Olá", now - 7200, state="failed", failure_reason="timeout")
    _store_failed(Path(cli_env["STATE_SQLITE_PATH"]), [recent, old])
    server = ServeProcess(process_env(cli_env), tmp_path / "server.log")
    try:
        server.start()
        assert main(["replay", "--failed", "--since", "3600", "--url", server.url]) == 0
        out, _ = capsys.readouterr()
        assert out.splitlines() == ["replayed 1, skipped 0", f"replayed {recent.message_id}"]
        assert _wait_sent(server.url, recent.message_id) == "sent"

        assert main(["replay", recent.message_id, "--url", server.url]) == 0
        out, _ = capsys.readouterr()
        assert out.splitlines() == [
            "replayed 0, skipped 1",
            f"skipped {recent.message_id}: state is sent",
        ]

        monkeypatch.setenv("INTERNAL_TASK_TOKEN", "wrong-token-" + "x" * 32)
        assert main(["replay", "--failed", "--url", server.url]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert "403" in err
    finally:
        server.cleanup()


def test_confirm_unknown_goes_with_one_message_id(capsys: pytest.CaptureFixture[str]) -> None:
    """`pyloto replay --failed --confirm-unknown` is refused before anything is sent: an
    unknown outcome is confirmed record by record."""
    with pytest.raises(SystemExit) as refused:
        main(["replay", "--failed", "--confirm-unknown"])
    assert refused.value.code == 2
    assert "--confirm-unknown goes with one MESSAGE_ID" in capsys.readouterr().err


def test_since_takes_an_iso_time_or_seconds_ago() -> None:
    """`--since 2026-11-25T00:00:00Z` is that instant; `--since 3600` is an hour before now;
    a time without a zone or a word is refused."""
    import argparse

    from pyloto_corp.cli import since_bound

    assert since_bound("2026-11-25T00:00:00Z") == 1795564800.0
    assert since_bound("3600", now=10_000.0) == 6_400.0
    for bad in ("2026-11-25T00:00:00", "yesterday"):
        with pytest.raises(argparse.ArgumentTypeError):
            since_bound(bad)
