"""pyloto's three LLM steps as plain chained arq jobs, the yardstick of bench/pipeline.py:

    python bench/arq_app.py web --port N       Litestar webhook: check the signature,
                                               enqueue job 1 per message (job id = wamid,
                                               arq's own dedupe)
    python bench/arq_app.py worker --stats F   arq worker: llm1 → llm2 → llm3 + Graph send

Same Redis, same fake OpenAI and Graph servers, the same SDKs (openai's structured outputs
with pyloto's prompts and schemas, httpx for Graph), uvloop and uvicorn as pyloto. What it
does not do, by design: no persisted record or history, no leases, no conversation memory,
no PII masking, no read receipt, no fallback. The worker logs as the `arq` command does
(one line per job start and end) and writes its job counts to F when it stops.

arq needs redis<6 while pyloto needs newer, so bench/pipeline.py runs these processes with
bench/.arq-site (pip install --target) first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging.config
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.logs import default_log_config
from arq.worker import run_worker
from litestar import Litestar, Request, Response, get, post
from openai import AsyncOpenAI
from pydantic import BaseModel

from pyloto_corp.ai import prompts
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection, MessageChoice, ReplyDraft

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import APP_SECRET

BUSINESS = BusinessProfile("nossa empresa", "segunda a sexta, das 9h às 18h", "", None)
MODEL = "gpt-4o-mini"


def redis_settings() -> RedisSettings:
    """The Redis of the run (REDIS_URL)."""
    return RedisSettings.from_dsn(os.environ["REDIS_URL"])


async def startup(ctx: dict[str, Any]) -> None:
    """The SDK clients, built once per worker as pyloto's bootstrap does."""
    ctx["openai"] = AsyncOpenAI(
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.environ["OPENAI_BASE_URL"],
        timeout=10,
        max_retries=1,
    )
    ctx["graph"] = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {os.environ['WHATSAPP_ACCESS_TOKEN']}"},
        timeout=httpx.Timeout(10, connect=5),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )
    base = os.environ["WHATSAPP_API_BASE_URL"].rstrip("/")
    ctx["graph_url"] = f"{base}/v26.0/{os.environ['WHATSAPP_PHONE_NUMBER_ID']}/messages"


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close the clients."""
    await ctx["openai"].close()
    await ctx["graph"].aclose()


async def _ask(ctx: dict[str, Any], messages: list[dict[str, str]], schema: type[BaseModel]) -> Any:
    completion = await ctx["openai"].chat.completions.parse(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        response_format=schema,
    )
    parsed = completion.choices[0].message.parsed
    if parsed is None:
        raise RuntimeError("no structured output")
    return parsed


async def llm1(ctx: dict[str, Any], message: dict[str, str]) -> None:
    """Detect the event, then queue llm2."""
    detection = await _ask(ctx, prompts.detect_event(message["text"], "text"), EventDetection)
    redis: ArqRedis = ctx["redis"]
    await redis.enqueue_job(
        "llm2", message, detection.event, detection.summary, _job_id=f"{message['id']}:2"
    )


async def llm2(ctx: dict[str, Any], message: dict[str, str], event: str, summary: str) -> None:
    """Draft the reply, then queue llm3."""
    asked = prompts.draft_reply(message["text"], event, summary, [], BUSINESS)
    draft = await _ask(ctx, asked, ReplyDraft)
    redis: ArqRedis = ctx["redis"]
    await redis.enqueue_job("llm3", message, event, draft.text, _job_id=f"{message['id']}:3")


async def llm3(ctx: dict[str, Any], message: dict[str, str], event: str, draft: str) -> None:
    """Choose the message type and send it through the Graph API."""
    choice = await _ask(ctx, prompts.choose_message_type(draft, event, BUSINESS), MessageChoice)
    response = await ctx["graph"].post(ctx["graph_url"], json=graph_body(message, choice))
    response.raise_for_status()


def graph_body(message: dict[str, str], choice: MessageChoice) -> dict[str, Any]:
    """The Graph API request: reply buttons when chosen, else text."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message["from"],
        "context": {"message_id": message["id"]},
        "biz_opaque_callback_data": message["id"],
    }
    if choice.type == "buttons" and choice.buttons:
        buttons = [
            {"type": "reply", "reply": {"id": b.id, "title": b.title[:20]}}
            for b in choice.buttons[:3]
        ]
        body["type"] = "interactive"
        body["interactive"] = {
            "type": "button",
            "body": {"text": choice.body[:1024]},
            "action": {"buttons": buttons},
        }
    else:
        body["type"] = "text"
        body["text"] = {"body": choice.body[:4096]}
    return body


class WorkerSettings:
    """The arq worker: 50 jobs at once (pyloto's inbound concurrency) and a 50 ms poll
    (arq's default 500 ms caps it at max_jobs / 0.5 s)."""

    functions = (llm1, llm2, llm3)
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = int(os.environ.get("ARQ_MAX_JOBS", "50"))
    poll_delay = float(os.environ.get("ARQ_POLL_DELAY", "0.05"))


def web_app() -> Any:
    """Litestar: verify X-Hub-Signature-256 over the raw body, enqueue job 1 per message."""
    state: dict[str, Any] = {"webhooks": 0, "enqueued": 0, "duplicates": 0}

    async def connect() -> None:
        state["pool"] = await create_pool(redis_settings())

    async def close() -> None:
        await state["pool"].aclose()

    @post("/webhook", status_code=200)
    async def webhook(request: Request[Any, Any, Any]) -> Response[str]:
        body = await request.body()
        given = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Response("invalid signature", status_code=403)
        state["webhooks"] += 1
        for message in _messages(json.loads(body)):
            job = await state["pool"].enqueue_job("llm1", message, _job_id=message["id"])
            state["enqueued" if job is not None else "duplicates"] += 1
        return Response("ok", status_code=200)

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, int]:
        return {key: value for key, value in state.items() if isinstance(value, int)}

    return Litestar(
        [webhook, stats],
        on_startup=[connect],
        on_shutdown=[close],
        openapi_config=None,
        logging_config=None,
    )


def _messages(payload: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for entry in payload.get("entry", []):
        for change in entry.get("changes", []):
            for message in change.get("value", {}).get("messages", []):
                text = message.get("text", {}).get("body", "")
                found.append({"id": message["id"], "from": message["from"], "text": text})
    return found


def main() -> None:
    """Run the webhook server or the worker."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["web", "worker"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats", type=Path, default=None, help="worker: write counts here")
    args = parser.parse_args()
    import uvloop

    if args.role == "web":
        import uvicorn

        uvicorn.run(
            web_app(),
            host="127.0.0.1",
            port=args.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
        return
    logging.config.dictConfig(default_log_config(verbose=False))  # as the `arq` command
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    WorkerSettings.redis_settings = redis_settings()  # type: ignore[attr-defined]
    worker = run_worker(WorkerSettings)  # type: ignore[arg-type]
    if args.stats is not None:
        counts = {
            "jobs_complete": worker.jobs_complete,
            "jobs_failed": worker.jobs_failed,
            "jobs_retried": worker.jobs_retried,
        }
        args.stats.write_text(json.dumps(counts))


if __name__ == "__main__":
    main()
