"""Fast local stand-ins for the benchmarks' peers, one process each (uvloop + httptools):

    python bench/fakes.py openai --port N [--delay 0.3 [--delay-max 1.5]] [--record]
    python bench/fakes.py graph --port N [--delay 0.1 [--delay-max 0.2]]

The OpenAI fake answers the structured outputs EventDetection, ReplyDraft and MessageChoice
(chosen by the request's json_schema name) with canned, valid objects; the Graph fake
accepts every send and read receipt and records, per inbound wamid replied to (the send's
`context.message_id`), the time.time() at which the send arrived. Both answer at once (or
after `--delay`, or after a delay drawn uniformly from [`--delay`, `--delay-max`] with
`--seed`) and parse as little as they can, so they are never the bottleneck of a run.

The Graph fake also logs every send: [recipient, inbound wamid replied to, arrival time,
draft number or null]. With `--record` (bench/bursts.py) the OpenAI fake keeps each
ReplyDraft request's messages and numbers its drafts ("[rascunho N]" at the end of the
text); its MessageChoice answer carries the number of the draft found in its request, so
the send that reaches the Graph fake names the LLM#2 prompt it came from.

Side routes: GET /stats (counts and the process's CPU seconds), GET /sends (inbound wamid →
arrival time, Graph only), GET /log (the sends, Graph only), GET /drafts (the recorded
ReplyDraft prompts, OpenAI only), POST /reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import signal
import time
from typing import Any

import httptools

EVENT = {"event": "price", "confidence": 0.93, "summary": "Cliente quer saber o preço."}
DRAFT = {"text": "Olá! O corte custa R$ 50 e a barba R$ 30. Quer agendar um horário?"}
CHOICE = {
    "type": "buttons",
    "body": "Olá! O corte custa R$ 50 e a barba R$ 30. Quer agendar um horário?",
    "header": None,
    "footer": None,
    "buttons": [
        {"id": "agendar", "title": "Agendar horário"},
        {"id": "duvida", "title": "Tenho outra dúvida"},
    ],
    "list_button_text": None,
    "sections": None,
    "cta_display_text": None,
    "cta_url": None,
}
SCHEMAS = {b"EventDetection": EVENT, b"ReplyDraft": DRAFT, b"MessageChoice": CHOICE}
_SCHEMA_NAME = re.compile(rb'"name"\s*:\s*"(EventDetection|ReplyDraft|MessageChoice)"')
# The draft number --record adds, found again in LLM#3's request and in the Graph send.
_DRAFT_REF = re.compile(rb"\[rascunho (\d+)\]")
INTERNAL = (b"/stats", b"/sends", b"/log", b"/drafts", b"/reset")


def _completion(content: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": json.dumps(content, ensure_ascii=False),
                        "refusal": None,
                    },
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
        },
        ensure_ascii=False,
    ).encode()


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    connection = b"keep-alive" if keep_alive else b"close"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: "
    ).encode()
    return head + connection + b"\r\n\r\n" + body


class Fake:
    """What one fake answers and counts."""

    def __init__(
        self,
        kind: str,
        delay: float,
        delay_max: float | None = None,
        seed: int = 0,
        record: bool = False,
    ) -> None:
        self.kind = kind
        self.delay = delay
        self.delay_max = delay if delay_max is None else max(delay, delay_max)
        self.random = random.Random(seed)
        self.record = record
        self.answers = {name: _completion(value) for name, value in SCHEMAS.items()}
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_kind: dict[str, int] = {}
        self.sends: dict[str, float] = {}
        self.log: list[tuple[str, str, float, int | None]] = []
        self.drafts: list[list[dict[str, Any]]] = []
        self.reads = 0
        self.next_id = 0

    def next_delay(self) -> float:
        """Seconds before the next answer: --delay, or uniform up to --delay-max."""
        if self.delay_max > self.delay:
            return self.random.uniform(self.delay, self.delay_max)
        return self.delay

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "kind": self.kind,
            "requests": self.requests,
            "by_kind": self.by_kind,
            "sends": len(self.sends),
            "reads": self.reads,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }

    def handle(self, method: bytes, path: bytes, body: bytes, arrived: float) -> tuple[int, bytes]:
        if method == b"GET" and path == b"/stats":
            return 200, json.dumps(self.stats()).encode()
        if method == b"GET" and path == b"/sends":
            return 200, json.dumps(self.sends).encode()
        if method == b"GET" and path == b"/log":
            return 200, json.dumps(self.log).encode()
        if method == b"GET" and path == b"/drafts":
            return 200, json.dumps(self.drafts, ensure_ascii=False).encode()
        if method == b"POST" and path == b"/reset":
            self.reset()
            return 200, b"{}"
        self.requests += 1
        if self.kind == "openai":
            return self._openai(body)
        return self._graph(body, arrived)

    def _openai(self, body: bytes) -> tuple[int, bytes]:
        found = _SCHEMA_NAME.search(body)
        if found is None:
            return 400, b'{"error": {"message": "no known json_schema", "type": "bad_request"}}'
        name = found.group(1)
        self.by_kind[name.decode()] = self.by_kind.get(name.decode(), 0) + 1
        if self.record and name == b"ReplyDraft":
            self.drafts.append(json.loads(body).get("messages", []))
            text = f"{DRAFT['text']} [rascunho {len(self.drafts) - 1}]"
            return 200, _completion({"text": text})
        if self.record and name == b"MessageChoice":
            ref = _DRAFT_REF.search(body)
            if ref is not None:
                text = f"{CHOICE['body']} [rascunho {int(ref.group(1))}]"
                return 200, _completion({**CHOICE, "body": text})
        return 200, self.answers[name]

    def _graph(self, body: bytes, arrived: float) -> tuple[int, bytes]:
        request = json.loads(body)
        if request.get("status") == "read":
            self.reads += 1
            return 200, b'{"success": true}'
        replied_to = str((request.get("context") or {}).get("message_id", ""))
        self.sends.setdefault(replied_to, arrived)
        self.next_id += 1
        to = request.get("to", "")
        ref = _DRAFT_REF.search(body)
        self.log.append((str(to), replied_to, arrived, int(ref.group(1)) if ref else None))
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": f"wamid.BENCHGRAPH{self.next_id:012d}"}],
        }
        return 200, json.dumps(answer).encode()


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection (no pipelining)."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.url = b""
        self.body: list[bytes] = []
        self.arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.arrived = time.time()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        status, answer = self.fake.handle(method, path, b"".join(self.body), self.arrived)
        data = _response(status, answer, self.parser.should_keep_alive())
        delay = 0.0 if path in INTERNAL else self.fake.next_delay()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._write, data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def serve(fake: Fake, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(fake), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["openai", "graph"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--delay-max", type=float, default=None, help="draw each delay from [--delay, this]"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the drawn delays")
    parser.add_argument("--record", action="store_true", help="keep and number LLM#2's prompts")
    args = parser.parse_args()
    fake = Fake(args.kind, args.delay, args.delay_max, args.seed, args.record)
    try:
        import uvloop
    except ImportError:  # plain asyncio still answers fast enough for small runs
        asyncio.run(serve(fake, args.port))
    else:
        uvloop.run(serve(fake, args.port))


if __name__ == "__main__":
    main()
