"""The `pyloto` command: serve, simulate, inspect, replay, queues, llm check, statecharts,
config docs, docs architecture, pii-scan, fake-openai."""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from pyloto_corp import __version__, cli_users
from pyloto_corp.adapters.secret_manager import resolve_references
from pyloto_corp.application.ingest import sign, verify_signature
from pyloto_corp.application.inspect import record_view
from pyloto_corp.application.ports import QueueUnavailable, StoreUnavailable
from pyloto_corp.config import ConfigError, Settings, development_warnings, load_settings
from pyloto_corp.devtools.fake_openai import PROFILES
from pyloto_corp.domain.statechart import StatechartError

if TYPE_CHECKING:
    from pyloto_corp.bootstrap import Container

TERMINAL = ("sent", "failed", "ignored", "with_agent", "merged")
DEFAULT_SENDER = "5511999990000"
DEFAULT_NAME = "Cliente Teste"


def text_webhook(text: str, sender: str, name: str, message_id: str | None = None) -> bytes:
    """A realistic single text-message webhook body, as Meta sends it (non-ASCII kept)."""
    return message_webhook({"type": "text", "text": {"body": text}}, sender, name, message_id)


# The MIME type Meta gives a customer's media, by file extension.
MEDIA_TYPES = {
    ".ogg": "audio/ogg; codecs=opus",
    ".opus": "audio/ogg; codecs=opus",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".amr": "audio/amr",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def media_webhook(
    kind: str, media_id: str, mime_type: str, data: bytes, caption: str, sender: str, name: str
) -> bytes:
    """A voice note (`audio`, recorded in WhatsApp) or picture (`image`, with its caption)
    message whose media id names a file of the local media folder."""
    media: dict[str, Any] = {
        "id": media_id,
        "mime_type": mime_type,
        "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
    }
    if kind == "audio":
        media["voice"] = True
    elif caption:
        media["caption"] = caption
    return message_webhook({"type": kind, kind: media}, sender, name)


def message_webhook(
    content: dict[str, Any], sender: str, name: str, message_id: str | None = None
) -> bytes:
    """A single-message webhook body, as Meta sends it, with `content` (the message's
    `type` and its object)."""
    message_id = message_id or f"wamid.SIM{uuid.uuid4().hex.upper()}"
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
                            # No business number: the server answers from its default
                            # one (WHATSAPP_PHONE_NUMBER_ID), whichever that is.
                            "metadata": {"display_phone_number": "", "phone_number_id": ""},
                            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": message_id,
                                    "timestamp": str(int(time.time())),
                                    **content,
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=False).encode()


def _message_id(body: bytes) -> str:
    value: str = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    return value


def _print_result(view: dict[str, Any]) -> None:
    states = [view["history"][0]["from"]] if view["history"] else [view["state"]]
    states += [step["to"] for step in view["history"]]
    print(f"message {view['message_id']}")
    print(" → ".join(states))
    results = view.get("results") or {}
    if results.get("media_text"):
        print(f"{results.get('media_kind')} (masked): {results['media_text']}")
    if view.get("fallback_reason"):
        print(f"fallback reason: {view['fallback_reason']}")
    if view.get("failure_reason"):
        print(f"failure reason: {view['failure_reason']}")
    reply = view.get("reply")
    if reply:
        print(_describe_reply(reply))


def _describe_reply(reply: dict[str, Any]) -> str:
    """A reply as a person reads it: its type, its text, and the options it offers."""
    if reply.get("type") == "text":
        return f"reply (text): {reply.get('text', {}).get('body', '')}"
    interactive = reply.get("interactive", {})
    text = interactive.get("body", {}).get("text", "")
    lines = [f"reply (interactive {interactive.get('type')}): {text}"]
    action = interactive.get("action", {})
    for button in action.get("buttons", []):
        lines.append(f"  [{button.get('reply', {}).get('title')}]")
    for section in action.get("sections", []):
        for row in section.get("rows", []):
            lines.append(f"  • {row.get('title')}")
    if action.get("name") == "cta_url":
        parameters = action.get("parameters", {})
        lines.append(f"  [{parameters.get('display_text')}] → {parameters.get('url')}")
    return "\n".join(lines)


