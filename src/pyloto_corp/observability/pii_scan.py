"""Scan log lines and exported spans for personal data that escaped redaction.

Reads what pyloto writes: JSON log lines (observability.logging), spans as the OpenTelemetry
console exporter prints them (one JSON object over many lines: each line is read on its own,
as a `"key": value` member or a list item) and plain text such as `gcloud run logs read`.
The detectors are the redaction's own (`find_personal_data`), so a clean scan means the
redaction had nothing left to miss that it could have caught. Findings are reported masked:
the scanner never repeats the personal data it finds.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, TextIO

from pyloto_corp.domain.privacy import find_personal_data, mask_value

# Fields whose values are ours (times, trace context, message refs), never a customer's.
SKIPPED_FIELDS: Final = frozenset(
    {
        "time",
        "timestamp",
        "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId",
        "logging.googleapis.com/trace_sampled",
        "trace_id",
        "span_id",
        "parent_id",
        "start_time",
        "end_time",
        "ref",
    }
)

# The same kinds as POSIX extended regular expressions, for `grep -E` over exported logs. They
# are coarser than the scanner (no check digits, no decimal or UUID exceptions): they find
# every datum the scanner finds and a few look-alikes. Bracket forms (`[+]`, `[.]`) keep them
# identical in grep and in Python's re.
_B0 = "(^|[^0-9A-Za-z])"
_B1 = "([^0-9A-Za-z]|$)"
GREP_EMAIL: Final = "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*[.][A-Za-z]{2,}"
GREP_CPF: Final = f"{_B0}[0-9]{{3}}[.]?[0-9]{{3}}[.]?[0-9]{{3}}-?[0-9]{{2}}{_B1}"
GREP_CNPJ: Final = (
    f"{_B0}([0-9]{{2}}[.]?[0-9]{{3}}[.]?[0-9]{{3}}/?[0-9]{{4}}-?[0-9]{{2}}"
    f"|[0-9A-Z]{{2}}[.][0-9A-Z]{{3}}[.][0-9A-Z]{{3}}/[0-9A-Z]{{4}}-[0-9]{{2}}){_B1}"
)
GREP_PHONE: Final = (
    f"{_B0}(([+]|00)[1-9]([ .()-]{{0,2}}[0-9]){{7,14}}"
    "|([(]?([+]|00)?55[)]?[ .-]?)?[(]?(0[ .-]?([0-9]{2}|[xX]{2})?[ .-]?)?[1-9][1-9][)]?[ .-]?"
    "(9[ .-]?)?[0-9]{4}[ .-]?[0-9]{4}"
    "|(9[ .-]?)?[0-9]{4}-[0-9]{4}|9[0-9]{4} [0-9]{4}|[0-9]{10,15})"
    f"{_B1}"
)
# A BSUID (`BR.1502576394655843`, `BR.ENT.…`): any tail with a digit, not after a dot.
GREP_BSUID: Final = (
    "(^|[^0-9A-Za-z.])[A-Z]{2}[.](ENT[.])?[0-9A-Za-z]*[0-9][0-9A-Za-z]*([^0-9A-Za-z]|$)"
)
# A WhatsApp message id (base64 of a blob holding a phone number): any `wamid.` token.
GREP_WAMID: Final = "(^|[^0-9A-Za-z_.])wamid[.][0-9A-Za-z+/=_-]"
GREP_PATTERNS: Final = {
    "phone": GREP_PHONE,
    "wamid": GREP_WAMID,
    "bsuid": GREP_BSUID,
    "email": GREP_EMAIL,
    "cpf": GREP_CPF,
    "cnpj": GREP_CNPJ,
}

# The `"key":` of a `"key": value,` line, as the console exporter indents a span.
_MEMBER = re.compile(r'("(?:[^"\\]|\\.)*")\s*:')
# JSON escapes left in plain text (a JSON payload quoted in a gcloud line): `\n5511…`.
_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTEXT = 20


@dataclass(frozen=True)
class Finding:
    """One datum found: where, what kind, and a masked excerpt around it."""

    line: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.excerpt}"


def scan_line(number: int, line: str) -> list[Finding]:
    """The personal data in one line (JSON, a line of a console span, or plain text)."""
    return [
        Finding(number, kind, f"{field}: {excerpt}" if field else excerpt)
        for field, text in _texts(line)
        for kind, excerpt in _masked_excerpts(text)
    ]


def scan_lines(lines: Iterable[str]) -> list[Finding]:
    """The personal data in `lines`, numbered from 1."""
    return [
        finding for number, line in enumerate(lines, start=1) for finding in scan_line(number, line)
    ]


class UnreadableLog(Exception):
    """The log to scan cannot be opened."""


def scan_path(path: str, out: TextIO) -> tuple[int, int]:
    """`scan_stream` over the file at `path`, or standard input for `-`."""
    if path == "-":
        if isinstance(sys.stdin, io.TextIOWrapper):
            sys.stdin.reconfigure(encoding="utf-8", errors="replace")  # logs are UTF-8
        return scan_stream(sys.stdin, out)
    try:
        source = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115  # closed below
    except OSError as error:
        raise UnreadableLog(f"cannot read {path}: {error.strerror or error}") from error
    with source:
        return scan_stream(source, out)


def scan_stream(source: TextIO, out: TextIO) -> tuple[int, int]:
    """Print each finding in `source` to `out`, then a count line; (findings, lines read)."""
    found = read = 0
    for read, line in enumerate(source, start=1):
        for finding in scan_line(read, line.rstrip("\r\n")):
            found += 1
            print(finding, file=out)
    print(f"pii-scan: {found} matches in {read} lines", file=out)
    return found, read


def _texts(line: str) -> Iterator[tuple[str | None, str]]:
    """(field, text) for every piece of `line` that may hold user data."""
    stripped = line.strip()
    whole = _json(stripped)
    if isinstance(whole, dict | list):
        try:
            yield from list(_walk(whole, None))
        except RecursionError:  # nested too deep to walk: read it as text instead
            yield None, _unescape(stripped)
        return
    member = _MEMBER.match(stripped)
    if member and isinstance(key := _json(member[1]), str):
        yield None, key
        if key not in SKIPPED_FIELDS:
            text = stripped[member.end() :].strip().removesuffix(",")
            value = _json(text)
            yield from _walk(value, key) if value is not None else [(key, _unescape(text))]
        return
    item = _json(stripped.removesuffix(","))
    yield from _walk(item, None) if item is not None else [(None, _unescape(stripped))]


def _walk(value: object, field: str | None) -> Iterator[tuple[str | None, str]]:
    """The strings (and integers: a WhatsApp id may be logged as a number) in a JSON value."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, int) and not isinstance(value, bool):
        yield field, str(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield None, key
            if key not in SKIPPED_FIELDS:
                yield from _walk(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, field)


def _json(text: str) -> object:
    """`text` parsed as JSON, or None (also for `null`, which holds nothing to scan)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _unescape(text: str) -> str:
    """Plain text with JSON escapes turned into spaces, so `\\n` does not glue onto digits."""
    return _ESCAPE.sub(" ", text)


def _masked_excerpts(text: str) -> list[tuple[str, str]]:
    """(kind, excerpt) for each datum in `text`; every datum in an excerpt is masked."""
    found = find_personal_data(text)
    if not found:
        return []
    pieces: list[str] = []
    spans: list[tuple[str, int, int]] = []
    cursor = length = 0
    for kind, value in found:
        start = text.index(value, cursor)
        masked = mask_value(kind, value)
        before = text[cursor:start]
        pieces += [before, masked]
        length += len(before)
        spans.append((kind, length, length + len(masked)))
        length += len(masked)
        cursor = start + len(value)
    pieces.append(text[cursor:])
    masked_text = _CONTROL.sub(" ", "".join(pieces))
    return [(kind, _window(masked_text, start, end)) for kind, start, end in spans]


def _window(text: str, start: int, end: int) -> str:
    """`text[start:end]` with a little context either side, marked where it was cut."""
    left, right = max(0, start - _CONTEXT), min(len(text), end + _CONTEXT)
    return ("..." if left else "") + text[left:right] + ("..." if right < len(text) else "")
