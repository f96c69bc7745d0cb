"""The suite's guard against message ids and BSUIDs in log lines sees what it must."""

from __future__ import annotations

import logging
from pathlib import Path

from pyloto_corp.domain.privacy import message_ref
from tests.support.helpers import BSUID, SENDER, realistic_wamid
from tests.support.log_guard import IdentifierGuard, identifiers_in


def record(message: str, pathname: str, **extra: object) -> logging.LogRecord:
    """A record as the service's code at `pathname` would make it."""
    made = logging.makeLogRecord(
        {"name": "pyloto_corp.http.ops", "levelno": logging.ERROR, "levelname": "ERROR"}
    )
    made.msg, made.pathname = message, pathname
    made.__dict__.update(extra)
    return made


def test_the_guard_reports_a_wamid_or_bsuid_the_service_logs_and_masks_it() -> None:
    wamid = realistic_wamid(SENDER)
    guard = IdentifierGuard()
    service = "/x/src/pyloto_corp/http/ops.py"
    guard.handle(record(f"bad cursor {wamid}", service))
    guard.handle(record("graph error", service, error=f"recipient {BSUID}"))
    guard.handle(record("transition", service, ref=message_ref(wamid)))
    guard.handle(record(f"a test's own line {wamid}", __file__))
    assert len(guard.found) == 2
    assert "wamid" in guard.found[0]
    assert "bsuid" in guard.found[1]
    assert wamid not in "\n".join(guard.found)
    assert BSUID not in "\n".join(guard.found)


def test_a_server_log_is_read_for_wamids_and_bsuids(tmp_path: Path) -> None:
    wamid = realistic_wamid(SENDER)
    log = tmp_path / "server.log"
    log.write_text(
        '{"severity":"INFO","message":"transition","ref":"4bf92f3577b34da6"}\n'
        f'{{"severity":"ERROR","message":"unhandled_error","exception":"bad {wamid}"}}\n',
        encoding="utf-8",
    )
    (found,) = identifiers_in(log)
    assert found.startswith("server.log line 2: wamid: ")
    assert wamid not in found
    assert identifiers_in(tmp_path / "never-written.log") == []
