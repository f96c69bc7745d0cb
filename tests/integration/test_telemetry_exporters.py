"""The configured exporters themselves, not in-memory stand-ins, and none of them on the network.

Cloud Trace: the container is built from an otel.yaml naming a local Cloud Trace API (an
in-process gRPC server implementing google.devtools.cloudtrace.v2 BatchWriteSpans with the
library's own request type), and what that server receives is checked for personal data.
Console: the JSON lines `pyloto simulate --in-process` prints. OTLP and Cloud Monitoring:
built against local servers and throwaway credentials, nothing is sent until there is
something to export.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud.trace_v2.types import BatchWriteSpansRequest
from google.protobuf import empty_pb2
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

from pyloto_corp.bootstrap import bootstrap, telemetry_runtime
from pyloto_corp.cli import DEFAULT_SENDER, main
from pyloto_corp.config import ConfigError, Settings
from pyloto_corp.devtools.local_http import LocalServer
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.otel_config import OtelConfig, OtelConfigError, load_otel_config
from pyloto_corp.observability.redaction import keyed_hash
from pyloto_corp.observability.setup import (
    JsonConsoleSpanExporter,
    build_telemetry,
    metric_exporter,
    span_exporter,
)
from tests.e2e.support import Pyloto, isolate_cli_environment
from tests.support.helpers import (
    CONTACT_NAME,
    CPF,
    EMAIL,
    PHONE,
    REPO,
    SENDER,
    envelope,
    text_message,
)
from tests.support.redis_server import free_port
from tests.support.running import running

PROJECT = "pyloto-test"
HASH_KEY = "exporters-test-hash-key"
SERVICE = "google.devtools.cloudtrace.v2.TraceService"

TEXT = f"Oi! Meu CPF é {CPF}, e-mail {EMAIL}, telefone {PHONE}."
NAME = f"{CONTACT_NAME} ({EMAIL}, {CPF}, +55 11 98888-7777)"
LEAKS = [
    PHONE,
    "91234-5678",
    "5511912345678",
    "98888-7777",
    EMAIL,
    "maria.aparecida",
    CPF,
    "12345678909",
    SENDER,
    CONTACT_NAME,
    "Aparecida",
]
FALLBACK_STEPS = ["received", "deduped", "fallback", "queued_outbound", "sending"]

# The Cloud Trace exporter builds its attribute maps with the SDK's BoundedDict, deprecated
# since SDK 1.4.0: under this suite's `filterwarnings = error` every export would fail.
# Outside tests the warning is ignored by Python's default filters.
IGNORE_BOUNDED_DICT = pytest.mark.filterwarnings(
    "ignore:Deprecated since version 1.4.0:DeprecationWarning:opentelemetry.exporter.cloud_trace"
)

MakeSettings = Callable[..., Settings]


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The shipped otel.yaml with `sections` merged in, written to tmp_path; no resource
    detection (nothing may ask a metadata server)."""
    data = yaml.safe_load((REPO / "otel.yaml").read_text(encoding="utf-8"))
    data["resource"] = {"detection": "none"}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "otel.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def no_google_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No project, credentials or Cloud Run hints from the developer's environment."""
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "OTEL_EXPORTER_GCP_TRACE_PROJECT_ID",
        "K_SERVICE",
    ):
        monkeypatch.delenv(name, raising=False)


# --- a local Cloud Trace API -----------------------------------------------------------------


