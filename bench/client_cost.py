"""CPU per call of pyloto's two HTTP clients, the way they were and the way they are.

    .venv/bin/python bench/client_cost.py [--calls 2000] [--concurrency 20] [--smoke]

Starts the fake OpenAI and Graph servers (bench/fakes.py, each in its own process) and, in
this process on uvloop, makes --calls calls of each kind one after another, then the same
number spread over --concurrency callers, reading time.process_time() around each run. So
the numbers are this process's CPU per call (client only: the fakes' CPU is their own).

  llm  old    AsyncOpenAI on its default httpx2 client, `post(cast_to=ChatCompletion)`, then
              `model_validate_json` of the content (pyloto up to the pooled transport)
  llm  new    `OpenAIAssistant._parse`: the SDK on `PooledTransport`, the raw answer decoded
              by msgspec, the content by pydantic
  graph old   httpx.AsyncClient `post(json=...)` and `response.json()` (as GraphOutbox was)
  graph new   `GraphClient.post` with a msgspec-encoded body and a msgspec-decoded answer
  bare POST   the same Graph request written on one asyncio connection and its answer read
              by content-length: the floor of any client

The LLM rows cycle through the three steps' schemas (EventDetection, ReplyDraft,
MessageChoice), so the content decoded is what a message's three calls decode. Also prints
the CPU of pydantic's `model_validate_json` alone per schema, to say what it weighs. Writes
bench/results/client_cost.json. Numbers only, no verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import httpx
import msgspec
import openai
import pydantic
from _common import Processes, machine, table, workspace, write_results
from _services import Fakes, start_fakes
from openai.types.chat import ChatCompletion

from pyloto_corp.adapters.openai_llm import OpenAIAssistant, create_client
from pyloto_corp.adapters.whatsapp_graph import create_client as create_graph_client
from pyloto_corp.ai import prompts
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection, MessageChoice, ReplyDraft
from pyloto_corp.ai.structured import request_fields

BUSINESS = BusinessProfile("Barbearia Navalha", "9h às 19h", "Corte: R$ 50. Barba: R$ 30.", None)
SCHEMAS: list[type[pydantic.BaseModel]] = [EventDetection, ReplyDraft, MessageChoice]
GRAPH_PATH = "/v26.0/106540352242922/messages"
SEND = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "5511999990000",
    "type": "text",
    "text": {"body": "Olá! O corte custa R$ 50 e a barba R$ 30. Quer agendar um horário?"},
    "context": {"message_id": "wamid.BENCH"},
    "biz_opaque_callback_data": "wamid.BENCH",
}

Call = Callable[[int], Awaitable[object]]


def step_messages() -> list[list[dict[str, str]]]:
    """The three steps' prompts for one message."""
    return [
        prompts.detect_event("Quanto custa o corte?", "text"),
        prompts.draft_reply("Quanto custa o corte?", "price", "Preço do corte.", [], BUSINESS),
        prompts.choose_message_type("O corte custa R$ 50.", "price", BUSINESS),
    ]


async def cpu_per_call(call: Call, calls: int, concurrency: int) -> float:
    """CPU milliseconds per call over `calls` calls by `concurrency` callers."""
    for index in range(30):  # warm: connections open, schemas built
        await call(index)

    async def caller(start: int) -> None:
        for index in range(start, calls, concurrency):
            await call(index)

    started = time.process_time()
    await asyncio.gather(*(caller(start) for start in range(concurrency)))
    return (time.process_time() - started) / calls * 1000


