"""Any WhatsApp id can be looked up: real wamids are standard base64 (`/`, `+`, `=`)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.cli import message_url
from tests.e2e.support import Pyloto
from tests.support.helpers import INTERNAL_TOKEN, envelope, status, text_message

pytestmark = pytest.mark.anyio

IDS = [
    "wamid.HBgMNTUxMTk4NzY1NDMyFQIAEhgg/Q+x9k2Lr=",
    "wamid.a//b",
    "wamid.ends/",
    "wamid.+plus+and%percent",
    "wamid.ação?#",
]
TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}


@pytest.fixture
async def stored(pyloto: Pyloto) -> list[str]:
    """The ids above, each a record that has been answered (each from its own sender: replies
    to one sender are paced)."""
    messages = [text_message("Oi", id_, sender=f"55119888800{n:02}") for n, id_ in enumerate(IDS)]
    response = await pyloto.post(envelope(messages))
    assert response.json()["created"] == len(IDS)
    for message_id in IDS:
        await pyloto.wait_for(message_id)
    return IDS


@pytest.mark.parametrize("message_id", IDS)
async def test_a_percent_encoded_id_finds_its_record(
    client: AsyncTestClient,  # type: ignore[type-arg]
    stored: list[str],
    message_id: str,
) -> None:
    response = await client.get(message_url("", message_id), headers=TOKEN)
    assert response.status_code == 200, response.text
    assert response.json()["message_id"] == message_id


async def test_slashes_left_unencoded_still_find_the_record(
    client: AsyncTestClient,  # type: ignore[type-arg]
    stored: list[str],
) -> None:
    encoded = quote(IDS[0], safe="/+=")
    assert "/" in encoded
    response = await client.get(f"/internal/messages/{encoded}", headers=TOKEN)
    assert response.json()["message_id"] == IDS[0]


async def test_an_id_that_differs_only_in_slashes_is_another_message(
    client: AsyncTestClient,  # type: ignore[type-arg]
    stored: list[str],
) -> None:
    response = await client.get(message_url("", "wamid.a/b"), headers=TOKEN)
    assert response.status_code == 404


def test_the_cli_encodes_every_reserved_character() -> None:
    assert message_url("http://h:1", "wamid.a/b+c=?#") == (
        "http://h:1/internal/messages/wamid.a%2Fb%2Bc%3D%3F%23"
    )


async def test_long_ids_sharing_their_first_512_characters_keep_their_own_statuses(
    pyloto: Pyloto,
) -> None:
    """The status of one reply reaches its record only, even when two ids differ only
    after the 512 characters Meta keeps of biz_opaque_callback_data."""
    short, long = "wamid." + "Q" * 600, "wamid." + "Q" * 5000
    messages = [text_message("Oi", short, sender="5511988881001")]
    messages.append(text_message("Oi", long, sender="5511988881002"))
    await pyloto.post(envelope(messages))
    for message_id in (short, long):
        assert (await pyloto.wait_for(message_id))["state"] == "sent"
    (reply,) = await pyloto.sent_for(short)
    assert len(reply["biz_opaque_callback_data"]) <= 512

    echo = status("wamid.OUT.SHORT", "read", 1_732_600_000, reply["biz_opaque_callback_data"])
    assert (await pyloto.post(envelope(statuses=[echo]))).status_code == 200

    assert (await pyloto.view(short))["delivery_status"] == "read"
    assert (await pyloto.view(long))["delivery_status"] is None
