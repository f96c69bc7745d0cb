"""No personal data in log lines: what the JSON formatter writes never carries it."""

from __future__ import annotations

import io

import pytest

from tests.e2e.support import Pyloto, not_the_test_client
from tests.support.helpers import envelope, realistic_wamid, status, text_message

SENDER = "5511987654321"
NAME = "Maria Aparecida Nogueira"
PHONE_IN_TEXT = "+55 (11) 91234-5678"
EMAIL = "maria.nogueira@example.com.br"
CPF = "123.456.789-09"
CNPJ = "12.345.678/0001-90"

# What must never reach a log line, in every form it was given.
PERSONAL = [
    SENDER,
    NAME,
    *NAME.split(),
    PHONE_IN_TEXT,
    "91234-5678",
    "912345678",
    EMAIL,
    CPF,
    "12345678909",
    CNPJ,
]


@pytest.mark.anyio
async def test_message_with_personal_data_leaves_none_in_the_logs(
    pyloto: Pyloto, log_lines: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """A message carrying a phone number, e-mail, CPF, CNPJ and the contact's name, run to `sent`
    (plus a status about it and an unreadable item that is logged), leaves none of them in
    any formatted log line."""
    text = (
        f"Olá, sou {NAME}. Meu telefone é {PHONE_IN_TEXT}, e-mail {EMAIL}, "
        f"CPF {CPF} e a empresa tem CNPJ {CNPJ}."
    )
    message = text_message(text, message_id=realistic_wamid(SENDER), sender=SENDER)
    payload = envelope([message], sender=SENDER, name=NAME)
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"].append({"from": SENDER, "id": 5, "text": {"body": text}})  # unreadable
    value["errors"] = [{"code": 131000, "title": f"erro para {SENDER}"}]
    assert (await pyloto.post(payload)).status_code == 200
    view = await pyloto.wait_for(message["id"], {"sent"})
    delivered = status(view["outbound_message_id"], "delivered", 1732500000, callback=message["id"])
    delivered["recipient_id"] = SENDER
    assert (await pyloto.post(envelope(statuses=[delivered]))).status_code == 200
    await pyloto.wait_idle()

    lines = log_lines.getvalue().splitlines()
    # The capture works: the pipeline's own events are there.
    events = " ".join(lines)
    for event in ("webhook_ingested", "transition", "webhook_message_unreadable"):
        assert f'"{event}"' in events, f"{event} was not logged"
    service_records = [r for r in caplog.records if not_the_test_client(r)]
    assert len(lines) == len(service_records)
    for line in lines:
        for secret in PERSONAL:
            assert secret.lower() not in line.lower(), f"{secret!r} in log line: {line}"
        assert message["id"] not in line, f"the wamid (it encodes the number) in: {line}"
