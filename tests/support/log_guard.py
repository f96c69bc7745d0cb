"""A log handler that keeps every wamid and BSUID the service writes in clear (masked), for
the suite-wide check that no log line of any test carries one."""

from __future__ import annotations

import logging
from pathlib import Path

from pyloto_corp.observability.logging import JsonFormatter
from pyloto_corp.observability.pii_scan import scan_line
from tests.e2e.support import not_the_test_client

# What no log line of the service may hold in clear, in any test: message ids and BSUIDs.
# (Tests that feed the logging itself personal data log it from their own files: not checked.)
_IDS = frozenset({"wamid", "bsuid"})
_TESTS = str(Path(__file__).parents[1])


class IdentifierGuard(logging.Handler):
    """Formats every record the service writes (at INFO and up, as in production, and at
    DEBUG where a test turns it on; before any redaction) and keeps what `pii-scan` reports
    in it as a wamid or a BSUID, masked."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatter = JsonFormatter()
        self.addFilter(not_the_test_client)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.pathname.startswith(_TESTS):
            return
        line = self.formatter.format(record)
        self.found += [str(f) for f in scan_line(1, line) if f.kind in _IDS]


def identifiers_in(log: Path) -> list[str]:
    """What `pii-scan` reports as a wamid or a BSUID in a server's log file, masked."""
    if not log.exists():
        return []
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [
        f"{log.name} {finding}"
        for number, line in enumerate(lines, start=1)
        for finding in scan_line(number, line)
        if finding.kind in _IDS
    ]