async def _simulate_http(
    settings: Settings, args: argparse.Namespace, media: _MediaFile | None
) -> int:
    base = args.url.rstrip("/").removesuffix("/webhook")
    token = {"X-Internal-Token": settings.internal_task_token}
    async with httpx.AsyncClient(timeout=10) as client:
        body = await _prepared_body(client, base, token, args, media)
        if body is None:
            return 1
        message_id = _message_id(body)
        headers = {"X-Hub-Signature-256": sign(body, settings.app_secret)}
        headers["Content-Type"] = "application/json"
        try:
            response = await client.post(f"{base}/webhook", content=body, headers=headers)
        except httpx.HTTPError as error:
            print(f"pyloto: cannot reach {base}: {error}", file=sys.stderr)
            return 1
        if response.status_code != 200:
            print(
                f"pyloto: webhook answered {response.status_code}: {response.text}", file=sys.stderr
            )
            if response.status_code == 403:
                print(_SIGNATURE_HINT[bool(settings.whatsapp.app_secret)], file=sys.stderr)
            return 1
        deadline = time.monotonic() + args.timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            got = await client.get(message_url(base, message_id), headers=token)
            if got.status_code == 200:
                view = got.json()
                if view["state"] in TERMINAL:
                    break
            await asyncio.sleep(0.1)
    return _finish(view, message_id, args.fail_send)


async def _prepared_body(
    client: httpx.AsyncClient,
    base: str,
    token: dict[str, str],
    args: argparse.Namespace,
    media: _MediaFile | None,
) -> bytes | None:
    """The webhook to post, its media given to the server and, with --fail-send, the
    refusal of its reply asked for (None, with the reason on stderr, when refused)."""
    if media is None:
        body = text_webhook(args.text, args.sender, args.name)
    else:
        # The server keeps the file in its own media folder: it may run in another working
        # directory, or on another machine, than this command.
        upload = {**token, "Content-Type": media.mime_type}
        answer = await _ask_server(client, base, "media", media.data, upload)
        if answer is None:
            return None
        body = _media_body(args, media, str(answer["media_id"]))
    if args.fail_send:
        refusal = json.dumps({"message_id": _message_id(body)}).encode()
        headers = {**token, "Content-Type": "application/json"}
        if await _ask_server(client, base, "refuse-send", refusal, headers) is None:
            return None
    return body


_LOCAL_REFUSED = {
    "media": "pyloto: the server cannot take the file",
    "refuse-send": "pyloto: the server cannot refuse the send (--fail-send)",
}


async def _ask_server(
    client: httpx.AsyncClient, base: str, what: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any] | None:
    """POST to the server's /internal/local/`what`: its JSON answer, or None with the reason
    on stderr (unreachable, refused, or a server without the route)."""
    try:
        response = await client.post(f"{base}/internal/local/{what}", content=body, headers=headers)
    except httpx.HTTPError as error:
        print(f"pyloto: cannot reach {base}: {error}", file=sys.stderr)
        return None
    if response.status_code == 200:
        answer: dict[str, Any] = response.json()
        return answer
    if response.status_code == 404:
        reason = "it has no /internal/local routes (a pyloto older than this command?)"
    elif response.status_code in (401, 403):
        reason = (
            "its INTERNAL_TASK_TOKEN is not this one: set the server's value and add "
            "--secret-from-env"
        )
    elif response.status_code == 413:
        reason = "the file is larger than the media step reads (16 MB for a voice note)"
    else:
        try:
            reason = str(response.json()["detail"])
        except (ValueError, KeyError, TypeError):
            reason = f"it answered {response.status_code}"
    print(f"{_LOCAL_REFUSED[what]}: {reason}", file=sys.stderr)
    return None


_SIGNATURE_HINT = {
    False: "pyloto: this was signed with the development app secret: set WHATSAPP_APP_SECRET "
    "to the server's secret (an sm:// reference works) and add --secret-from-env",
    True: "pyloto: the server's app secret is not this WHATSAPP_APP_SECRET: set the server's "
    "value (or its sm:// reference)",
}


def _finish(view: dict[str, Any], message_id: str, fail_send: bool = False) -> int:
    if not view:
        print(f"pyloto: message {message_id} was not found", file=sys.stderr)
        return 1
    _print_result(view)
    if view["state"] not in TERMINAL:
        print(f"pyloto: still in '{view['state']}' after the timeout", file=sys.stderr)
        return 1
    if view["state"] == "with_agent":
        print("held for a person: the conversation waits for or is owned by an agent (/ops/inbox)")
    if fail_send:
        if view["state"] != "failed":
            print(f"pyloto: --fail-send, but the record ended '{view['state']}'", file=sys.stderr)
            return 1
        print(
            "dead-lettered as asked: replay it from /ops/dead-letters or with "
            f"`pyloto replay {message_id}`"
        )
        return 0
    return 0 if view["state"] != "failed" else 1


