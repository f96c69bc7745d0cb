"""py-spy around a benchmark phase: record a process's stacks, then rank the hot spots.

`record` starts `py-spy record --format raw` on a pid (py-spy must be installed: it is in
the `bench` extra); `summarize` turns the collapsed stacks into the functions and the
packages with the largest share of the busy samples (idle waits are not sampled).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from _common import Processes

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_TRIM = (
    re.compile(r".*/site-packages/"),
    re.compile(r".*/src/"),
    re.compile(r".*/bench/"),
    re.compile(r".*/lib/python3\.\d+/"),
)
# Leaves where a thread only waits: py-spy does not always see these threads as idle.
_IDLE = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread.join (threading.py)",
        "_wait_for_tstate_lock (threading.py)",
        "select (selectors.py)",
        "EpollSelector.select (selectors.py)",
        "BaseSelector.select (selectors.py)",
    }
)
# Where the time goes, in the terms a fix would use: a sample counts for each category one
# of its frames' file paths falls in (so they overlap: OpenTelemetry inside logging, …).
CATEGORIES = {
    "OpenTelemetry (spans, metrics)": ("/opentelemetry/",),
    "logging (stdlib + pyloto's JSON and redaction)": (
        "/logging/__init__.py",
        "observability/logging.py",
    ),
    "PII redaction (domain/privacy.py)": ("domain/privacy.py",),
    "redis-py client": ("site-packages/redis/",),
    "openai SDK (request building, parsing)": ("site-packages/openai/",),
    "openai's HTTP stack (httpx2, httpcore2, anyio)": (
        "site-packages/httpx2/",
        "site-packages/httpcore2/",
        "site-packages/anyio/",
    ),
    "httpx + httpcore (Graph API client)": ("site-packages/httpx/", "site-packages/httpcore/"),
    "pydantic": ("site-packages/pydantic",),
    "transitions (the state machine)": ("site-packages/transitions/",),
    "litestar": ("site-packages/litestar/",),
    "uvicorn": ("site-packages/uvicorn/",),
    "asyncio (and uvloop's loop)": ("/asyncio/",),
    "webhook parsing (adapters/whatsapp_webhook.py)": ("adapters/whatsapp_webhook.py",),
    "JSON (msgspec, json)": ("site-packages/msgspec", "/json/"),
}
# Packages shown with their sub-package, where that tells more than the name.
_DEEPER = frozenset({"pyloto_corp", "opentelemetry", "litestar"})


def available() -> bool:
    """Whether py-spy is on PATH (or next to this interpreter)."""
    return py_spy() is not None


def py_spy() -> str | None:
    """The py-spy binary: beside the interpreter (a virtualenv's bin), else on PATH."""
    import sys

    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def record(
    procs: Processes, name: str, pid: int, seconds: float | None, out: Path, rate: int = 250
) -> subprocess.Popen[bytes]:
    """Sample `pid` into `out` (collapsed stacks, one per line) for `seconds`, or until
    `finish`."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    command = [
        binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
        "--output", str(out), "--full-filenames",
    ]  # fmt: skip
    if seconds is not None:
        command += ["--duration", str(max(1, round(seconds)))]
    return procs.start(name, command)


def finish(procs: Processes, spy: subprocess.Popen[bytes]) -> None:
    """Stop an open-ended recording: py-spy writes its output on SIGINT."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(timeout=60)
    procs.stop(spy)


def _frame(text: str) -> tuple[str, str]:
    """(function with its short file, package) of one py-spy frame."""
    found = _FRAME.match(text.strip())
    if not found:
        return text.strip(), "?"
    path = found.group("file")
    for pattern in _TRIM:
        trimmed = pattern.sub("", path, count=1)
        if trimmed != path:
            path = trimmed
            break
    parts = path.split("/")
    package = parts[0].removesuffix(".py")
    if package in _DEEPER and len(parts) > 2:
        package = f"{package}.{parts[1].removesuffix('.py')}"
    return f"{found.group('func')} ({path})", package


def _stacks(raw: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """(raw stack, its frames, samples) of every busy stack py-spy wrote."""
    found = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame(part) for part in stack.split(";") if part and "(" in part]
        if frames and frames[-1][0] not in _IDLE:
            found.append((stack, frames, int(count_text)))
    return found


def _categories(stack: str) -> tuple[set[str], set[str]]:
    """The categories a stack is in, and those its sampled (innermost) frame is in."""
    leaf = stack.rsplit(";", 1)[-1]
    anywhere = {name for name, parts in CATEGORIES.items() if any(p in stack for p in parts)}
    own = {name for name in anywhere if any(p in leaf for p in CATEGORIES[name])}
    return anywhere, own


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """The busiest functions (self share), pyloto's functions (inclusive share), the
    packages and the categories (inclusive: counted once in a sample they appear in; and
    self: the sampled frame itself)."""
    if not raw.is_file():
        return {"samples": 0, "error": f"{raw} was not written"}
    counters: dict[str, Counter[str]] = {
        key: Counter() for key in ("self", "inclusive", "packages", "categories", "categories_self")
    }
    total = 0
    for stack, frames, count in _stacks(raw):
        total += count
        counters["self"][frames[-1][0]] += count
        # pyloto's own functions only: the rest of a stack is plumbing every sample shares.
        for name in {name for name, package in frames if package.startswith("pyloto_corp")}:
            counters["inclusive"][name] += count
        for package in {package for _, package in frames}:
            counters["packages"][package] += count
        anywhere, own = _categories(stack)
        for name in anywhere:
            counters["categories"][name] += count
        for name in own:
            counters["categories_self"][name] += count
    summary: dict[str, Any] = {"samples": total}
    for key, counter in counters.items():
        summary[key] = [
            {"name": name, "share": round(n / max(1, total), 4)}
            for name, n in counter.most_common(top)
        ]
    return summary


def describe(summary: dict[str, Any], lines: int = 12) -> str:
    """A short text rendering of `summarize`'s result."""
    if not summary.get("samples"):
        return f"  (no samples: {summary.get('error', 'nothing recorded')})"
    out = [f"  {summary['samples']} busy samples"]
    for title, key in (
        ("self", "self"),
        ("pyloto_corp inclusive", "inclusive"),
        ("category inclusive", "categories"),
        ("category self", "categories_self"),
    ):
        out.append(f"  top {title}:")
        out += [
            f"    {item['share'] * 100:5.1f} %  {item['name']}" for item in summary[key][:lines]
        ]
    return "\n".join(out)
