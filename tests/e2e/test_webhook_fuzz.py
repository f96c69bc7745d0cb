"""A hypothesis-driven fuzzer against the real app: generated webhook bodies, signed.

Two properties. Whatever a body holds, the answer is 200 or 400 with a JSON body, never a
500. And in a well-formed envelope, whatever odd entries, changes, messages, statuses or
contacts stand beside them, every readable message is acknowledged and stored: none is lost
because of its neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from tests.support.helpers import INTERNAL_TOKEN, new_wamid, signed_headers, text_message

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as JSON may carry it: any character, lone surrogates included (json.dumps escapes them).
odd_text = st.text(max_size=12) | st.sampled_from(["\ud83d", "a\udc00b", "\U0001f600", "", " "])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)
# Meta's own keys with odd values: the shapes a parser is most likely to trip on.
odd_message = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "from": json_values,
        "type": st.sampled_from(["text", "image", "audio", "interactive", "reaction", "x"])
        | json_values,
        "timestamp": json_values,
        "text": json_values,
        "context": json_values,
        "image": json_values,
        "interactive": json_values,
    },
)
odd_status = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "status": st.sampled_from(["sent", "delivered", "read", "failed", "played"]) | json_values,
        "timestamp": json_values,
        "biz_opaque_callback_data": json_values,
        "errors": json_values,
    },
)


def encode(payload: Any) -> bytes:
    """JSON as bytes, non-ASCII escaped (so lone surrogates can be sent)."""
    return json.dumps(payload).encode()


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The app on embedded defaults, one for all examples of a test."""
    with TestClient(app=create_app(bootstrap(make_settings()))) as running:
        yield running


def post(client: TestClient, body: bytes) -> Any:  # type: ignore[type-arg]
    """POST /webhook signed over `body`; the answer, checked to be 200 or 400 with JSON."""
    response = client.post("/webhook", content=body, headers=signed_headers(body))
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"].startswith("application/json")
    return response


@FUZZ
@given(
    payload=json_values
    | st.fixed_dictionaries({"object": json_values, "entry": json_values})
    | st.fixed_dictionaries(
        {"object": st.just("whatsapp_business_account"), "entry": st.lists(json_values)}
    )
)
def test_no_body_gets_a_server_error(
    client: TestClient,  # type: ignore[type-arg]
    payload: Any,
) -> None:
    post(client, encode(payload))


@st.composite
def batches(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A well-formed envelope whose changes mix readable messages with odd items; the ids
    of the readable messages."""
    readable: list[str] = []
    entries: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        changes: list[Any] = []
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                changes.append(draw(json_values))  # not a change at all
                continue
            messages: list[Any] = []
            for _ in range(draw(st.integers(0, 4))):
                if draw(st.booleans()):
                    message_id = new_wamid()
                    readable.append(message_id)
                    messages.append(text_message(draw(odd_text) or "oi", message_id))
                else:
                    messages.append(draw(odd_message | json_values))
            value: dict[str, Any] = {"messages": messages}
            value["statuses"] = draw(st.lists(odd_status | json_values, max_size=3))
            value["contacts"] = draw(json_values)
            value["metadata"] = draw(json_values)
            value["errors"] = draw(json_values)
            changes.append({"field": "messages", "value": value})
        entries.append({"id": draw(json_values), "changes": changes})
    return {"object": "whatsapp_business_account", "entry": entries}, readable


@FUZZ
@given(batch=batches())
def test_every_readable_message_of_an_odd_batch_is_stored(
    client: TestClient,  # type: ignore[type-arg]
    batch: tuple[dict[str, Any], list[str]],
) -> None:
    payload, readable = batch
    response = post(client, encode(payload))
    assert response.status_code == 200
    # Odd items that happen to carry a usable id are stored too (as `unsupported`, say).
    assert response.json()["created"] >= len(readable)
    for message_id in readable:
        stored = client.get(
            f"/internal/messages/{quote(message_id, safe='')}",
            headers={"X-Internal-Token": INTERNAL_TOKEN},
        )
        assert stored.status_code == 200, message_id
