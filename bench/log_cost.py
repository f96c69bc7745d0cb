"""CPU a log line costs: redaction filter + JSON formatter, as `pyloto serve` configures them.

    PYTHONPATH=src .venv/bin/python bench/log_cost.py [--lines 20000] [--repeat 3]

Logging is set up by `configure_logging` (the handler `pyloto serve` installs) writing to a
StringIO that is emptied between rounds. Each case writes the pipeline's own lines with the
fields the code gives them (advance.py `transition`, llm_steps.py `llm1_event_detected`,
ingest.py `webhook_ingested`), inside an active span and, for the step's lines, with the
contact's name in scope, as they are written in production. Then the detectors alone over
typical field values. Prints CPU µs per line (time.process_time, best of --repeat rounds).
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from opentelemetry.sdk.trace import TracerProvider

from pyloto_corp.domain.privacy import find_personal_data, message_ref, redact_text
from pyloto_corp.observability.logging import configure_logging, names_in_scope

REF = message_ref("wamid.HBgNNTUxMTkxMjM0NTY3OBUCABIYFjNFQjBDMEE4RjE0QjQzRjdBNTAA")
NAME = "Maria Aparecida"

TRANSITION = {
    "event": "transition",
    "ref": REF,
    "source": "received",
    "dest": "deduped",
    "trigger": "accept",
    "attempt": 1,
    "duration_ms": 1.734,
}
LLM1 = {
    "event": "llm1_event_detected",
    "ref": REF,
    "detected": "order_status",
    "confidence": 0.92,
    "latency_ms": 412.3,
    "input_tokens": 612,
    "output_tokens": 38,
    "model": "gpt-4o-mini",
}
WEBHOOK = {
    "event": "webhook_ingested",
    "created_count": 1,
    "duplicates_count": 0,
    "statuses_count": 0,
    "skipped_count": 0,
}
LLM_FALLBACK = {
    "event": "llm_fallback",
    "ref": REF,
    "step": "llm2",
    "reason": "invalid_output",
    "detail": "1 validation error for ReplyDraft: text: String should have at most 700 characters",
    "latency_ms": 390.1,
    "input_tokens": 700,
    "output_tokens": 210,
    "model": "gpt-4o-mini",
}

# (label, message, extra, with the contact's name in scope)
LINES: list[tuple[str, str, dict[str, object], bool]] = [
    ("transition", "transition", TRANSITION, False),
    ("llm1_event_detected", "llm1_event_detected", LLM1, True),
    ("webhook_ingested", "webhook_ingested", WEBHOOK, False),
    ("llm_fallback (free text)", "llm_fallback", LLM_FALLBACK, True),
]

VALUES = [
    ("event name", "transition"),
    ("ref (16 hex)", REF),
    ("state", "queued_outbound"),
    ("model", "gpt-4o-mini"),
    ("free text, no digit", "cliente pediu o status do pedido e agradeceu"),
    ("free text with data", "meu cpf é 123.456.789-09 e o fone +55 (11) 91234-5678"),
]


def best_of(repeat: int, run: Callable[[], None]) -> float:
    """The fastest of `repeat` rounds, in CPU seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("pyloto_corp.application.advance")
    tracer = TracerProvider().get_tracer("bench.log_cost")
    n = args.lines

    print(f"{'line':<28} {'µs/line':>9}")
    total = 0.0
    with tracer.start_as_current_span("step received"):
        for label, message, extra, scoped in LINES:

            def run(message: str = message, extra: dict[str, object] = extra) -> None:
                stream.seek(0)
                stream.truncate()
                for _ in range(n):
                    log.info(message, extra=extra)

            scope: AbstractContextManager[None] = names_in_scope(NAME) if scoped else nullcontext()
            with scope:
                seconds = best_of(args.repeat, run)
            micros = seconds / n * 1e6
            if label in ("transition", "llm1_event_detected", "webhook_ingested"):
                total += micros * {"transition": 6, "llm1_event_detected": 3}.get(label, 1)
            print(f"{label:<28} {micros:>9.2f}")
    print(f"{'a message (6+3+1 lines)':<28} {total:>9.2f}")
    sample = stream.getvalue().splitlines()[0]
    print(f"\nlast line written: {sample}\n")

    print(f"{'detector over':<28} {'find µs':>9} {'redact µs':>10}")
    for label, value in VALUES:

        def find(value: str = value) -> None:
            for _ in range(n):
                find_personal_data(value)

        def redact(value: str = value) -> None:
            for _ in range(n):
                redact_text(value, (NAME,))

        found = best_of(args.repeat, find) / n * 1e6
        redacted = best_of(args.repeat, redact) / n * 1e6
        print(f"{label:<28} {found:>9.2f} {redacted:>10.2f}")
    logging.getLogger().handlers.clear()


if __name__ == "__main__":
    main()
