"""JSON log lines on stdout in Cloud Logging's shape, with personal data redacted."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, TextIO

from pyloto_corp.domain.privacy import redact_text

# LogRecord attributes that are not `extra=` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI copy of the message
}
# `extra=` fields that carry a person's name: no pattern finds a name, so the names given
# there are removed from every part of the same line (themselves included).
NAME_FIELDS = frozenset({"contact_name", "profile_name"})


def _clean(value: Any, names: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, names)
    if isinstance(value, dict):
        return {redact_text(str(k), names): _clean(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, names) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(repr(value), names)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: severity, message, event, extra fields, redacted."""

    converter = time.gmtime  # type: ignore[assignment]  # UTC, as Cloud Logging expects

    def format(self, record: logging.LogRecord) -> str:
        extra = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        names = tuple(str(extra[key]) for key in NAME_FIELDS if extra.get(key))
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": redact_text(record.getMessage(), names),
            "logger": record.name,
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
        }
        for key, value in extra.items():
            entry[key] = _clean(value, names)
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            entry["exception"] = redact_text(text, names)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stdout) as redacted JSON lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True
    # transitions logs every callback at INFO: noise at our volume.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