async def _simulate_in_process(settings: Settings, args: argparse.Namespace, body: bytes) -> int:
    from pyloto_corp.bootstrap import bootstrap
    from pyloto_corp.observability.logging import configure_logging

    # The trajectory goes to stdout; the service's own log lines, if any, to stderr, for
    # this run only (the caller's logging is put back afterwards).
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("WARNING", stream=sys.stderr)
    container = bootstrap(settings)
    try:
        return await _run_in_process(container, settings, args, body)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def _run_in_process(
    container: Container, settings: Settings, args: argparse.Namespace, body: bytes
) -> int:
    from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox, RedisDryRunOutbox
    from pyloto_corp.adapters.whatsapp_webhook import parse_webhook

    await container.start()
    try:
        message_id = _message_id(body)
        if args.fail_send:
            outbox = container.outbox
            assert isinstance(outbox, DryRunOutbox | RedisDryRunOutbox)  # checked before
            outbox.refusals.refuse(message_id)
        verify_signature(body, sign(body, settings.app_secret), settings.app_secret)
        await container.ingestor.ingest(parse_webhook(body))
        deadline = time.monotonic() + args.timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = await container.store.get(message_id)
            if record is not None:
                view = record_view(record)
                if record.state in TERMINAL:
                    break
            await asyncio.sleep(0.02)
    finally:
        await container.stop()
    return _finish(view, message_id, args.fail_send)


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    if args.secret_from_env:
        missing = [
            name
            for name, value in (
                ("WHATSAPP_APP_SECRET", settings.whatsapp.app_secret),
                ("INTERNAL_TASK_TOKEN", settings.queue.internal_task_token),
            )
            if not value
        ]
        if missing:
            # A deployed service never has the development values: signing with them would
            # only produce a confusing 403.
            print(f"pyloto: --secret-from-env needs {' and '.join(missing)}", file=sys.stderr)
            return 2
    if not (args.voice or args.image or args.text):
        print("pyloto: give the message's text, or --voice FILE or --image FILE", file=sys.stderr)
        return 2
    media = _media_file(args) if args.voice or args.image else None
    if (args.voice or args.image) and media is None:
        return 2
    if not args.in_process:
        args.url = args.url or f"http://127.0.0.1:{settings.app.port}"
        return asyncio.run(_simulate_http(settings, args, media))
    if settings.whatsapp.sends and (media is not None or args.fail_send):
        print(
            "pyloto: with WHATSAPP_ACCESS_TOKEN set, media is fetched from and replies sent to "
            "the Graph API: --voice, --image and --fail-send only work without it",
            file=sys.stderr,
        )
        return 2
    if media is None:
        body = text_webhook(args.text, args.sender, args.name)
    else:
        from pyloto_corp.adapters.local_media import store_local_media

        folder = settings.whatsapp.local_media_dir
        body = _media_body(args, media, store_local_media(folder, media.data, media.mime_type))
    if _sqlite_in_use(settings):
        print(
            f"pyloto: {settings.state.sqlite_path} is in use by a running `pyloto serve`: "
            "drop --in-process to send the message to that server, or set STATE_SQLITE_PATH "
            "to another file",
            file=sys.stderr,
        )
        return 1
    try:
        return asyncio.run(_simulate_in_process(settings, args, body))
    except (StoreUnavailable, QueueUnavailable) as error:
        print(f"pyloto: cannot run the message here: {error}", file=sys.stderr)
        return 1


@dataclass(frozen=True)
class _MediaFile:
    """A voice note or picture read from a local file, for `simulate --voice/--image`."""

    kind: str
    mime_type: str
    data: bytes


def _media_file(args: argparse.Namespace) -> _MediaFile | None:
    """The file of --voice or --image (None, with the reason on stderr, when it cannot be
    sent: an unknown type, or unreadable)."""
    path = Path(args.voice or args.image)
    kind = "audio" if args.voice else "image"
    mime_type = MEDIA_TYPES.get(path.suffix.lower())
    if mime_type is None or not mime_type.startswith("audio/" if args.voice else "image/"):
        known = sorted(k for k, v in MEDIA_TYPES.items() if v.startswith(kind[:5]))
        print(f"pyloto: {path.name}: use a file ending in {', '.join(known)}", file=sys.stderr)
        return None
    try:
        data = path.read_bytes()
    except OSError as error:
        print(f"pyloto: cannot read {path}: {error.strerror}", file=sys.stderr)
        return None
    return _MediaFile(kind, mime_type, data)


