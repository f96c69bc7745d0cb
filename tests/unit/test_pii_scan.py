"""The log scanner and `pyloto pii-scan`: a zero means something, and the scanner never leaks.

Lines come from the real pipeline where it matters: JSON log lines from `configure_logging`
and spans from the OpenTelemetry console exporter.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Tracer

from pyloto_corp.cli import main
from pyloto_corp.domain.privacy import find_personal_data, message_ref, redact_text
from pyloto_corp.observability.logging import configure_logging
from pyloto_corp.observability.pii_scan import GREP_PATTERNS, scan_line, scan_lines
from tests.support.helpers import SENDER, realistic_wamid
from tests.support.pii_strategies import personal_data, safe_values

PII_PAGE = Path(__file__).parents[2] / "docs" / "pii-scanning.md"
LOG = logging.getLogger("pyloto_corp.application.advance")
TRACE = "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"


def ours(event: str, **fields: Any) -> str:
    """A JSON log line as configure_logging writes it inside a traced request."""
    entry = {
        "severity": "INFO",
        "message": event,
        "logger": "pyloto_corp.application.advance",
        "time": "2026-11-25T08:48:04.123Z",
        "logging.googleapis.com/trace": TRACE,
        "logging.googleapis.com/spanId": "00f067aa0ba902b7",
        "logging.googleapis.com/trace_sampled": True,
        "event": event,
        **fields,
    }
    return json.dumps(entry, ensure_ascii=False)


# What our own logs, spans and gcloud print, with no personal data in it.
OUR_JSON_LINES = [
    ours("webhook_ingested", created_count=2, duplicate_count=1, ignored_count=0),
    ours("transition", ref="9f86d081884c7d65", source="llm1", dest="llm2",
         trigger="draft_reply", attempt=1, duration_ms=812.347),
    ours("llm1_event_detected", ref="9f86d081884c7d65", detected="price", confidence=0.92,
         latency_ms=1234.567, input_tokens=412, output_tokens=37),
    ours("task_retry", queue="whatsapp-outbound", state="queued_outbound", attempt=3,
         retry_in_s=40.0, error="GraphError: 131056 (pair rate limit)"),
    ours("record_dead_lettered", ref="4bf92f3577b34da6", state="queued_outbound",
         reason="permanent: graph error 131047: Re-engagement message"),
    ours("whatsapp_token_expired", code=190, http_status=401),
    ours("sweep_done", requeued_count=0, purged_count=12),
    ours("unhandled_error", route="/internal/tasks/advance",
         exception='Traceback (most recent call last):\n  File "/app/src/pyloto_corp/adapters/'
         'whatsapp_graph.py", line 158, in send\nTimeoutError: timed out after 10.0 s'),
    ours("development_default",
         note="started at 2026-11-25T08:48:04.123456+00:00, pyloto 0.1.0, python 3.11.9"),
    ours("task_enqueued", traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         task="projects/my-project/locations/southamerica-east1/queues/whatsapp-inbound/tasks/"
         "0f5c2a9e81d34b7c9a11f0e2d3c4b5a6", instance_id="5ac5db6471374bf0b5915ac5"),
]  # fmt: skip
OUR_SPAN = """\
{
    "name": "advance llm1",
    "context": {
        "trace_id": "0x54ebe45c52c38d0db9b7be5940cce60d",
        "span_id": "0x1591d3d209dabd7e",
        "trace_state": "[]"
    },
    "kind": "SpanKind.INTERNAL",
    "parent_id": "0x234413015ab61b45",
    "start_time": "2026-11-25T08:53:59.851594Z",
    "end_time": "2026-11-25T08:53:59.851643Z",
    "status": {
        "status_code": "UNSET"
    },
    "attributes": {
        "pyloto.state": "llm1",
        "pyloto.ref": "4bf92f3577b34da6",
        "pyloto.customer": "h:8d969eef6ecad3c29a3a",
        "http.status_code": 200,
        "graph.error_code": 131047,
        "pyloto.duration_s": 12.345
    },
    "events": [
        {
            "name": "retry",
            "timestamp": "2026-11-25T08:53:59.851625Z",
            "attributes": {
                "attempt": 2
            }
        }
    ],
    "links": [],
    "resource": {
        "attributes": {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": "1.45.2",
            "service.instance.id": "796f6b1a-15b1-4bf0-b591-5ac5db647137",
            "service.name": "pyloto"
        },
        "schema_url": ""
    }
}
""".splitlines()
OUR_TEXT_LINES = """\
INFO     2026-11-25 08:48:04 transition
WARNING  2026-11-25 08:48:05 task_retry
ERROR    2026-11-25 08:48:06 whatsapp_token_expired
DEFAULT  2026-11-25 08:48:07 POST 200 1.2 KB 812 ms Google-Cloud-Tasks https://pyloto-x7kq2ad3ia-rj.a.run.app/internal/tasks/advance
INFO     2026-11-25 08:48:08 Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)
---
insertId: 6745a3f4000a1b2c3d4e5f60
receiveTimestamp: '2026-11-25T08:48:04.456789012Z'
resource:
  labels:
    revision_name: pyloto-00042-xuz
