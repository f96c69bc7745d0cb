"""Refused requests, made visible: a rate-limited log line and a counter per reason.

A secret rotated on one side only shows up as every webhook answered 403; without a line on
the server it would go unnoticed until customers complain. The body is never logged (it is
the customer's message), only why it was refused.

Whatever a client can make happen as often as it likes is noted this way, so a flood is
counted in full but cannot fill the log (nor its bill) or bury a real error: refused
webhooks (`webhook_rejected`), refused console sign-ins (`ops_signin_refused`) and
connections closed at their read deadline (`slow_client_closed`); a store outage's 503s
(`webhook_rejected` at ERROR) too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.metrics import Counter

log = logging.getLogger(__name__)

# At most this many lines per reason per window: a flood of bad requests is counted in full
# by the metric but cannot fill the logs.
LINES_PER_WINDOW = 5
WINDOW_SECONDS = 60.0


@dataclass
class _Window:
    started: float
    lines: int = 0
    suppressed: int = 0


@dataclass
class Rejections:
    """Notes each refused request: counted always, logged (as `event`, at `level`) within
    the rate limit."""

    counter: Counter
    clock: Callable[[], float] = time.monotonic
    lines_per_window: int = LINES_PER_WINDOW
    window_seconds: float = WINDOW_SECONDS
    event: str = "webhook_rejected"
    level: int = logging.WARNING
    _windows: dict[str, _Window] = field(default_factory=dict)

    def note(
        self, reason: str, status: int | None = None, detail: str = "", level: int | None = None
    ) -> None:
        """Count a rejection (`reason` is a fixed word, `detail` a parser or store message,
        never the body) and log it (at `level`, else the instance's) unless this reason
        already logged its share of the window. `status` is the HTTP status answered, None
        when the connection was closed instead."""
        self.counter.add(1, {"pyloto.reason": reason})
        now = self.clock()
        window = self._windows.get(reason)
        if window is None or now - window.started >= self.window_seconds:
            suppressed = window.suppressed if window is not None else 0
            window = self._windows[reason] = _Window(started=now, suppressed=suppressed)
        if window.lines >= self.lines_per_window:
            window.suppressed += 1
            return
        window.lines += 1
        extra: dict[str, object] = {"event": self.event, "reason": reason}
        if status is not None:
            extra["status"] = status
        if detail:
            extra["detail"] = detail
        if window.suppressed:
            extra["suppressed"] = window.suppressed  # lines not written since the last one
            window.suppressed = 0
        log.log(self.level if level is None else level, "%s: %s", self.event, reason, extra=extra)