async def old_llm(fakes: Fakes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The SDK's own client and response models."""
    client = openai.AsyncOpenAI(
        api_key="sk-bench", base_url=f"{fakes.openai}/v1", timeout=10.0, max_retries=2
    )
    messages = step_messages()

    async def call(index: int) -> object:
        schema = SCHEMAS[index % 3]
        completion = await client.post(
            "/chat/completions",
            cast_to=ChatCompletion,
            body={
                "model": "gpt-4o-mini",
                **request_fields(messages[index % 3], schema, "json_schema"),
                "temperature": 0.2,
            },
        )
        return schema.model_validate_json(completion.choices[0].message.content or "")

    return call, client.close


async def new_llm(fakes: Fakes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """pyloto's adapter, under its span-free request path."""
    client = create_client("sk-bench", f"{fakes.openai}/v1", 10.0, 2)
    assistant = OpenAIAssistant(client, "gpt-4o-mini", 10.0, BUSINESS)
    messages = step_messages()

    async def call(index: int) -> object:
        return await assistant._parse(messages[index % 3], SCHEMAS[index % 3], "gpt-4o-mini")

    return call, assistant.close


async def old_graph(fakes: Fakes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """httpx as GraphOutbox used it."""
    client = httpx.AsyncClient(
        headers={"Authorization": "Bearer EAAG-bench"},
        timeout=httpx.Timeout(10.0, connect=5.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )
    url = f"{fakes.graph}{GRAPH_PATH}"

    async def call(_: int) -> object:
        response = await client.post(url, json=SEND)
        return response.json()["messages"][0]["id"]

    return call, client.aclose


async def new_graph(fakes: Fakes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """GraphOutbox's client, encoding and decoding as GraphOutbox does."""
    client = create_graph_client("EAAG-bench", 10.0)
    url = f"{fakes.graph}{GRAPH_PATH}"
    encode = msgspec.json.Encoder().encode
    decode = msgspec.json.Decoder().decode

    async def call(_: int) -> object:
        answer = await client.post(url, encode(SEND))
        return decode(answer.body)["messages"][0]["id"]

    return call, client.aclose


async def bare_post(fakes: Fakes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """One connection per caller, a prebuilt request, the answer read by its length."""
    body = msgspec.json.encode(SEND)
    request = (
        f"POST {GRAPH_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    lock = asyncio.Lock()

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        task = id(asyncio.current_task())
        if task not in connections:
            async with lock:
                connections[task] = await asyncio.open_connection("127.0.0.1", fakes.graph_port)
        return connections[task]

    async def call(_: int) -> object:
        reader, writer = await connection()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        return await reader.readexactly(length)

    async def close() -> None:
        for _, writer in connections.values():
            writer.close()

    return call, close


CASES: list[tuple[str, str, Callable[[Fakes], Awaitable[tuple[Call, Any]]]]] = [
    ("llm", "old", old_llm),
    ("llm", "new", new_llm),
    ("graph send", "old", old_graph),
    ("graph send", "new", new_graph),
    ("bare POST", "-", bare_post),
]


def validation_cost(calls: int) -> list[list[Any]]:
    """Microseconds of CPU of `model_validate_json` per structured output, per schema."""
    from fakes import SCHEMAS as ANSWERS

    rows = []
    for schema in SCHEMAS:
        content = msgspec.json.encode(ANSWERS[schema.__name__.encode()])
        started = time.process_time()
        for _ in range(calls * 10):
            schema.model_validate_json(content)
        rows.append([schema.__name__, (time.process_time() - started) / (calls * 10) * 1e6])
    return rows


async def measure(fakes: Fakes, calls: int, concurrency: int) -> list[list[Any]]:
    """One row per case: CPU ms per call, sequential and concurrent."""
    rows = []
    for client, path, build in CASES:
        call, close = await build(fakes)
        try:
            sequential = await cpu_per_call(call, calls, 1)
            concurrent = await cpu_per_call(call, calls, concurrency)
        finally:
            await close()
        rows.append([client, path, sequential, concurrent])
        print(f"  {client} {path}: {sequential:.3f} / {concurrent:.3f} ms", flush=True)
    return rows


def main() -> None:
    """Measure and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="100 calls a case (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.calls = 100
    try:
        import uvloop
    except ImportError:
        uvloop = None
    print(f"client_cost: {args.calls} calls a case, sequential and {args.concurrency} callers")
    facts = machine()
    with workspace("client_cost") as workdir, Processes(workdir) as procs:
        fakes = start_fakes(procs)
        coroutine = measure(fakes, args.calls, args.concurrency)
        rows = uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)
    headers = ["client", "path", "CPU ms/call sequential", f"CPU ms/call x{args.concurrency}"]
    print()
    print(table(headers, rows))
    validation = validation_cost(args.calls)
    print()
    print(table(["schema", "model_validate_json CPU µs"], validation))
    path = write_results(
        "client_cost" if not args.smoke else "client_cost-smoke",
        {
            "machine": facts,
            "settings": vars(args),
            "loop": "uvloop" if uvloop is not None else "asyncio",
            "cpu_ms_per_call": [dict(zip(headers, row, strict=True)) for row in rows],
            "model_validate_json_us": dict(validation),
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