severity: INFO
spanId: 00f067aa0ba902b7
timestamp: '2026-11-25T08:48:04.123456Z'
trace: projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736
""".splitlines()
OUR_LINES = OUR_JSON_LINES + OUR_SPAN + OUR_TEXT_LINES


@dataclass
class Telemetry:
    """The service's log handler and a console span exporter, both writing into memory."""

    logs: io.StringIO
    spans: io.StringIO
    tracer: Tracer

    def record(
        self, attributes: dict[str, Any], log: Callable[[], None]
    ) -> tuple[list[str], list[str]]:
        """Run `log` inside a span with `attributes`: (JSON log lines, console span lines)."""
        for stream in (self.logs, self.spans):
            stream.seek(0)
            stream.truncate()
        with self.tracer.start_as_current_span("advance llm1", attributes=attributes):
            log()
        return self.logs.getvalue().splitlines(), self.spans.getvalue().splitlines()


@pytest.fixture(scope="module")
def telemetry() -> Iterator[Telemetry]:
    """configure_logging into memory and a tracer with the console exporter; every logger
    setting is put back afterwards."""
    root = logging.getLogger()
    touched = [logging.getLogger(n) for n in ("transitions", "uvicorn", "uvicorn.error")]
    touched.append(logging.getLogger("uvicorn.access"))
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in touched]
    root_state = root.handlers[:], root.level
    logs, spans = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=logs, project="my-project")
    provider = TracerProvider(resource=Resource.create({"service.name": "pyloto"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=spans)))
    try:
        yield Telemetry(logs, spans, provider.get_tracer("pyloto_corp"))
    finally:
        provider.shutdown()
        root.handlers[:], _ = root_state
        root.setLevel(root_state[1])
        for lg, level, handlers, propagate, disabled in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled


def kinds_allowed(kind: str, value: str) -> set[str]:
    """A bare run of digits may be a phone, a WhatsApp id, a CPF or a CNPJ: any digit kind
    shows it was found. Anything written with a mask has one kind."""
    return {"phone", "cpf", "cnpj"} if value.isdigit() else {kind}


def unredacted_lines(value: str, telemetry: Telemetry) -> dict[str, list[str]]:
    """`value` written where a redaction bug would leave it, in each kind of line we scan."""
    json_line = json.dumps(
        {
            "severity": "INFO",
            "message": f"cliente escreveu: {value}",
            "logger": "pyloto_corp.application.advance",
            "time": "2026-11-25T08:48:04.123Z",
            "event": "webhook_message_unreadable",
            "ref": "4bf92f3577b34da6",
        },
        ensure_ascii=False,
    )
    _, span_lines = telemetry.record({"pyloto.note": f"tel {value}"}, lambda: None)
    return {
        "json log": [json_line],
        "console span": span_lines,
        "plain text": [f"INFO     2026-11-25 08:48:04 cliente escreveu: {value}"],
    }


