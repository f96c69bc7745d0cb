"""POST /webhook against hostile or odd input: signatures, bad bodies, size limits, fuzz."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto, as_bytes
from tests.support.helpers import (
    APP_SECRET,
    encode,
    envelope,
    new_wamid,
    signature,
    signed_headers,
    text_message,
)

pytestmark = pytest.mark.anyio

PORTUGUESE = "Olá! Não consegui pagar a fatura de março 😕 — vocês aceitam cartão? Obrigada 🙏"


async def test_missing_signature_is_unauthorised(pyloto: Pyloto) -> None:
    """A POST without X-Hub-Signature-256 → 401 and nothing is stored."""
    message = text_message("Oi")
    body = encode(envelope([message]))
    response = await pyloto.post(body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert await pyloto.records() == {}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda body: signature(body, "another-secret"), id="other-secret"),
        pytest.param(lambda body: signature(body + b" "), id="other-body"),
        pytest.param(lambda body: signature(body).replace("sha256=", "sha1="), id="sha1-scheme"),
        pytest.param(lambda body: signature(body).removeprefix("sha256="), id="no-scheme"),
        pytest.param(lambda body: "sha256=" + "0" * 64, id="zeros"),
        pytest.param(lambda body: "sha256=", id="empty-digest"),
        pytest.param(lambda body: "garbage", id="garbage"),
        pytest.param(lambda body: signature(body)[:-2], id="truncated"),
    ],
)
async def test_wrong_signature_is_forbidden(pyloto: Pyloto, header: Any) -> None:
    """A signature that does not match the raw body under the app secret → 403, nothing stored."""
    body = encode(envelope([text_message("Oi")]))
    headers = {"X-Hub-Signature-256": header(body), "Content-Type": "application/json"}
    response = await pyloto.post(body, headers=headers)
    assert response.status_code == 403
    assert await pyloto.records() == {}


async def test_uppercase_hex_signature_is_accepted(pyloto: Pyloto) -> None:
    """The hex digest is compared case-insensitively (sha256=ABCD… is the same signature)."""
    body = encode(envelope([text_message("Oi")]))
    header = "sha256=" + signature(body).removeprefix("sha256=").upper()
    response = await pyloto.post(body, headers={"X-Hub-Signature-256": header})
    assert response.status_code == 200


async def test_non_ascii_body_is_verified_over_its_raw_bytes(pyloto: Pyloto) -> None:
    """Portuguese text and emoji signed over the raw UTF-8 bytes → 200 and the text survives."""
    message = text_message(PORTUGUESE)
    body = encode(envelope([message]))
    assert "Não".encode() in body, "sent unescaped, as UTF-8"
    assert "😕".encode() in body
    response = await pyloto.post(body, headers=signed_headers(body))
    assert response.status_code == 200
    assert response.json()["created"] == 1
    view = await pyloto.wait_for(message["id"], {"sent"})
    assert view["inbound"]["text"] == PORTUGUESE


async def test_reserialised_body_with_the_original_signature_is_forbidden(pyloto: Pyloto) -> None:
    """Same JSON re-encoded with ensure_ascii=True but signed over the original bytes → 403.

    This is what a receiver that parses then re-serialises before hashing would accept; the
    service must hash the bytes it received.
    """
    payload = envelope([text_message(PORTUGUESE)])
    original = encode(payload)
    escaped = json.dumps(payload, ensure_ascii=True).encode()
    assert json.loads(escaped) == json.loads(original)
    assert escaped != original
    response = await pyloto.post(escaped, headers=signed_headers(original))
    assert response.status_code == 403
    assert await pyloto.records() == {}


async def test_escaped_unicode_body_signed_as_sent_is_accepted(pyloto: Pyloto) -> None:
    """Meta may send \\uXXXX escapes; signed over those exact bytes → 200, text decoded."""
    message = text_message(PORTUGUESE)
    escaped = json.dumps(envelope([message]), ensure_ascii=True).encode()
    response = await pyloto.post(escaped, headers=signed_headers(escaped))
    assert response.status_code == 200
    view = await pyloto.wait_for(message["id"], {"sent"})
    assert view["inbound"]["text"] == PORTUGUESE


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json at all", id="text"),
        pytest.param(b'{"object": "whatsapp_business_account", "entry": [', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(
            b'{"object": "whatsapp_business_account", "entry": [], }', id="trailing-comma"
        ),
        pytest.param(b'{"object": "whatsapp_business_account", "entry": NaN}', id="nan"),
    ],
)
async def test_non_json_is_a_bad_request(pyloto: Pyloto, body: bytes) -> None:
    """A signed body that is not JSON → 400 (never 500, nothing stored)."""
    response = await pyloto.post(body)
    assert response.status_code == 400
    assert await pyloto.records() == {}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"object": "page", "entry": []}, id="object-page"),
        pytest.param(
            {"object": "instagram", "entry": [{"id": "1", "changes": []}]}, id="instagram"
        ),
        pytest.param({"entry": []}, id="no-object"),
        pytest.param({"object": "whatsapp_business_account"}, id="no-entry"),
        pytest.param({"object": "whatsapp_business_account", "entry": {}}, id="entry-object"),
        pytest.param({"object": "whatsapp_business_account", "entry": "x"}, id="entry-string"),
        pytest.param({"object": "whatsapp_business_account", "entry": None}, id="entry-null"),
        pytest.param([envelope([text_message("Oi")])], id="json-array"),
        pytest.param("whatsapp_business_account", id="json-string"),
        pytest.param(42, id="json-number"),
        pytest.param(None, id="json-null"),
    ],
)
async def test_json_that_is_not_a_whatsapp_envelope_is_a_bad_request(
    pyloto: Pyloto, payload: Any
) -> None:
    """Valid, signed JSON that is not a whatsapp_business_account envelope → 400."""
    body = json.dumps(payload).encode()
    response = await pyloto.post(body)
    assert response.status_code == 400
    assert response.json()["status_code"] == 400
    assert await pyloto.records() == {}


def _padded_body(size: int) -> tuple[str, bytes]:
    """A valid one-message envelope of exactly `size` bytes."""
    message = text_message("")
    bare = encode(envelope([message]))
    message["text"]["body"] = "a" * (size - len(bare))
    body = encode(envelope([message]))
    assert len(body) == size
    return message["id"], body


async def test_body_above_the_limit_is_too_large_and_not_stored(open_pyloto: OpenPyloto) -> None:
    """WEBHOOK_MAX_BODY_BYTES=2048: a correctly signed 4096-byte envelope → 413, no record."""
    async with open_pyloto(WEBHOOK_MAX_BODY_BYTES="2048") as pyloto:
        message_id, body = _padded_body(4096)
        response = await pyloto.post(body)
        assert response.status_code == 413
        assert (await pyloto.get_view(message_id)).status_code == 404
        assert await pyloto.records() == {}

        small_id, small = _padded_body(2048)
        assert (await pyloto.post(small)).status_code == 200, "the limit itself is accepted"
        assert set(await pyloto.records()) == {small_id}


def _wrap(value: Any) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_GOOD = text_message("Oi, tudo bem?", message_id="wamid.FUZZ.GOOD")

# Bodies a client can send; each is signed correctly. None may produce a 500.
ODD_BODIES: list[Any] = [
    pytest.param(b"", id="empty-body"),
    pytest.param(b"null", id="null"),
    pytest.param(b"{}", id="empty-object"),
    pytest.param(b"[]", id="empty-array"),
    pytest.param(b'""', id="empty-string"),
    pytest.param(b"true", id="true"),
    pytest.param(b" \n\t ", id="whitespace"),
    pytest.param(_deep(100_000), id="deep-array"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-object"),
    pytest.param(
        b'{"object":"whatsapp_business_account","entry":[],"extra":' + _deep(50_000) + b"}",
        id="deep-unknown-field",
    ),
    pytest.param(
        b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",'
        b'"value":{"messages":' + _deep(50_000) + b"}}]}]}",
        id="deep-inside-value",
    ),
    pytest.param(
        {"object": "whatsapp_business_account", "entry": ["x", 1, None]}, id="entry-strings"
    ),
    pytest.param({"object": "whatsapp_business_account", "entry": [[]]}, id="entry-list"),
    pytest.param(
        {"object": "whatsapp_business_account", "entry": [{"changes": "x"}]}, id="changes-string"
    ),
    pytest.param(
        {"object": "whatsapp_business_account", "entry": [{"changes": ["x", 3]}]},
        id="change-items-scalars",
    ),
    pytest.param(_wrap("x"), id="value-string"),
    pytest.param(_wrap([]), id="value-list"),
    pytest.param(_wrap(None), id="value-null"),
    pytest.param(_wrap({"messages": "x"}), id="messages-string"),
    pytest.param(_wrap({"messages": ["x", 1, None, [], True]}), id="messages-not-objects"),
    pytest.param(_wrap({"messages": [{}]}), id="message-empty-object"),
    pytest.param(_wrap({"messages": [{**_GOOD, "id": ""}]}), id="message-empty-id"),
    pytest.param(_wrap({"messages": [{**_GOOD, "id": 12345}]}), id="message-id-number"),
    pytest.param(_wrap({"messages": [{**_GOOD, "id": None}]}), id="message-id-null"),
    pytest.param(_wrap({"messages": [{**_GOOD, "from": 5511987654321}]}), id="from-number"),
    pytest.param(_wrap({"messages": [{**_GOOD, "type": 7}]}), id="type-number"),
    pytest.param(_wrap({"messages": [{**_GOOD, "type": None}]}), id="type-null"),
    pytest.param(_wrap({"messages": [{**_GOOD, "timestamp": "soon"}]}), id="timestamp-word"),
    pytest.param(_wrap({"messages": [{**_GOOD, "timestamp": 1.5e300}]}), id="timestamp-float"),
    pytest.param(_wrap({"messages": [{**_GOOD, "timestamp": "9" * 40}]}), id="timestamp-huge"),
    pytest.param(_wrap({"messages": [{**_GOOD, "timestamp": 10**40}]}), id="timestamp-huge-int"),
    pytest.param(_wrap({"messages": [{**_GOOD, "text": {"body": 42}}]}), id="text-body-number"),
    pytest.param(_wrap({"messages": [{**_GOOD, "text": "Oi"}]}), id="text-string"),
    pytest.param(_wrap({"messages": [{**_GOOD, "context": "x"}]}), id="context-string"),
    pytest.param(
        _wrap({"messages": [{**_GOOD, "type": "interactive", "interactive": {"type": ["x"]}}]}),
        id="interactive-type-list",
    ),
    pytest.param(
        _wrap(
            {
                "messages": [
                    {
                        **_GOOD,
                        "type": "interactive",
                        "interactive": {"type": "list_reply", "list_reply": {"id": 1, "title": 2}},
                    }
                ]
            }
        ),
        id="list-reply-numbers",
    ),
    pytest.param(_wrap({"messages": [{**_GOOD, "type": "z" * 10_000}]}), id="type-10k"),
    pytest.param(_wrap({"messages": [_GOOD], "contacts": "x"}), id="contacts-string"),
    pytest.param(
        _wrap({"messages": [_GOOD], "contacts": [{"profile": "x", "wa_id": 1}]}),
        id="contact-odd",
    ),
    pytest.param(_wrap({"messages": [_GOOD], "metadata": []}), id="metadata-list"),
    pytest.param(_wrap({"statuses": "x"}), id="statuses-string"),
    pytest.param(_wrap({"statuses": [1, "x", None]}), id="statuses-not-objects"),
    pytest.param(
        _wrap({"statuses": [{"id": 1, "status": "read", "timestamp": "1"}]}), id="status-id-number"
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": 3, "timestamp": "1"}]}),
        id="status-number",
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": "read", "timestamp": "9" * 40}]}),
        id="status-timestamp-huge",
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": "read", "timestamp": -(10**30)}]}),
        id="status-timestamp-negative-huge",
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": "failed", "errors": [{"code": 10**30}]}]}),
        id="status-error-code-huge",
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": "failed", "errors": "x"}]}),
        id="status-errors-string",
    ),
    pytest.param(
        _wrap({"statuses": [{"id": "wamid.S", "status": "sent", "biz_opaque_callback_data": 5}]}),
        id="status-callback-number",
    ),
    pytest.param(_wrap({"errors": "x"}), id="errors-string"),
    pytest.param(_wrap({"errors": [1, {"code": {"deep": [2**70]}}]}), id="errors-odd"),
    pytest.param(
        {"object": "whatsapp_business_account", "entry": [{"id": 102290129340398, "changes": []}]},
        id="entry-id-number",
    ),
    pytest.param(
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": 1, "value": {}}]}],
        },
        id="field-number",
    ),
    pytest.param({"object": 1, "entry": []}, id="object-number"),
]


@pytest.mark.parametrize("payload", ODD_BODIES)
async def test_odd_bodies_never_cause_a_server_error(pyloto: Pyloto, payload: Any) -> None:
    """Every odd but signed body → 400 or 200, never 500; no record is stored without an id."""
    response = await pyloto.post(as_bytes(payload) if not isinstance(payload, bytes) else payload)
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"].startswith("application/json")
    records = await pyloto.records()
    assert all(isinstance(key, str) and key.strip() for key in records), records
    for message_id in records:
        view = await pyloto.view(message_id)  # every stored record can be read back
        assert view["message_id"] == message_id
    assert (await pyloto.client.get("/ready")).status_code == 200, "the service is still ready"


async def test_odd_messages_do_not_hide_good_ones_in_the_same_batch(pyloto: Pyloto) -> None:
    """Unreadable items are skipped one by one: the readable message in the batch is still sent."""
    good = text_message("Quero saber o preço", message_id=new_wamid())
    value = {
        "contacts": [{"profile": {"name": "Maria"}, "wa_id": good["from"]}],
        "messages": ["x", {"id": 1}, {}, None, good, {**good, "id": ""}],
        "statuses": [{"id": 5}, "y"],
    }
    response = await pyloto.post(_wrap(value))
    assert response.status_code == 200
    assert response.json()["created"] == 1
    assert response.json()["skipped"] >= 4
    await pyloto.wait_for(good["id"], {"sent"})
    assert set(await pyloto.records()) == {good["id"]}


async def test_odd_bodies_in_parallel_with_good_ones(pyloto: Pyloto) -> None:
    """Bad requests interleaved with good ones do not disturb the good ones."""
    goods = [text_message(f"Pedido {n}") for n in range(5)]
    bad = [b"", b"null", b"[]", _deep(10_000)]
    results: list[int] = []

    async def send(body: bytes) -> None:
        results.append((await pyloto.post(body)).status_code)

    async with anyio.create_task_group() as group:
        for item in goods:
            group.start_soon(send, encode(envelope([item])))
        for body in bad:
            group.start_soon(send, body)
    assert sorted(results) == [200] * len(goods) + [400] * len(bad)
    for item in goods:
        await pyloto.wait_for(item["id"], {"sent"})


async def test_signature_is_checked_before_parsing(pyloto: Pyloto) -> None:
    """A non-JSON body without a valid signature is refused for the signature (401/403), not 400."""
    assert (await pyloto.post(b"not json", headers={})).status_code == 401
    bad = {"X-Hub-Signature-256": signature(b"other", APP_SECRET)}
    assert (await pyloto.post(b"not json", headers=bad)).status_code == 403


async def test_the_answer_counts_what_the_webhook_carried(pyloto: Pyloto) -> None:
    """200 with a JSON body: messages created and repeated, statuses and skipped items."""
    first, second = text_message("Oi"), text_message("Tudo bem?")
    batch = envelope([first, second, first])

    response = await pyloto.post(batch)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"created": 2, "duplicates": 1, "statuses": 0, "skipped": 0}
    again = await pyloto.post(envelope([first]))
    assert again.json() == {"created": 0, "duplicates": 1, "statuses": 0, "skipped": 0}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_not_allowed(pyloto: Pyloto, method: str) -> None:
    """The webhook route takes GET and POST only: 405 naming them, nothing stored."""
    body = encode(envelope([text_message("Oi")]))
    response = await pyloto.client.request(
        method, "/webhook", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert await pyloto.records() == {}