def _media_body(args: argparse.Namespace, media: _MediaFile, media_id: str) -> bytes:
    """The webhook of a voice note or picture stored as `media_id`."""
    return media_webhook(
        media.kind, media_id, media.mime_type, media.data, args.text or "", args.sender, args.name
    )


def _sqlite_in_use(settings: Settings) -> bool:
    """Whether the configured SQLite file is held by another process (a running server)."""
    from pyloto_corp.adapters.sqlite import in_use

    return settings.state.effective_backend == "sqlite" and in_use(settings.state.sqlite_path)


async def _inspect_local(settings: Settings, message_id: str) -> dict[str, Any] | None:
    from pyloto_corp.bootstrap import reading_store

    store = reading_store(settings)
    if store is None:
        return None
    try:
        record = await store.get(message_id)
    finally:
        await store.close()
    return record_view(record) if record else None


def _cmd_inspect(settings: Settings, args: argparse.Namespace) -> int:
    if args.url:
        base = args.url.rstrip("/")
        headers = {"X-Internal-Token": settings.internal_task_token}
        try:
            response = httpx.get(message_url(base, args.message_id), headers=headers)
        except httpx.HTTPError as error:
            print(f"pyloto: cannot reach {base}: {error}", file=sys.stderr)
            return 1
        if response.status_code != 200:
            print(f"pyloto: {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        view: dict[str, Any] | None = response.json()
    else:
        try:
            view = asyncio.run(_inspect_local(settings, args.message_id))
        except StoreUnavailable as error:
            print(f"pyloto: cannot read the state store: {error}", file=sys.stderr)
            return 1
    if view is None:
        print(f"pyloto: no record for {args.message_id}", file=sys.stderr)
        return 1
    print(json.dumps(view, ensure_ascii=False, indent=2))
    return 0


def message_url(base: str, message_id: str) -> str:
    """GET /internal/messages/{id} on `base`, the id percent-encoded (`/` and `+` included)."""
    return f"{base}/internal/messages/{quote(message_id, safe='')}"


def since_bound(value: str, now: float | None = None) -> float:
    """`--since`: an ISO 8601 instant (`2026-11-25T00:00:00Z`) or seconds ago (`3600`), as
    unix seconds."""
    try:
        return (time.time() if now is None else now) - float(value)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is neither an ISO 8601 time nor a number of seconds"
        ) from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"'{value}' needs a time zone (e.g. Z)")
    return instant.timestamp()


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    base = (args.url or f"http://127.0.0.1:{settings.app.port}").rstrip("/")
    if args.failed:
        body: dict[str, Any] = {"failed": True, "since": args.since}
    else:
        body = {"message_id": args.message_id}
        if args.confirm_unknown:
            body["confirm_unknown"] = True
    headers = {"X-Internal-Token": settings.internal_task_token}
    try:
        response = httpx.post(f"{base}/internal/replay", json=body, headers=headers, timeout=60)
    except httpx.HTTPError as error:
        print(f"pyloto: cannot reach {base}: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"pyloto: {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    summary = response.json()
    replayed: list[str] = summary["replayed"]
    skipped: dict[str, str] = summary["skipped"]
    print(f"replayed {len(replayed)}, skipped {len(skipped)}")
    for message_id in replayed:
        print(f"replayed {message_id}")
    for message_id, reason in skipped.items():
        print(f"skipped {message_id}: {reason}")
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything starts, so a port in use is one
    line, not uvicorn's error after a full start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartRefused(
                f"port {port} on {host} is already in use (another `pyloto serve`?): stop "
                "that server, or choose another port with --port or PORT"
            ) from None
        raise StartRefused(
            f"cannot listen on {host}:{port}: {error.strerror}; check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


class StartRefused(Exception):
    """`pyloto serve` cannot start; the message says what to change."""


def _check_store_free(settings: Settings) -> None:
    if _sqlite_in_use(settings):
        raise StartRefused(
            f"{settings.state.sqlite_path} is in use by another `pyloto serve`: stop it, or "
            "give this server its own file with STATE_SQLITE_PATH (several servers share state "
            "on Redis: STATE_BACKEND=redis)"
        )


def _warn_graph_version(settings: Settings) -> None:
    """One WARNING line when the configured Graph API version is near or past its end."""
    from pyloto_corp.adapters.graph_versions import version_warning

    warning = version_warning(settings.whatsapp.api_version, datetime.now(UTC).date())
    if warning is not None:
        logging.getLogger("pyloto_corp").warning(warning, extra={"event": "graph_version_ending"})


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM (runtime.serve). One that arrives before serving (while
    the store is checked, say on a Redis slow to answer) stops it too, in one line and with
    exit code 0: nothing has been acknowledged yet."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _serve(settings, args)
    except KeyboardInterrupt:
        print("pyloto: stopped before serving", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from pyloto_corp.bootstrap import bootstrap, persistence_refusal
    from pyloto_corp.http.app import create_app
    from pyloto_corp.http.read_deadline import read_deadline_protocol
    from pyloto_corp.observability.logging import configure_logging
    from pyloto_corp.runtime import freeze_startup_heap, serve

    try:
        _check_store_free(settings)
        refusal = asyncio.run(persistence_refusal(settings))
        if refusal is not None:
            raise StartRefused(refusal)
        sock = _listen(args.host, args.port or settings.app.port)
    except StartRefused as error:
        print(f"pyloto: {error}", file=sys.stderr)
        return 1
    configure_logging(settings.app.log_level, project=settings.queue.gcp_project)
    for warning in development_warnings(settings):
        logging.getLogger("pyloto_corp").warning(warning, extra={"event": "development_default"})
    _warn_graph_version(settings)
    container = bootstrap(settings)
    closed = container.telemetry.metrics.slow_clients_closed
    config = uvicorn.Config(
        create_app(container),
        http=read_deadline_protocol(settings.app.request_read_timeout_seconds, closed),
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    freeze_startup_heap()
    with sock:
        return serve(config, sock, settings.app.ops_console_enabled)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyloto", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pyloto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=None, help="port (default: $PORT or 8000)")

    simulate = commands.add_parser(
        "simulate", help="post a signed text, voice note or picture webhook and follow it"
    )
    simulate.add_argument(
        "text", nargs="?", default="", help="the customer's message (with --image: its caption)"
    )
    media = simulate.add_mutually_exclusive_group()
    media.add_argument(
        "--voice", metavar="FILE", help="send a voice note (.ogg, .opus, .mp3, .m4a)"
    )
    media.add_argument("--image", metavar="FILE", help="send a picture (.png, .jpg, .webp)")
    simulate.add_argument("--from", dest="sender", default=DEFAULT_SENDER, help="sender wa_id")
    simulate.add_argument("--name", default=DEFAULT_NAME, help="sender's profile name")
    simulate.add_argument("--url", default=None, help="server URL (default: local, $PORT)")
    simulate.add_argument("--in-process", action="store_true", help="no server: run it here")
    simulate.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    simulate.add_argument(
        "--fail-send",
        action="store_true",
        help="a dry-run server refuses this message's reply once, so it ends in 'failed' (a "
        "dead letter to try replay on)",
    )
    simulate.add_argument(
        "--secret-from-env",
        action="store_true",
        help="sign with WHATSAPP_APP_SECRET and poll with INTERNAL_TASK_TOKEN from the "
        "environment (sm:// references allowed); never the development values",
    )

    inspect = commands.add_parser("inspect", help="print a record as JSON (masked)")
    inspect.add_argument("message_id")
    inspect.add_argument("--url", default=None, help="ask a running server instead of the store")

    replay = commands.add_parser(
        "replay", help="re-drive dead-lettered records through the outbound step"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("message_id", nargs="?", help="the record to replay")
    which.add_argument("--failed", action="store_true", help="every failed record")
    replay.add_argument(
        "--since",
        type=since_bound,
        default=None,
        help="with --failed: failed at or after this ISO 8601 time, or this many seconds ago",
    )
    replay.add_argument(
        "--confirm-unknown",
        action="store_true",
        help="with MESSAGE_ID: replay it even though its send's outcome is unknown (the "
        "reply may already have reached the customer)",
    )
    replay.add_argument("--url", default=None, help="server URL (default: local, $PORT)")

    cli_users.add_parser(commands)

    queues = commands.add_parser("queues", help="manage the Cloud Tasks queues")
    queue_commands = queues.add_subparsers(dest="queue_command", required=True)
    ensure = queue_commands.add_parser(
        "ensure", help="create or update both queues with the deploy guide's settings"
    )
    ensure.add_argument("--dry-run", action="store_true", help="print what would change only")

    llm = commands.add_parser("llm", help="the configured LLM provider")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True)
    llm_commands.add_parser(
        "check",
        help="ask each LLM step once; one line per step; exit 1 unless every step works",
    )

    fake_openai = commands.add_parser(
        "fake-openai",
        help="serve canned LLM answers on an OpenAI-compatible API, for a demo without a key",
    )
    fake_openai.add_argument("--port", type=int, default=8999, help="port (default: 8999)")
    fake_openai.add_argument("--delay", type=float, default=0.0, help="seconds before answers")
    fake_openai.add_argument(
        "--profile",
        choices=PROFILES,
        default="openai",
        help="behave as this provider does (llamacpp, gpt5, prose); default openai",
    )

    pii_scan = commands.add_parser(
        "pii-scan", help="report personal data in log lines or exported spans (masked)"
    )
    pii_scan.add_argument("file", nargs="?", default="-", help="log file (default: - for stdin)")

    statecharts = commands.add_parser("statecharts", help="the diagrams in docs/statecharts")
    chart_commands = statecharts.add_subparsers(dest="statecharts_command", required=True)
    for name, text in (
        ("render", "write <out>/<name>.md for each chart (and <name>.svg if Graphviz is here)"),
        ("check", "exit 1 with a diff if a page in <out> is missing or out of date"),
    ):
        chart_command = chart_commands.add_parser(name, help=text)
        chart_command.add_argument(
            "--dir", type=Path, default=None, help="charts (default: ./statecharts, else shipped)"
        )
        chart_command.add_argument(
            "--out", type=Path, default=Path("docs/statecharts"), help="pages (docs/statecharts)"
        )
    _config_parser(commands)
    _docs_parser(commands)
    return parser


def _config_parser(commands: Any) -> None:
    """`pyloto config docs [--check] [--out FILE]`: the generated configuration reference."""
    config = commands.add_parser(
        "config", help="the configuration reference, docs/configuration.md"
    )
    config_commands = config.add_subparsers(dest="config_command", required=True)
    docs = config_commands.add_parser(
        "docs", help="write every variable's type, default and description to <out>"
    )
    docs.add_argument(
        "--out", type=Path, default=None, help="the page (default: docs/configuration.md)"
    )
    docs.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if <out> is missing or out of date",
    )


def _docs_parser(commands: Any) -> None:
    """`pyloto docs architecture [--check]`: the generated parts of the architecture page."""
    docs = commands.add_parser("docs", help="the generated parts of docs/ and the README")
    docs_commands = docs.add_subparsers(dest="docs_command", required=True)
    architecture = docs_commands.add_parser(
        "architecture",
        help="write each state's step (docs/architecture.md) and the README's state diagram",
    )
    architecture.add_argument(
        "--page", type=Path, default=None, help="the page (default: docs/architecture.md)"
    )
    architecture.add_argument(
        "--readme", type=Path, default=None, help="the README (default: README.md)"
    )
    architecture.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if a generated part is out of date",
    )


def _cmd_docs(args: argparse.Namespace) -> int:
    """Fill the generated parts, or with --check exit 1 while one is stale."""
    from pyloto_corp.application.steps import STEPS
    from pyloto_corp.architecture_docs import (
        DEFAULT_PAGE,
        DEFAULT_README,
        RENDER_COMMAND,
        MissingMarkers,
        diagram_block,
        fill,
        step_rows,
        steps_table,
    )
    from pyloto_corp.bootstrap import STATECHART_FILE, load_chart
    from pyloto_corp.domain.statechart_docs import stale_diff

    local = Path("statecharts") / STATECHART_FILE
    chart = load_chart(local if local.is_file() else None)
    page: Path = args.page or DEFAULT_PAGE
    readme: Path = args.readme or DEFAULT_README
    parts = (
        (page, "steps", steps_table(step_rows(chart, STEPS))),
        (readme, "diagram", diagram_block(chart)),
    )
    pages = []  # every page is read and filled before any is written
    for path, part, generated in parts:
        if not path.is_file():
            print(f"pyloto: {path}: no such file", file=sys.stderr)
            return 2
        committed = path.read_bytes().decode(errors="replace")
        try:
            pages.append((path, committed, fill(committed, part, generated, str(path))))
        except MissingMarkers as error:
            print(f"pyloto: {error}", file=sys.stderr)
            return 2
    stale = [(path, old, new) for path, old, new in pages if old != new]
    for path, committed, rendered in stale:
        if args.check:
            sys.stdout.write(stale_diff(rendered, committed, str(path)))
        else:
            path.write_bytes(rendered.encode())
            print(f"wrote {path}")
    if stale and args.check:
        names = ", ".join(str(path) for path, _, _ in stale)
        print(f"pyloto: {names} out of date: run `{RENDER_COMMAND}`", file=sys.stderr)
        return 1
    if args.check:
        print(f"generated docs up to date ({page}, {readme})")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    """Write the configuration reference, or with --check exit 1 while it is stale."""
    from pyloto_corp.config_docs import (
        DEFAULT_PAGE,
        RENDER_COMMAND,
        UndocumentedSetting,
        drifted_variables,
        render_markdown,
        stale_diff,
    )

    page: Path = args.out or DEFAULT_PAGE
    try:
        markdown = render_markdown(Settings)
    except UndocumentedSetting as error:
        print(f"pyloto: {error}", file=sys.stderr)
        return 2
    if not args.check:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_bytes(markdown.encode())
        print(f"wrote {page}")
        return 0
    committed = page.read_bytes().decode(errors="replace") if page.is_file() else None
    diff = stale_diff(markdown, committed, str(page))
    if diff:
        sys.stdout.write(diff)
        print(
            f"pyloto: {page} is out of date ({', '.join(drifted_variables(diff)) or 'its text'}): "
            f"run `{RENDER_COMMAND}`",
            file=sys.stderr,
        )
        return 1
    print(f"configuration reference up to date ({page})")
    return 0


async def _ensure_queues(settings: Settings, dry_run: bool) -> list[str]:
    from pyloto_corp.adapters.cloud_tasks import create_client, ensure_queues
    from pyloto_corp.application.queues import INBOUND, OUTBOUND

    queue = settings.queue
    if not queue.gcp_project:
        raise ConfigError("pyloto queues ensure needs GCP_PROJECT (and GCP_LOCATION)")
    client = create_client(queue.cloud_tasks_emulator_host)
    try:
        parent = client.common_location_path(queue.gcp_project, queue.gcp_location)
        wanted = {
            client.queue_path(queue.gcp_project, queue.gcp_location, name): spec
            for name, spec in (
                (queue.inbound_queue_name, INBOUND),
                (queue.outbound_queue_name, OUTBOUND),
            )
        }
        return await ensure_queues(client, parent, wanted, dry_run)
    finally:
        await client.transport.close()  # type: ignore[no-untyped-call]


def _cmd_queues(settings: Settings, args: argparse.Namespace) -> int:
    from google.api_core.exceptions import GoogleAPIError

    try:
        lines = asyncio.run(_ensure_queues(settings, args.dry_run))
    except GoogleAPIError as error:
        print(f"pyloto: Cloud Tasks refused: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _cmd_llm(settings: Settings, args: argparse.Namespace) -> int:
    """`pyloto llm check`: one line per step, what works or why not; exit 1 unless all do."""
    from pyloto_corp.adapters.openai_llm import OpenAIAssistant
    from pyloto_corp.adapters.openai_probe import StepCheck, check
    from pyloto_corp.bootstrap import assistant_routing

    openai_settings = settings.openai
    routing = assistant_routing(settings)
    if routing is None:
        raise ConfigError(
            "llm check: the LLM is off: set OPENAI_API_KEY (and leave OPENAI_ENABLED unset or true)"
        )
    assistant = routing.assistant
    assert isinstance(assistant, OpenAIAssistant)
    # Transcription is probed when any of its variables is set: its own model or server.
    transcription_fields = {
        "transcription_model",
        "transcription_base_url",
        "transcription_api_key",
    }

    async def probe() -> list[StepCheck]:
        try:
            return await check(
                assistant,
                vision=openai_settings.vision_model is not None,
                transcription=bool(transcription_fields & openai_settings.model_fields_set),
            )
        finally:
            await assistant.close()

    checks = asyncio.run(probe())
    for item in checks:
        print(item.line())
    return 0 if all(item.ok for item in checks) else 1


def _statechart_files(folder: Path | None) -> list[Path]:
    """The charts of `--dir`, else ./statecharts, else the copy the service itself loads."""
    from pyloto_corp.bootstrap import statechart_dir

    if folder is None:
        folder = Path("statecharts") if Path("statecharts").is_dir() else statechart_dir()
    if not folder.is_dir():
        raise ConfigError(f"--dir {folder}: no such folder")
    files = sorted(path for path in folder.iterdir() if path.suffix in (".yaml", ".yml"))
    if not files:
        raise ConfigError(f"no statechart (*.yaml) in {folder}")
    return files


def _rendered_docs(args: argparse.Namespace) -> list[tuple[Path, str, str]]:
    """(page, its Markdown, its DOT) for every chart, each checked by the service's loader."""
    from pyloto_corp.bootstrap import load_chart
    from pyloto_corp.domain.statechart_docs import dot, render_markdown

    docs = []
    for path in _statechart_files(args.dir):
        chart = load_chart(path)
        page = args.out / f"{path.stem}.md"
        docs.append((page, render_markdown(chart, f"statecharts/{path.name}"), dot(chart)))
    return docs


def _cmd_statecharts_render(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    dot_binary = shutil.which("dot")  # Graphviz is optional: without it, Markdown only
    for page, markdown, graph in _rendered_docs(args):
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_bytes(markdown.encode())
        print(f"wrote {page}")
        if dot_binary is None:
            continue
        svg = page.with_suffix(".svg")
        done = subprocess.run(
            [dot_binary, "-Tsvg", "-o", str(svg)], input=graph.encode(), capture_output=True
        )
        if done.returncode != 0:
            print(f"pyloto: dot failed for {page}: {done.stderr.decode()}", file=sys.stderr)
            return 1
        print(f"wrote {svg}")
    return 0


def _cmd_statecharts_check(args: argparse.Namespace) -> int:
    """Exit 1 with a diff when a committed page differs from its rendering. The SVGs are
    not checked: they are optional, and their bytes depend on the Graphviz version."""
    from pyloto_corp.domain.statechart_docs import RENDER_COMMAND, stale_diff

    docs = _rendered_docs(args)
    stale = 0
    for page, markdown, _ in docs:
        committed = page.read_bytes().decode(errors="replace") if page.is_file() else None
        diff = stale_diff(markdown, committed, str(page))
        if diff:
            stale += 1
            sys.stdout.write(diff)
    if stale:
        print(f"pyloto: {stale} diagram(s) out of date: run `{RENDER_COMMAND}`", file=sys.stderr)
        return 1
    print(f"state diagrams up to date ({len(docs)} in {args.out})")
    return 0


def _cmd_pii_scan(args: argparse.Namespace) -> int:
    import io

    from pyloto_corp.observability.pii_scan import UnreadableLog, scan_path

    if isinstance(sys.stdout, io.TextIOWrapper):  # a terminal that cannot print an accent
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        found, _ = scan_path(args.file, sys.stdout)
    except UnreadableLog as error:
        print(f"pyloto pii-scan: {error}", file=sys.stderr)
        return 2
    return 1 if found else 0


def _cmd_fake_openai(args: argparse.Namespace) -> int:
    from pyloto_corp.devtools.fake_openai import serve_forever

    try:
        serve_forever(args.port, args.delay, args.profile)
    except OSError as error:
        print(f"pyloto: cannot serve on port {args.port}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


def _cmd_statecharts(args: argparse.Namespace) -> int:
    if args.statecharts_command == "render":
        return _cmd_statecharts_render(args)
    return _cmd_statecharts_check(args)


def _settings_commands() -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    return {
        "serve": _cmd_serve,
        "simulate": _cmd_simulate,
        "inspect": _cmd_inspect,
        "replay": _cmd_replay,
        "queues": _cmd_queues,
        "llm": _cmd_llm,
        "users": cli_users.run,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pyloto` console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`pyloto ... | head`): stop quietly, as other commands do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "replay" and args.since is not None and not args.failed:
        parser.error("--since goes with --failed")
    if args.command == "replay" and args.confirm_unknown and args.failed:
        parser.error("--confirm-unknown goes with one MESSAGE_ID, not --failed")
    # These read files or stand in for a peer: they need no settings, secrets or environment.
    plain = {"pii-scan": _cmd_pii_scan, "fake-openai": _cmd_fake_openai, "config": _cmd_config}
    if args.command in plain:
        return plain[args.command](args)
    try:
        if args.command == "statecharts":
            return _cmd_statecharts(args)
        if args.command == "docs":
            return _cmd_docs(args)
        settings = load_settings(resolve_references(os.environ))
        return _settings_commands()[args.command](settings, args)
    except (ConfigError, StatechartError) as error:
        print(f"pyloto: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
