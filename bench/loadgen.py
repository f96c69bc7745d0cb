"""An asyncio HTTP/1.1 keep-alive client on raw sockets (uvloop when installed).

Alone, it is bench/ingest.py's load generator where `wrk` is not installed: it posts signed
single-message webhooks (every message a new wamid, a share of duplicates) over N
connections for a while, pinned to its own core, and prints a JSON summary like
bench/webhook.lua's:

    python bench/loadgen.py --port N [--connections 50] [--duration 10] [--warmup 2]

Imported, `post_all` posts given bodies (for bench/pipeline.py and bench/latency.py) and
returns when each was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import body_template, percentile, pin_self, sign


def request_bytes(port: int, body: bytes, signature: str, path: str = "/webhook") -> bytes:
    """A POST of `body` with its signature, keep-alive."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nX-Hub-Signature-256: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


class Webhooks:
    """New signed webhook requests, with a share of earlier ones posted again."""

    def __init__(self, port: int, tag: str, duplicate_share: float, secret: str) -> None:
        self.port = port
        self.tag = tag
        self.share = duplicate_share
        self.secret = secret
        self.prefix, self.suffix = body_template()
        self.recent: list[bytes] = []
        self.unique = 0
        self.duplicates = 0

    def next(self) -> bytes:
        if self.recent and random.random() < self.share:
            self.duplicates += 1
            return random.choice(self.recent)
        self.unique += 1
        wamid = f"wamid.BENCH{self.tag}{self.unique:010d}".encode()
        body = self.prefix + wamid + self.suffix
        data = request_bytes(self.port, body, sign(body, self.secret))
        if len(self.recent) < 1000:
            self.recent.append(data)
        else:
            self.recent[self.unique % 1000] = data
        return data


async def _worker(
    port: int, make: Callable[[], bytes], until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            data = make()
            started = time.perf_counter()
            writer.write(data)
            status, _ = await read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def run_load(
    port: int, connections: int, seconds: float, webhooks: Webhooks
) -> dict[str, object]:
    """Keep `connections` busy for `seconds`; the summary bench/webhook.lua also writes."""
    latencies: list[float] = []
    errors: list[int] = []
    unique, duplicates = webhooks.unique, webhooks.duplicates
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_worker(port, webhooks.next, until, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "unique": webhooks.unique - unique,
        "duplicates": webhooks.duplicates - duplicates,
        "errors": {"status": len(errors)},
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
            "mean": sum(latencies) / len(latencies) if latencies else float("nan"),
        },
    }


async def post_all(
    port: int,
    requests: Sequence[bytes],
    connections: int,
    rate: float | None = None,
) -> list[tuple[float, int]]:
    """POST each request (bytes from request_bytes) over `connections` keep-alive
    connections, at most `rate` a second if given; (time.time() when sent, status) each."""
    sent: list[tuple[float, int]] = [(0.0, 0)] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)
    start = time.monotonic()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if rate:
                    delay = start + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                at = time.time()
                writer.write(requests[index])
                status, _ = await read_response(reader)
                sent[index] = (at, status)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return sent


def run(coroutine: object) -> object:
    """asyncio.run on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]


async def _main(args: argparse.Namespace) -> dict[str, object]:
    webhooks = Webhooks(args.port, args.tag, args.duplicates, args.secret)
    if args.warmup > 0:
        await run_load(args.port, args.connections, args.warmup, webhooks)
    return await run_load(args.port, args.connections, args.duration, webhooks)


def main() -> None:
    """Warm up, measure, print the summary as JSON."""
    from _common import APP_SECRET, CLIENT_CPU

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duplicates", type=float, default=0.05)
    parser.add_argument("--tag", default="P")
    parser.add_argument("--secret", default=APP_SECRET)
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU)
    args = parser.parse_args()
    pin_self(args.cpu)
    print(json.dumps(run(_main(args))))


if __name__ == "__main__":
    main()
