"""What the media step adds to a message's latency, against local servers.

    .venv/bin/python bench/media_step.py [--messages 40] [--smoke]

Runs the app in this process with WhatsApp on a local server speaking Graph's media and
messages endpoints and the LLM on `pyloto fake-openai`'s server (both answer at once: the
figures are pyloto's own work plus loopback, not Meta's or OpenAI's), and sends, one at a
time, --messages text messages, voice notes (a real OGG/Opus file) and pictures (a PNG),
interleaved. For each it reads the record's history: the media step's duration (fetch, the
sha256 check and the transcription or description call), and the time from `received` to
`sent`, whose median is compared with text's. Writes bench/results/media_step.json. Numbers
only, no verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from _common import machine, percentile, table, write_results
from litestar.testing import AsyncTestClient
from tests.e2e.support import Pyloto
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph
from tests.support.helpers import (
    APP_SECRET,
    INTERNAL_TOKEN,
    VERIFY_TOKEN,
    envelope,
    new_wamid,
    text_message,
)
from tests.support.media_files import VOICE, png, voice_note_ogg

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import load_settings
from pyloto_corp.devtools.fake_openai import FakeOpenAI
from pyloto_corp.http.app import create_app


def _message(
    kind: str, index: int, graph: FakeGraph, audio: bytes, picture: bytes
) -> dict[str, Any]:
    if kind == "text":
        return text_message("Quanto custa o corte de cabelo?")
    media_id = f"77{index:010d}"
    if kind == "voice":
        graph.add_media(media_id, audio, VOICE)
        body: dict[str, Any] = {"mime_type": VOICE, "id": media_id, "voice": True}
        return {"from": "5511999990000", "id": new_wamid(), "timestamp": str(int(time.time())),
                "type": "audio", "audio": body}  # fmt: skip
    graph.add_media(media_id, picture, "image/png")
    body = {"mime_type": "image/png", "id": media_id, "caption": "Chegou assim"}
    return {"from": "5511999990000", "id": new_wamid(), "timestamp": str(int(time.time())),
            "type": "image", "image": body}  # fmt: skip


async def measure(messages: int, workdir: Path) -> dict[str, dict[str, list[float]]]:
    graph, llm = FakeGraph(), FakeOpenAI()
    graph.start()
    llm.start()
    settings = load_settings(
        {
            "STATE_SQLITE_PATH": str(workdir / "pyloto.db"),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
            "WHATSAPP_ACCESS_TOKEN": TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_API_BASE_URL": graph.base_url,
            "WHATSAPP_PACING_SECONDS": "0",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": llm.base_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    audio, picture = voice_note_ogg(seconds=5.0), png(640, 480)
    found: dict[str, dict[str, list[float]]] = {
        kind: {"media_ms": [], "received_to_sent_ms": []} for kind in ("text", "voice", "image")
    }
    try:
        async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
            app = Pyloto(client)
            for index in range(messages):
                for kind in ("text", "voice", "image"):
                    message = _message(kind, index, graph, audio, picture)
                    assert (await app.post(envelope([message]))).status_code == 200
                    view = await app.wait_for(message["id"], seconds=30)
                    assert view["state"] == "sent", view["fallback_reason"]
                    history = view["history"]
                    media = [h["duration_ms"] for h in history if h["to"] == "media"]
                    if media:
                        found[kind]["media_ms"].append(media[0])
                    total = (history[-1]["at"] - view["created_at"]) * 1000.0
                    found[kind]["received_to_sent_ms"].append(total)
    finally:
        graph.stop()
        llm.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40, help="of each kind")
    parser.add_argument("--smoke", action="store_true", help="3 of each kind")
    args = parser.parse_args()
    if args.smoke:
        args.messages = 3
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    with tempfile.TemporaryDirectory(prefix="pyloto-bench-media-") as directory:
        found = asyncio.run(measure(args.messages, Path(directory)))
    text_p50 = percentile(found["text"]["received_to_sent_ms"], 50)
    rows = []
    for kind in ("text", "voice", "image"):
        total = found[kind]["received_to_sent_ms"]
        step = found[kind]["media_ms"]
        rows.append(
            (
                kind,
                round(percentile(step, 50), 1) if step else "-",
                round(percentile(step, 95), 1) if step else "-",
                round(percentile(total, 50), 1),
                round(percentile(total, 50) - text_p50, 1),
            )
        )
    print(f"{args.messages} messages of each kind, one at a time; local Graph and OpenAI servers")
    print(
        table(["kind", "media step p50 ms", "p95 ms", "received→sent p50 ms", "vs text ms"], rows)
    )
    path = write_results("media_step", {"machine": machine(), "messages": args.messages, **found})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
