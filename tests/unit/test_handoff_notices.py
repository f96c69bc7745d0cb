"""HandoffNotice: what a notice may hold (nothing personal), written out as its task key and
read back unchanged, its stable id, its payload and its signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from pyloto_corp.application.handoff_notices import (
    NOTICE_TYPE,
    NOTIFY_STATE,
    HandoffNotice,
    HandoffNotifier,
    InvalidNotice,
    signature,
)
from pyloto_corp.application.ports import Task

CONVERSATION = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def notice(**changes: Any) -> HandoffNotice:
    fields: dict[str, Any] = {
        "conversation": CONVERSATION,
        "mode": "human",
        "previous_mode": "waiting_human",
        "reason": "operator_takeover",
        "at": 1765100000.1234,
        "version": 7,
    }
    return HandoffNotice(**{**fields, **changes})


def test_a_notice_is_read_back_from_its_key_unchanged() -> None:
    """The key holds every field (the time to the millisecond, as the notice keeps it)."""
    original = notice()
    assert original.at == 1765100000.123
    assert (
        original.key
        == f"handoff:{CONVERSATION}:7:human:waiting_human:operator_takeover:1765100000123"
    )
    assert HandoffNotice.from_key(original.key) == original


def test_the_id_is_stable_per_notice_and_differs_between_notices() -> None:
    """Receivers dedupe on `id`: the same notice always has it, another change never."""
    assert notice().id == HandoffNotice.from_key(notice().key).id
    assert notice().id != notice(version=8).id
    assert notice().id != notice(mode="bot", reason="agent_release").id
    assert len(notice().id) == 32


def test_the_payload_is_the_documented_object_and_the_body_its_json() -> None:
    assert json.loads(notice().body()) == {
        "type": NOTICE_TYPE,
        "id": notice().id,
        "conversation": CONVERSATION,
        "mode": "human",
        "previous_mode": "waiting_human",
        "reason": "operator_takeover",
        "at": 1765100000.123,
        "version": 7,
    }


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = notice().body()
    digest = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature(body, "s3cret") == f"sha256={digest}"


@pytest.mark.parametrize(
    "changes",
    [
        {"conversation": "5511987654321"},  # a phone number is no conversation id
        {"conversation": "BR.1502576394655843"},
        {"conversation": "+5511987654321000"},
        {"conversation": CONVERSATION.upper()},
        {"conversation": "João da Silva"},
        {"mode": "asleep"},
        {"previous_mode": ""},
        {"reason": "Cliente pediu atendente"},
        {"reason": "a:b"},
        {"reason": "x" * 41},
        {"version": -1},
        {"version": True},
        {"at": -1.0},
    ],
)
def test_a_notice_holding_anything_but_ids_tokens_and_numbers_is_refused(
    changes: dict[str, Any],
) -> None:
    """Nothing personal fits: the conversation is hex longer than any phone number, reasons
    are lowercase tokens."""
    with pytest.raises(InvalidNotice):
        notice(**changes)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "handoff",
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
        f"handoff:{CONVERSATION}:7:human:bot:keyword",
        f"handoff:{CONVERSATION}:seven:human:bot:keyword:1",
        f"handoff:{CONVERSATION}:7:human:bot:keyword:1.5",
        f"handoff:{CONVERSATION}:²:human:bot:keyword:1",
        f"other:{CONVERSATION}:7:human:bot:keyword:1",
        f"handoff:{CONVERSATION}:7:human:bot:keyword:1:extra",
        "handoff:5511987654321:7:human:bot:keyword:1",
    ],
)
def test_a_key_pyloto_does_not_write_is_refused(key: str) -> None:
    with pytest.raises(InvalidNotice):
        HandoffNotice.from_key(key)


class RecordingQueue:
    def __init__(self) -> None:
        self.tasks: list[Task] = []

    async def enqueue(self, task: Task) -> None:
        self.tasks.append(task)

    async def ping(self) -> None:
        return None


class Poster:
    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        return 200

    async def close(self) -> None:
        return None


@pytest.mark.anyio
async def test_notify_queues_one_outbound_task_carrying_the_notice() -> None:
    queue = RecordingQueue()
    await HandoffNotifier(queue, Poster(), "s").notify(notice())
    assert queue.tasks == [Task(notice().key, NOTIFY_STATE, "outbound")]


@pytest.mark.anyio
async def test_notify_without_a_poster_queues_nothing() -> None:
    queue = RecordingQueue()
    notifier = HandoffNotifier(queue, None, "")
    await notifier.notify(notice())
    assert queue.tasks == []
    assert await notifier.deliver(notice(), 1) == "unconfigured"
