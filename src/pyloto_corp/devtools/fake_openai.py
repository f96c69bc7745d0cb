"""A local HTTP server that speaks the OpenAI chat completions and audio transcriptions APIs,
for tests and demos.

The real `openai` SDK is pointed at it by base URL. Answers are chosen per structured-output
schema name (EventDetection, ReplyDraft, MessageChoice, ImageDescription), and TRANSCRIPTION
for `POST /v1/audio/transcriptions`: a JSON object (a transcript), raw text, a refusal, an
HTTP error, or any of those after a delay. Every chat request body is kept for assertions,
and every upload (its form fields and its file) too.

A provider profile makes it behave as a server other than OpenAI does:
- `openai` (the default): every format and temperature accepted.
- `llamacpp`: llama-cpp-python's server, which takes `response_format` `text` or
  `json_object` (with an optional `schema`) and answers `json_schema` with its request
  validation error as a 500 (https://github.com/ggml-org/llama.cpp/issues/23463).
- `gpt5`: OpenAI's newer models, which refuse any temperature but the default (1) with a 400
  naming the param (https://github.com/johny-b/llmcomp/issues/69).
- `prose`: a server that ignores `response_format`: the JSON comes wrapped in prose and a
  code fence.
The schema a request asks for is read from `json_schema.name`, else the title of
`response_format.schema`, else the schema the system prompt carries.

`pyloto fake-openai [--port 8999] [--delay 12] [--profile llamacpp]` serves the canned answers
for a demo.
"""

from __future__ import annotations

import email.message
import json
import re
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from pyloto_corp.devtools.local_http import LocalServer

Profile = Literal["openai", "llamacpp", "gpt5", "prose"]
PROFILES: tuple[Profile, ...] = ("openai", "llamacpp", "gpt5", "prose")

EVENT = "EventDetection"
DRAFT = "ReplyDraft"
CHOICE = "MessageChoice"
IMAGE = "ImageDescription"
# Not a schema: the key of `POST /v1/audio/transcriptions`'s answers.
TRANSCRIPTION = "TRANSCRIPTION"

DEFAULTS: dict[str, dict[str, Any]] = {
    EVENT: {"event": "price", "confidence": 0.93, "summary": "Cliente quer saber o preço."},
    DRAFT: {
        "text": "Olá! O corte custa R$ 50 e a barba R$ 30. Quer agendar um horário?",
    },
    CHOICE: {
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
    },
    IMAGE: {
        "description": "Foto de um corte de cabelo masculino curto, com degradê nas laterais.",
    },
    TRANSCRIPTION: {"text": "Olá, quanto custa o corte de cabelo?"},
}


@dataclass
class Answer:
    """How the server answers one request."""

    content: Any = None  # a dict is sent as JSON text; a str as it is
    refusal: str | None = None
    status: int = 200
    delay: float = 0.0
    finish_reason: str = "stop"
    code: str | None = None  # the error's code, with an error status
    param: str | None = None  # the request field the error names
    message: str = "simulated"  # the error's message
    # The model the answer names (OpenAI names a dated snapshot); None: the one asked for.
    model: str | None = None


def json_answer(value: dict[str, Any], delay: float = 0.0) -> Answer:
    """Answer with this object as the structured output."""
    return Answer(content=value, delay=delay)


def raw_answer(text: str) -> Answer:
    """Answer with this text as the message content (e.g. malformed JSON)."""
    return Answer(content=text)


def refusal() -> Answer:
    """Answer with a refusal instead of content."""
    return Answer(refusal="Desculpe, não posso ajudar com isso.")


def error(status: int) -> Answer:
    """Answer with an HTTP error in the API's error shape."""
    return Answer(status=status)


def policy_refusal() -> Answer:
    """Answer as the API does to an input its content policy rejects (400, its code): the
    way a transcription, which has no refusal field, is refused."""
    return Answer(status=400, code="content_policy_violation")