class FakeCloudTrace:
    """BatchWriteSpans over plain gRPC; keeps every request."""

    def __init__(self) -> None:
        self.requests: list[BatchWriteSpansRequest] = []
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "BatchWriteSpans": grpc.unary_unary_rpc_method_handler(
                    self.batch_write_spans,
                    request_deserializer=BatchWriteSpansRequest.deserialize,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{port}"

    def batch_write_spans(
        self, request: BatchWriteSpansRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        """Keep the request; answer as Cloud Trace does (an empty message)."""
        with self._lock:
            self.requests.append(request)
        return empty_pb2.Empty()

    def spans(self) -> list[Any]:
        """Every span received, over all requests."""
        with self._lock:
            return [span for request in self.requests for span in request.spans]

    def start(self) -> None:
        """Serve."""
        self._server.start()

    def stop(self) -> None:
        """Stop at once."""
        self._server.stop(grace=None).wait(timeout=10)


@pytest.fixture
def cloud_trace() -> Iterator[FakeCloudTrace]:
    """A running local Cloud Trace API."""
    with running(FakeCloudTrace()) as server:
        yield server


def attribute(span: Any, key: str) -> str | None:
    """A Cloud Trace span's string attribute (None when absent)."""
    value = span.attributes.attribute_map.get(key)
    return None if value is None else str(value.string_value.value)


@IGNORE_BOUNDED_DICT
@pytest.mark.anyio
@pytest.mark.usefixtures("no_google_environment")
async def test_cloud_trace_from_otel_yaml_receives_redacted_spans_of_a_message(
    make_settings: MakeSettings, tmp_path: Path, cloud_trace: FakeCloudTrace
) -> None:
    """With `traces.exporter: cloud_trace` and a local endpoint in otel.yaml, the container's
    own exporter writes the message's spans to projects/pyloto-test by BatchWriteSpans when
    the app stops; no span holds the text's phone, e-mail or CPF, the sender's number or the
    contact's name, and `enduser.id` is the sender's keyed hash."""
    config = write_config(
        tmp_path,
        traces={
            "exporter": "cloud_trace",
            "cloud_trace": {"project_id": PROJECT, "endpoint": cloud_trace.endpoint},
        },
    )
    settings = make_settings(
        PYLOTO_OTEL_CONFIG=str(config), GCP_PROJECT=PROJECT, PRIVACY_HASH_KEY=HASH_KEY
    )
    message = text_message(TEXT)
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        app = Pyloto(client)
        assert (await app.post(envelope([message], name=NAME))).status_code == 200
        assert (await app.wait_for(message["id"]))["state"] == "sent"
        await app.wait_idle()
        # Leaving the block stops the app, which flushes the batch to the exporter.

    assert cloud_trace.requests, "the exporter wrote nothing"
    assert {request.name for request in cloud_trace.requests} == {f"projects/{PROJECT}"}
    spans = cloud_trace.spans()
    names = [span.display_name.value for span in spans]
    for expected in ("POST /webhook", "message received"):
        assert expected in names
    for state in FALLBACK_STEPS:
        assert f"step {state}" in names
    for span in spans:
        assert span.name.startswith(f"projects/{PROJECT}/traces/")
        assert span.name.endswith(f"/spans/{span.span_id}")
        text = BatchWriteSpansRequest.to_json(BatchWriteSpansRequest(spans=[span]))
        text += str(span)
        for leak in LEAKS:
            assert leak.lower() not in text.lower(), (span.display_name.value, leak)
    users = {attribute(span, "enduser.id") for span in spans} - {None}
    assert users == {keyed_hash(SENDER, HASH_KEY)}
    (received,) = [span for span in spans if span.display_name.value == "step received"]
    assert attribute(received, "pyloto.state.to") == "deduped"


@IGNORE_BOUNDED_DICT
@pytest.mark.usefixtures("no_google_environment")
def test_a_local_cloud_trace_endpoint_takes_the_project_from_gcp_project(
    make_settings: MakeSettings, tmp_path: Path, cloud_trace: FakeCloudTrace
) -> None:
    """With `project_id: null`, the spans go to GCP_PROJECT's project."""
    config = write_config(
        tmp_path,
        traces={"exporter": "cloud_trace", "cloud_trace": {"endpoint": cloud_trace.endpoint}},
    )
    settings = make_settings(PYLOTO_OTEL_CONFIG=str(config), GCP_PROJECT="pyloto-from-env")
    runtime = telemetry_runtime(settings)
    with runtime.telemetry.span(f"ligar para {PHONE}"):
        pass
    runtime.shutdown()
    (request,) = cloud_trace.requests
    assert request.name == "projects/pyloto-from-env"
    (span,) = request.spans
    assert span.display_name.value == "ligar para [phone]"


@pytest.mark.usefixtures("no_google_environment")
def test_a_local_cloud_trace_endpoint_without_a_project_is_refused(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """An endpoint with neither project_id nor GCP_PROJECT stops bootstrap with a
    ConfigError naming the file and the keys to set."""
    config = write_config(
        tmp_path,
        traces={
            "exporter": "cloud_trace",
            "cloud_trace": {"endpoint": f"127.0.0.1:{free_port()}"},
        },
    )
    with pytest.raises(ConfigError) as caught:
        bootstrap(make_settings(PYLOTO_OTEL_CONFIG=str(config)))
    assert str(caught.value) == (
        f"{config}: traces.cloud_trace.endpoint needs a project "
        "(traces.cloud_trace.project_id or GCP_PROJECT)"
    )


@pytest.mark.usefixtures("no_google_environment")
def test_cloud_trace_without_an_endpoint_or_credentials_fails_at_once(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud Trace on Google with GOOGLE_APPLICATION_CREDENTIALS naming no file is refused
    at bootstrap with a ConfigError naming otel.yaml, the exporter and the missing file:
    google.auth stops at the explicit credentials and never asks the metadata server."""
    missing = tmp_path / "no-such-key.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    config = write_config(tmp_path, traces={"exporter": "cloud_trace"})
    settings = make_settings(PYLOTO_OTEL_CONFIG=str(config), GCP_PROJECT=PROJECT)
    with pytest.raises(ConfigError) as caught:
        bootstrap(settings)
    message = str(caught.value)
    assert message.startswith(f"{config}: traces.exporter cloud_trace: DefaultCredentialsError:")
    assert str(missing) in message

    with pytest.raises(OtelConfigError) as direct:
        span_exporter(load_otel_config(config), PROJECT)
    assert str(direct.value) == message


# --- throwaway Google credentials and a local recorder --------------------------------------


class Recorder:
    """A local HTTP server answering 200 to everything, keeping (path, body) of each POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                recorder.posts.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler)
        self.url = self._server.url

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A running recorder."""
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture
def service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: Recorder, no_google_environment: None
) -> Path:
    """GOOGLE_APPLICATION_CREDENTIALS naming a throwaway service-account key whose token
    endpoint is the recorder: any token request would show up there."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "pyloto-from-key",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "pyloto@pyloto-from-key.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{recorder.url}/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


@pytest.mark.usefixtures("service_account")
def test_cloud_trace_on_google_is_built_without_a_request(
    tmp_path: Path, recorder: Recorder
) -> None:
    """With credentials and no endpoint the Cloud Trace exporter is built for the project
    and asks for nothing (no token, no RPC) while there is no span to export."""
    config = load_otel_config(write_config(tmp_path, traces={"exporter": "cloud_trace"}))
    runtime = build_telemetry(config, hash_key=HASH_KEY, project=PROJECT, environ={})
    runtime.shutdown()
    exporter = span_exporter(config, PROJECT)
    assert exporter is not None
    assert getattr(exporter, "project_id", None) == PROJECT
    assert recorder.posts == []


# --- console ---------------------------------------------------------------------------------


@pytest.fixture
def cli_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process environment with only this test's pyloto variables, in a tmp directory."""
    monkeypatch.delenv("K_SERVICE", raising=False)
    isolate_cli_environment(
        monkeypatch,
        tmp_path,
        "work",
        PRIVACY_HASH_KEY=HASH_KEY,
        PYLOTO_OTEL_CONFIG=str(REPO / "otel.yaml"),
        OTEL_TRACES_EXPORTER="console",
    )


@pytest.mark.usefixtures("cli_environment")
def test_console_spans_of_simulate_are_one_json_object_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pyloto simulate --in-process` with OTEL_TRACES_EXPORTER=console prints its spans on
    stdout as single-line JSON objects (name, context.trace_id, attributes, resource) beside
    its own report lines; the spans are redacted: the sender is only its keyed hash, and
    neither the text's personal data nor the contact's name is in them."""
    assert main(["simulate", "--in-process", TEXT, "--name", NAME]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    span_lines = [line for line in lines if line.startswith("{")]
    report = [line for line in lines if not line.startswith("{")]
    assert report[0].startswith("message wamid.")
    assert "received → deduped → buffered → fallback → queued_outbound → sending → sent" in report

    spans = [json.loads(line) for line in span_lines]
    assert all(isinstance(span, dict) for span in spans)
    names = [span["name"] for span in sorted(spans, key=lambda span: span["start_time"])]
    assert "message received" in names
    # `simulate` runs on the defaults: the message waits out its burst in `buffered`.
    steps = [*FALLBACK_STEPS[:2], "buffered", *FALLBACK_STEPS[2:]]
    assert [f"step {state}" for state in steps] == [n for n in names if n[:5] == "step "]
    traces = {span["context"]["trace_id"] for span in spans}
    assert len(traces) == 1, "one message, one trace"
    for span in spans:
        assert isinstance(span["attributes"], dict)
        assert span["resource"]["attributes"]["service.name"] == "pyloto"
        assert span["context"]["span_id"]
    users = {span["attributes"].get("enduser.id") for span in spans} - {None}
    assert users == {keyed_hash(DEFAULT_SENDER, HASH_KEY)}
    printed = "\n".join(span_lines).lower()
    for leak in [*LEAKS, DEFAULT_SENDER]:
        assert leak.lower() not in printed, leak


def test_console_exporter_writes_redacted_single_line_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The console exporter built from otel.yaml writes one JSON object a line, even for
    text with newlines, with the allow-list and redaction applied to names, attributes,
    events and statuses."""
    config = load_otel_config(REPO / "otel.yaml", {"OTEL_TRACES_EXPORTER": "console"})
    runtime = build_telemetry(config, hash_key=HASH_KEY, environ={})
    with runtime.telemetry.span(f"ligar\npara {PHONE}") as span:
        span.set_attribute("pyloto.note", f"cpf {CPF}\ne-mail {EMAIL}")
        span.set_attribute("enduser.id", SENDER)
        span.set_attribute("customer.text", TEXT)
        span.add_event(f"retry {EMAIL}", {"pyloto.detail": PHONE})
    runtime.shutdown()
    lines = capsys.readouterr().out.splitlines()
    (entry,) = [json.loads(line) for line in lines]
    assert entry["name"] == "ligar\npara [phone]"
    assert entry["context"]["trace_id"].startswith("0x")
    assert entry["attributes"] == {
        "pyloto.note": "cpf [cpf]\ne-mail [email]",
        "enduser.id": keyed_hash(SENDER, HASH_KEY),
    }
    (event,) = entry["events"]
    assert event["name"] == "retry [email]"
    assert event["attributes"] == {"pyloto.detail": "[phone]"}
    for leak in LEAKS:
        assert leak not in lines[0]


def test_the_console_exporter_is_the_single_line_one() -> None:
    """`console` builds the JSON-lines exporter (the SDK's default prints indented JSON over
    several lines, which Cloud Logging would split into several entries)."""
    config = load_otel_config(REPO / "otel.yaml", {"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(span_exporter(config, None), JsonConsoleSpanExporter)


# --- metrics ---------------------------------------------------------------------------------


def metrics_config(tmp_path: Path, exporter: str) -> OtelConfig:
    """otel.yaml with this metrics exporter and no traces."""
    return load_otel_config(write_config(tmp_path, metrics={"exporter": exporter}))


def test_metrics_none_builds_no_exporter(tmp_path: Path) -> None:
    """`none` builds no metrics exporter and the providers still work."""
    config = metrics_config(tmp_path, "none")
    assert metric_exporter(config, PROJECT) is None
    runtime = build_telemetry(config, hash_key=HASH_KEY, environ={})
    runtime.telemetry.metrics.llm_calls.add(1, {"pyloto.llm.step": "llm1"})
    runtime.shutdown()


def test_metrics_console_prints_one_json_object_a_line_at_shutdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`console` builds the SDK's console exporter on stdout behind a periodic reader;
    nothing is printed at construction; at shutdown the recorded counter is printed as
    JSON, one object a line like the spans and the logs."""
    config = metrics_config(tmp_path, "console")
    exporter = metric_exporter(config, PROJECT)
    assert isinstance(exporter, ConsoleMetricExporter)
    assert exporter.out is sys.stdout
    runtime = build_telemetry(config, hash_key=HASH_KEY, environ={})
    assert capsys.readouterr().out == ""
    runtime.telemetry.metrics.llm_calls.add(2, {"pyloto.llm.step": "llm1", "pyloto.outcome": "ok"})
    runtime.shutdown()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]
    assert "pyloto.llm.calls" in json.dumps(entries)


@pytest.mark.usefixtures("no_google_environment")
def test_metrics_otlp_sends_nothing_until_there_is_something_to_export(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`otlp` is built on OTEL_EXPORTER_OTLP_ENDPOINT without a request; the first export
    (here at shutdown) goes to that endpoint's /v1/metrics."""
    for name in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recorder.url)
    runtime = build_telemetry(metrics_config(tmp_path, "otlp"), hash_key=HASH_KEY, environ={})
    assert recorder.posts == []
    runtime.telemetry.metrics.fallbacks.add(1, {"pyloto.fallback.reason": "timeout"})
    runtime.shutdown()
    assert [path for path, _ in recorder.posts] == ["/v1/metrics"]
    assert b"pyloto.fallbacks" in recorder.posts[0][1]


def test_traces_otlp_posts_redacted_spans_to_the_configured_endpoint(
    tmp_path: Path, recorder: Recorder
) -> None:
    """`traces.otlp.endpoint` is the full OTLP/HTTP URL; building sends nothing; the spans
    posted there at shutdown are redacted."""
    endpoint = f"{recorder.url}/v1/traces"
    config = load_otel_config(
        write_config(tmp_path, traces={"exporter": "otlp", "otlp": {"endpoint": endpoint}})
    )
    runtime = build_telemetry(config, hash_key=HASH_KEY, environ={})
    assert recorder.posts == []
    with runtime.telemetry.span(f"ligar {PHONE}", attributes={"enduser.id": SENDER}):
        pass
    runtime.shutdown()
    ((path, body),) = recorder.posts
    assert path == "/v1/traces"
    assert b"ligar [phone]" in body
    assert keyed_hash(SENDER, HASH_KEY).encode() in body
    for leak in LEAKS:
        assert leak.encode() not in body


def test_metrics_cloud_monitoring_is_built_without_a_request(
    tmp_path: Path, recorder: Recorder, service_account: Path
) -> None:
    """`cloud_monitoring` is built for the project from the default credentials without
    asking for a token or writing anything while no metric has been recorded."""
    config = metrics_config(tmp_path, "cloud_monitoring")
    exporter = metric_exporter(config, PROJECT)
    assert exporter is not None
    assert getattr(exporter, "project_name", None) == f"projects/{PROJECT}"
    runtime = build_telemetry(config, hash_key=HASH_KEY, project=PROJECT, environ={})
    runtime.shutdown()
    assert recorder.posts == []


@pytest.mark.usefixtures("no_google_environment")
def test_metrics_cloud_monitoring_without_credentials_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without usable credentials `cloud_monitoring` is an OtelConfigError naming the file
    and the exporter, raised at build time."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    config = metrics_config(tmp_path, "cloud_monitoring")
    with pytest.raises(OtelConfigError) as caught:
        build_telemetry(config, hash_key=HASH_KEY, project=PROJECT, environ={})
    assert str(caught.value).startswith(
        f"{config.source}: metrics.exporter cloud_monitoring: DefaultCredentialsError:"
    )


def test_exporting_nothing_records_nothing(make_settings: Callable[..., Settings]) -> None:
    """With both exporters `none` (the embedded default) no SDK provider is built: spans are
    the API's non-recording ones and records keep no trace context, so a laptop run pays
    nothing for telemetry it does not send anywhere."""
    runtime = telemetry_runtime(make_settings())
    assert runtime.tracer_provider is None
    assert runtime.meter_provider is None
    with runtime.telemetry.span("step received") as span:
        assert not span.is_recording()
        assert not span.get_span_context().is_valid
    runtime.shutdown()


def test_one_exporter_builds_only_its_provider(make_settings: Callable[..., Settings]) -> None:
    """`console` traces with metrics `none`: a tracer provider, no meter provider."""
    runtime = telemetry_runtime(make_settings(OTEL_TRACES_EXPORTER="console"))
    try:
        assert runtime.tracer_provider is not None
        assert runtime.meter_provider is None
        with runtime.telemetry.span("step received") as span:
            assert span.is_recording()
    finally:
        runtime.shutdown()