@settings(max_examples=600)
@given(item=personal_data())
def test_the_scanner_finds_every_datum_in_every_kind_of_line(
    item: tuple[str, str], telemetry: Telemetry
) -> None:
    """Each generated phone, WhatsApp id, e-mail, CPF and CNPJ, left unredacted in a JSON log
    line, a console-exported span or a gcloud text line, is reported on its line, masked."""
    kind, value = item
    for form, lines in unredacted_lines(value, telemetry).items():
        holding = next(n for n, line in enumerate(lines, start=1) if value in line)
        findings = scan_lines(lines)
        assert any(f.line == holding and f.kind in kinds_allowed(kind, value) for f in findings), (
            form,
            value,
            findings,
        )
        for finding in findings:
            assert value not in finding.excerpt
            assert find_personal_data(finding.excerpt) == []


@settings(max_examples=300)
@given(items=st.lists(personal_data(), min_size=1, max_size=3))
def test_redacted_lines_leave_the_scanner_nothing(
    items: list[tuple[str, str]], telemetry: Telemetry
) -> None:
    """Through the service's logging and redact_text, the same data leave nothing to find:
    in the message, extra fields, nested values and keys, span attributes and plain text."""
    values = [value for _, value in items]
    text = "cliente escreveu: " + " / ".join(values)

    def log() -> None:
        LOG.info(
            "cliente %s escreveu",
            values[0],
            extra={
                "event": "webhook_message_unreadable",
                "note": text,
                "contact": {"emails": values, values[-1]: "chave"},
            },
        )

    log_lines, span_lines = telemetry.record({"pyloto.note": redact_text(text)}, log)
    plain = [redact_text(f"INFO     2026-11-25 08:48:04 {text}")]
    assert len(log_lines) == 1
    assert scan_lines(log_lines + span_lines + plain) == []


@settings(max_examples=500)
@given(value=safe_values(), attempt=st.integers(0, 10))
def test_our_own_values_are_not_reported(value: str, attempt: int, telemetry: Telemetry) -> None:
    """Timestamps, durations, counts, codes, hex ids, traceparents, versions and UUIDs in our
    log lines, spans and gcloud text produce no finding: no false alarm from our own data."""

    def log() -> None:
        LOG.info(
            "transition after %s",
            value,
            extra={"event": "transition", "detail": value, "attempt": attempt, value: 1},
        )

    log_lines, span_lines = telemetry.record({"pyloto.detail": value, "attempt": attempt}, log)
    plain = [f"INFO     2026-11-25 08:48:04 transition after {value} ({value})"]
    assert scan_lines(log_lines + span_lines + plain) == []


def test_our_recorded_lines_hold_nothing() -> None:
    """Our JSON log lines, a console span and gcloud output, as they are printed, are clean
    for the scanner and for every grep pattern of the runbook."""
    assert scan_lines(OUR_LINES) == []
    for kind, pattern in GREP_PATTERNS.items():
        assert [line for line in OUR_LINES if re.search(pattern, line)] == [], kind


@pytest.mark.parametrize(
    "field",
    [
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
    ],
)
def test_structural_fields_are_not_scanned(field: str) -> None:
    """Fields whose values are ours are skipped in JSON lines and in console span lines; the
    same value in any other field is reported."""
    digits = "5511912345678"
    assert scan_line(1, json.dumps({field: digits, "event": "x"})) == []
    assert scan_line(1, f'        "{field}": "{digits}",') == []
    assert [f.kind for f in scan_line(1, json.dumps({"sender": digits}))] == ["phone"]
    assert [f.kind for f in scan_line(1, f'        "sender": "{digits}",')] == ["phone"]