def format_refusal() -> Answer:
    """Answer as OpenAI does to a structured-output format a model lacks (400, naming the
    `response_format` param)."""
    return Answer(
        status=400,
        code="invalid_value",
        param="response_format",
        message="Invalid parameter: 'response_format' of type 'json_schema' is not supported "
        "with this model.",
    )


def transcript(text: str, delay: float = 0.0) -> Answer:
    """Answer a transcription with this text."""
    return Answer(content={"text": text}, delay=delay)


@dataclass(frozen=True)
class Upload:
    """A transcription request as received: its form fields (model, language,
    response_format...), its file, and the request's headers (names in lower case)."""

    fields: dict[str, str]
    filename: str
    content_type: str
    data: bytes
    headers: dict[str, str]


@dataclass
class FakeOpenAI:
    """The server's script and what it has seen."""

    default_delay: float = 0.0
    profile: Profile = "openai"
    requests: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    base_url: str = ""  # set by start()
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server-side context
    _queued: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    _always: dict[str, Answer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LocalServer | None = None

    def queue(self, schema: str, *answers: Answer) -> None:
        """Answer the next requests for `schema` with these, in order."""
        with self._lock:
            self._queued[schema].extend(answers)

    def always(self, schema: str, answer: Answer) -> None:
        """Answer every request for `schema` with this (after queued answers run out)."""
        with self._lock:
            self._always[schema] = answer

    def seen(self, schema: str) -> list[dict[str, Any]]:
        """Request bodies received for `schema`, oldest first."""
        with self._lock:
            return [r for r in self.requests if schema_name(r) == schema]

    def _next(self, schema: str) -> Answer:
        with self._lock:
            if self._queued[schema]:
                return self._queued[schema].popleft()
            if schema in self._always:
                return self._always[schema]
        return Answer(content=DEFAULTS.get(schema, {}), delay=self.default_delay)

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The answer to a chat completion request, as the profile's provider gives it."""
        with self._lock:
            self.requests.append(body)
        refused = refusal_of(self.profile, body)
        if refused is not None:
            return refused
        answer = self._next(schema_name(body))
        if answer.delay:
            time.sleep(answer.delay)
        status, payload = render(answer, body)
        return status, wrapped_in_prose(payload) if self.profile == "prose" else payload

    def start(self, port: int = 0) -> str:
        """Serve in a background thread; returns the base URL for the SDK."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the SDK's only verb here
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/").endswith("/audio/transcriptions"):
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    try:
                        upload = parse_upload(headers, raw)
                    except ValueError as bad:
                        self._send(400, _error_body("invalid_request_error", str(bad)))
                        return
                    with fake._lock:
                        fake.uploads.append(upload)
                    answer = fake._next(TRANSCRIPTION)
                    if answer.delay:
                        time.sleep(answer.delay)
                    self._send(*render_transcription(answer))
                    return
                self._send(*fake._chat(json.loads(raw or b"{}")))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler, port, ssl_context=self.tls)
        self.base_url = f"{self._server.url}/v1"
        return self.base_url

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()


KNOWN_SCHEMAS = (EVENT, DRAFT, CHOICE, IMAGE)
_TITLE = re.compile(r'"title"\s*:\s*"(\w+)"')


def schema_name(body: dict[str, Any]) -> str:
    """The structured-output schema a request asks for ('' when none): by `json_schema`'s
    name, else `response_format.schema`'s title, else the schema in the system prompt."""
    response_format = body.get("response_format") or {}
    named = (response_format.get("json_schema") or {}).get("name")
    if named:
        return str(named)
    titled = (response_format.get("schema") or {}).get("title")
    if titled:
        return str(titled)
    for message in body.get("messages") or []:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str):
            for title in _TITLE.findall(content):
                if title in KNOWN_SCHEMAS:
                    return str(title)
    return ""


# What llama-cpp-python's server answers a `json_schema` request: FastAPI's validation error
# of its request model, wrapped by its route handler as an internal server error.
LLAMACPP_FORMAT_ERROR = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}"
)


