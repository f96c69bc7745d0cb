"""Graph's error texts are redacted where they enter pyloto: the outbox's error quotes no
BSUID, wamid, number or e-mail (a peer's text may quote the customer), and keeps the code and
the words an operator reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.adapters.whatsapp_graph import GraphOutbox, create_client
from pyloto_corp.application.ports import PermanentStepError, TransientStepError
from pyloto_corp.domain.privacy import find_personal_data, message_ref
from pyloto_corp.domain.replies import text_reply_body
from tests.integration.conftest import terminal_states
from tests.integration.factories import record
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, VERSION, FakeGraph, Fault
from tests.support.helpers import BSUID, EMAIL, realistic_wamid

pytestmark = pytest.mark.anyio

WAMID = realistic_wamid("5521998765432")


@pytest.fixture
async def outbox(graph: FakeGraph, tmp_path: Path) -> AsyncIterator[GraphOutbox]:
    """A Graph outbox on the fake server, over a real SQLite store."""
    store = SQLiteStore(tmp_path / "graph.db", terminal_states())
    sender = GraphOutbox(
        {PHONE_NUMBER_ID: create_client(TOKEN, 2.0)}, graph.base_url, VERSION, store
    )
    yield sender
    await sender.close()
    await store.close()


@pytest.mark.parametrize(
    ("code", "kind"), [(131026, PermanentStepError), (131000, TransientStepError)]
)
async def test_a_graph_error_quoting_the_customer_is_redacted_at_the_outbox(
    graph: FakeGraph, outbox: GraphOutbox, code: int, kind: type[Exception]
) -> None:
    graph.inject(Fault(code=code, title=f"message {WAMID} to {BSUID} ({EMAIL}) undeliverable"))
    body = text_reply_body(record(state="queued_outbound").inbound, "Olá!")
    with pytest.raises(kind) as caught:
        await outbox.send(body)
    text = str(caught.value)
    assert text == (
        f"graph error {code}: ({code}) message [wamid:{message_ref(WAMID)}] to [bsuid] ([email]) "
        "undeliverable"
    )


async def test_a_long_graph_error_is_redacted_before_it_is_cut(
    graph: FakeGraph, outbox: GraphOutbox
) -> None:
    """A number that straddles the length limit of the text is not left half in clear."""
    # The fake writes `(131026) ` before the title: the number starts 11 characters before 200.
    graph.inject(Fault(code=131026, title="x" * 180 + " +55 11 91234-5678 ok"))
    body = text_reply_body(record(state="queued_outbound").inbound, "Olá!")
    with pytest.raises(PermanentStepError) as caught:
        await outbox.send(body)
    text = str(caught.value)
    assert "+55 11 9" not in text
    assert find_personal_data(text) == []