def test_keys_numbers_and_nested_values_are_scanned() -> None:
    """A WhatsApp id as a key, as a JSON number, or deep in lists and objects is reported."""
    line = json.dumps(
        {"per_sender": {"5511912345678": 3}, "to": 5511987654321, "x": [{"y": ["a@b.com.br"]}]}
    )
    assert [(f.kind, f.excerpt) for f in scan_line(7, line)] == [
        ("phone", "*********5678"),
        ("phone", "to: *********4321"),
        ("email", "y: a***@***.br"),
    ]


def test_an_escaped_newline_does_not_hide_a_number() -> None:
    """In plain text holding JSON, `\\n5511…` is read as a line break before the number."""
    assert [
        f.kind for f in scan_line(1, r'ERROR 2026-11-25 08:48:04 {"m": "a\n5511912345678"}')
    ] == ["phone"]


def test_a_finding_prints_as_line_kind_and_masked_excerpt() -> None:
    """A finding reads `line N: kind: field: excerpt`, the datum masked, the context cut."""
    line = json.dumps({"message": "o cliente pediu retorno no 11 91234-5678 amanhã cedo, ok?"})
    (finding,) = scan_line(12, line)
    assert (
        str(finding)
        == "line 12: phone: message: ...te pediu retorno no *******5678 amanhã cedo, ok?"
    )


def test_control_characters_do_not_reach_the_terminal() -> None:
    """Newlines and escape codes around a datum are printed as spaces: one finding, one line."""
    (finding,) = scan_line(1, json.dumps({"message": "\x1b[31mtel\n5511912345678\r"}))
    assert finding.excerpt == "message:  [31mtel *********5678 "


# --- grep patterns for the runbook -----------------------------------------------------------


@settings(max_examples=600)
@given(item=personal_data())
def test_grep_patterns_find_every_generated_datum(
    item: tuple[str, str], telemetry: Telemetry
) -> None:
    """The runbook's grep -E pattern for each kind matches the line holding the datum, in each
    kind of line (checked here with Python's re, which reads these patterns the same way)."""
    kind, value = item
    for form, lines in unredacted_lines(value, telemetry).items():
        assert any(re.search(GREP_PATTERNS[kind], line) for line in lines), (form, value)


def test_grep_patterns_work_in_grep(tmp_path: Path) -> None:
    """The real `grep -E` matches every generated datum with its kind's pattern."""
    # grep is on every system the runbook is for, if not always on a trimmed PATH.
    grep = shutil.which("grep") or shutil.which("grep", path="/usr/bin:/bin")
    assert grep, "grep -E is what the runbook's operators run"
    examples: dict[str, list[str]] = {kind: [] for kind in GREP_PATTERNS}

    @settings(max_examples=800)
    @given(personal_data())
    def collect(item: tuple[str, str]) -> None:
        examples[item[0]].append(f"cliente escreveu: {item[1]}.")

    collect()
    for kind, lines in examples.items():
        log = tmp_path / f"{kind}.log"
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        missed = subprocess.run(
            [grep, "-E", "-v", "-e", GREP_PATTERNS[kind], str(log)],
            capture_output=True,
            text=True,
            env={"LC_ALL": "C"},
            check=False,
        )
        assert missed.returncode == 1, (kind, missed.stdout, missed.stderr)  # 1: nothing missed
        assert len(lines) > 20, kind


def test_the_docs_quote_the_grep_patterns() -> None:
    """The patterns docs/pii-scanning.md gives for `grep -E` are exactly the tested ones."""
    page = PII_PAGE.read_text(encoding="utf-8")
    for pattern in GREP_PATTERNS.values():
        assert f"'{pattern}'" in page