def refusal_of(profile: Profile, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The error a provider of `profile` answers this request with, or None if it takes it."""
    if profile == "llamacpp":
        kind = (body.get("response_format") or {}).get("type", "text")
        if kind not in ("text", "json_object"):
            error = {
                "message": LLAMACPP_FORMAT_ERROR,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
            return 500, {"error": error}
    if profile == "gpt5" and body.get("temperature", 1) != 1:
        error = {
            "message": f"Unsupported value: 'temperature' does not support "
            f"{body['temperature']} with this model. Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
        return 400, {"error": error}
    return None


def wrapped_in_prose(payload: dict[str, Any]) -> dict[str, Any]:
    """A completion as a server that ignores `response_format` answers it: the JSON inside a
    sentence and a code fence (errors and refusals as they are)."""
    for choice in payload.get("choices") or []:
        content = choice["message"].get("content")
        if isinstance(content, str) and content.lstrip().startswith("{"):
            choice["message"]["content"] = (
                f"Claro! Segue a resposta:\n```json\n{content}\n```\nPosso ajudar em algo mais?"
            )
    return payload


def parse_upload(headers: dict[str, str], body: bytes) -> Upload:
    """The form fields and the one file of a `multipart/form-data` body, byte for byte
    (ValueError when it is not one)."""
    form = email.message.Message()
    form["content-type"] = headers.get("content-type", "")
    boundary = form.get_param("boundary")
    if form.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise ValueError("not multipart/form-data")
    delimiter = b"\r\n--" + boundary.encode("ascii")
    # Every part follows CRLF, the delimiter and CRLF; the last delimiter is followed by "--".
    segments = (b"\r\n" + body).split(delimiter)
    if len(segments) < 3 or segments[0] != b"" or not segments[-1].startswith(b"--"):
        raise ValueError("malformed multipart body")
    fields: dict[str, str] = {}
    file: tuple[str, str, bytes] | None = None
    for segment in segments[1:-1]:
        head, separator, data = segment.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("a part without headers")
        part = email.message_from_bytes(head + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        if filename is not None:
            file = (filename, part.get("content-type", ""), data)
        elif isinstance(name, str):
            fields[name] = data.decode()
    if file is None:
        raise ValueError("no file")
    filename, content_type, data = file
    return Upload(fields, filename, content_type, data, headers)


def _error_body(kind: str, message: str = "simulated") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind}}


def _error(answer: Answer) -> tuple[int, dict[str, Any]]:
    if answer.code is not None:
        body = _error_body("invalid_request_error", answer.message)
        body["error"].update(code=answer.code, param=answer.param)
        return answer.status, body
    kind = "rate_limit_exceeded" if answer.status == 429 else "server_error"
    return answer.status, _error_body(kind)


def render_transcription(answer: Answer) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a transcription for `answer` (a dict content is the
    body, with a usage block unless it has one)."""
    if answer.status != 200:
        return _error(answer)
    content = answer.content
    body = dict(content) if isinstance(content, dict) else {"text": str(content or "")}
    body.setdefault(
        "usage", {"type": "tokens", "input_tokens": 60, "output_tokens": 12, "total_tokens": 72}
    )
    return 200, body


def render(answer: Answer, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for `answer`."""
    if answer.status != 200:
        return _error(answer)
    content = answer.content
    if isinstance(content, dict):
        content = json.dumps(content, ensure_ascii=False)
    return 200, {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model or request.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if answer.refusal else content,
                    "refusal": answer.refusal,
                },
                "finish_reason": answer.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
    }


def serve_forever(port: int, delay: float, profile: Profile = "openai") -> None:
    """Serve the canned answers (the three steps', a transcript, a picture's description)
    as a provider of `profile` does, until interrupted (`pyloto fake-openai`)."""
    fake = FakeOpenAI(default_delay=delay, profile=profile)
    print(f"OPENAI_BASE_URL={fake.start(port)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