# --- pyloto pii-scan ---------------------------------------------------------------------------


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`pyloto` in a child process with no usable environment: only what breaks settings."""
    return subprocess.run(
        [sys.executable, "-m", "pyloto_corp.cli", *args],
        input=stdin,
        capture_output=True,
        env={"ENVIRONMENT": "production", "STATE_BACKEND": "nonsense"},
        check=False,
        timeout=60,
    )


def test_cli_reports_each_match_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per match, then the count; exit 1. Its output holds no personal data."""
    lines = [
        *OUR_JSON_LINES[:2],
        json.dumps({"message": "ligar 11 91234-5678 ou maria.silva@exemplo.com.br"}),
        "INFO     2026-11-25 08:48:04 CPF 123.456.789-09, CNPJ 12.345.678/0001-95",
        *OUR_SPAN[:3],
    ]
    log = tmp_path / "run.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["pii-scan", str(log)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "line 3: phone: message: ligar *******5678 ou m***@***.br",
        "line 3: email: message: ...igar *******5678 ou m***@***.br",
        "line 4: cpf: ...-11-25 08:48:04 CPF *********09, CNPJ ************9...",
        "line 4: cnpj: ...F *********09, CNPJ ************95",
        "pii-scan: 4 matches in 7 lines",
    ]


def test_cli_flags_a_wamid_and_a_bsuid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line holding a phone-bearing wamid (an exception's text) and one holding a BSUID are
    matches; the wamid is shown as its log reference, the BSUID masked."""
    wamid = realistic_wamid(SENDER)
    lines = [
        json.dumps({"severity": "ERROR", "exception": f"ValueError: bad value: '{wamid}'"}),
        "WARNING  graph error 131062: recipient BR.1502576394655843 not supported",
    ]
    log = tmp_path / "run.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["pii-scan", str(log)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"line 1: wamid: exception: ...eError: bad value: 'wamid:{message_ref(wamid)}'",
        "line 2: bsuid: ...r 131062: recipient BR.************5843 not supported",
        "pii-scan: 2 matches in 2 lines",
    ]
    assert wamid not in "\n".join(out)
    assert re.search(GREP_PATTERNS["wamid"], lines[0])
    assert not re.search(GREP_PATTERNS["wamid"], redact_text(lines[0]))


def test_cli_output_never_repeats_what_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scanning the scanner's own report over hundreds of generated data finds nothing."""
    values: list[str] = []

    @settings(max_examples=400)
    @given(personal_data())
    def collect(item: tuple[str, str]) -> None:
        values.append(item[1])

    collect()
    log = tmp_path / "leaky.log"
    log.write_text(
        "".join(json.dumps({"message": f"contato {v} ok"}) + "\n" for v in values),
        encoding="utf-8",
    )
    assert main(["pii-scan", str(log)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"pii-scan: {len(values)} matches in {len(values)} lines"
    assert scan_lines(out.splitlines()) == []
    for value in values:
        assert value not in out


def test_cli_exits_0_on_clean_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Clean logs: only the count line, exit 0."""
    log = tmp_path / "clean.log"
    log.write_text("\n".join(OUR_LINES) + "\n", encoding="utf-8")
    assert main(["pii-scan", str(log)]) == 0
    assert capsys.readouterr().out == f"pii-scan: 0 matches in {len(OUR_LINES)} lines\n"


@pytest.mark.parametrize("make", [lambda p: p / "missing.log", lambda p: p])
def test_cli_exits_2_when_the_file_cannot_be_read(
    make: Callable[[Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file or a directory: a message naming it on stderr, nothing on stdout, exit 2."""
    target = make(tmp_path)
    assert main(["pii-scan", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"pyloto pii-scan: cannot read {target}: ")


def test_cli_reads_stdin_without_settings_or_environment() -> None:
    """`pyloto pii-scan` (stdin by default, or `-`) runs with settings that would stop every
    other command, and reads undecodable bytes without failing."""
    leaky = run_cli("pii-scan", stdin=b'{"message": "zap +5511912345678"}\n\xff\xfe\n')
    assert leaky.returncode == 1, leaky.stderr
    assert leaky.stdout.decode() == (
        "line 1: phone: message: zap *********5678\npii-scan: 1 matches in 2 lines\n"
    )
    clean = run_cli("pii-scan", "-", stdin="\n".join(OUR_LINES).encode())
    assert (clean.returncode, clean.stderr) == (0, b"")
    assert clean.stdout.decode() == f"pii-scan: 0 matches in {len(OUR_LINES)} lines\n"
