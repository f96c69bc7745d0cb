"""`sm://` references resolved by the real Secret Manager client against a local gRPC server.

The server implements `AccessSecretVersion` of `google.cloud.secretmanager.v1` with the
library's own request/response types; the client reaches it through
SECRET_MANAGER_EMULATOR_HOST, exactly as in a local run against an emulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)

from pyloto_corp.adapters.secret_manager import DEFAULT_TIMEOUT_SECONDS, resolve_references
from pyloto_corp.cli import main
from pyloto_corp.config import ConfigError, Settings, load_settings
from pyloto_corp.devtools.local_http import LocalServer
from tests.support.redis_server import free_port
from tests.support.running import running

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
PROJECT = "pyloto-test"
# Quoted by the fake server in every error it returns: it must never reach a message.
SERVER_DETAIL = "server-detail-canary-7f3a"
FAST = 1.0  # resolution timeout (seconds) for the cases that wait on an unreachable server


class FakeSecretManager:
    """AccessSecretVersion over gRPC: versions in a dict, some names denied, some that hang."""

    def __init__(self) -> None:
        self.versions: dict[str, bytes] = {}
        self.latest: dict[str, str] = {}  # secret name → name of its latest version
        self.denied: set[str] = set()
        self.hanging: set[str] = set()
        self.calls: list[str] = []
        self.peers: list[str] = []
        self.metadata_keys: set[str] = set()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.host = ""

    def add(self, secret: str, *payloads: bytes, project: str = PROJECT) -> str:
        """Versions 1..n of `secret` (the last is `latest`); returns the secret's name."""
        name = f"projects/{project}/secrets/{secret}"
        for number, payload in enumerate(payloads, start=1):
            self.versions[f"{name}/versions/{number}"] = payload
        self.latest[name] = f"{name}/versions/{len(payloads)}"
        return name

    def access(
        self, request: AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> AccessSecretVersionResponse:
        """The real service's answers: NOT_FOUND, PERMISSION_DENIED or the payload."""
        with self._lock:
            self.calls.append(request.name)
            self.peers.append(context.peer())
            self.metadata_keys.update(key for key, _ in context.invocation_metadata())
        if request.name in self.hanging:
            self.released.wait(timeout=30)
        if request.name in self.denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"denied {SERVER_DETAIL}")
        secret, _, version = request.name.partition("/versions/")
        name = self.latest.get(secret, "") if version == "latest" else request.name
        if name not in self.versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found {SERVER_DETAIL}")
        return AccessSecretVersionResponse(
            name=name, payload=SecretPayload(data=self.versions[name])
        )

    def start(self) -> None:
        """Serve on a free local port; `host` is its host:port."""
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                    self.access,
                    request_deserializer=AccessSecretVersionRequest.deserialize,
                    response_serializer=AccessSecretVersionResponse.serialize,
                )
            },
        )
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.host = f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Release hanging calls and stop at once."""
        self.released.set()
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=10)


@pytest.fixture
def secret_manager() -> Iterator[FakeSecretManager]:
    """A running fake Secret Manager, stopped after the test."""
    with running(FakeSecretManager()) as server:
        yield server


def closed_port_host() -> str:
    """host:port where nothing listens (the port was just freed)."""
    return f"127.0.0.1:{free_port()}"


def environ(server: FakeSecretManager, **variables: str) -> dict[str, str]:
    """An environment that points the client at `server`, plus `variables`."""
    return {"SECRET_MANAGER_EMULATOR_HOST": server.host, **variables}


# --- resolved values -------------------------------------------------------------------------


def config_error_of(env: dict[str, str], timeout: float = DEFAULT_TIMEOUT_SECONDS) -> str:
    """The message of the ConfigError that resolving `env` raises."""
    with pytest.raises(ConfigError) as caught:
        resolve_references(env, timeout=timeout)
    return str(caught.value)


def test_full_reference_resolves_to_the_payload_as_utf8_text(
    secret_manager: FakeSecretManager,
) -> None:
    """A full reference becomes the payload decoded as UTF-8 (non-ASCII kept), with the
    trailing newline `gcloud secrets create --data-file=-` leaves stripped; plain values and
    values that merely contain sm:// are copied unchanged; the input is not modified."""
    name = secret_manager.add("app-secret", "senha-ção-🔑\n".encode())
    env = environ(
        secret_manager,
        WHATSAPP_APP_SECRET=f"sm://{name}/versions/1",
        WHATSAPP_VERIFY_TOKEN="plain-token",
        BUSINESS_FAQ="see sm://not-a-reference",
    )
    original = dict(env)

    resolved = resolve_references(env)

    assert resolved["WHATSAPP_APP_SECRET"] == "senha-ção-🔑"
    assert resolved["WHATSAPP_VERIFY_TOKEN"] == "plain-token"
    assert resolved["BUSINESS_FAQ"] == "see sm://not-a-reference"
    assert env == original
    assert secret_manager.calls == [f"{name}/versions/1"]


def test_latest_and_explicit_versions(secret_manager: FakeSecretManager) -> None:
    """A reference without a version, or with `latest`, reads the newest version; an explicit
    version number reads that version."""
    name = secret_manager.add("token", b"old", b"new")
    resolved = resolve_references(
        environ(
            secret_manager,
            A=f"sm://{name}",
            B=f"sm://{name}/versions/latest",
            C=f"sm://{name}/versions/1",
        )
    )
    assert (resolved["A"], resolved["B"], resolved["C"]) == ("new", "new", "old")
    assert f"{name}/versions/latest" in secret_manager.calls


def test_short_forms_take_the_project_from_gcp_project(
    secret_manager: FakeSecretManager,
) -> None:
    """`sm://S` and `sm://S/versions/V` name secrets of the project in GCP_PROJECT."""
    secret_manager.add("app-secret", b"v1\r\n", b"v2")
    resolved = resolve_references(
        environ(
            secret_manager,
            GCP_PROJECT=PROJECT,
            WHATSAPP_APP_SECRET="sm://app-secret",
            WHATSAPP_VERIFY_TOKEN="sm://app-secret/versions/1",
        )
    )
    assert resolved["WHATSAPP_APP_SECRET"] == "v2"
    assert resolved["WHATSAPP_VERIFY_TOKEN"] == "v1"
    assert resolved["GCP_PROJECT"] == PROJECT
    assert sorted(secret_manager.calls) == [
        f"projects/{PROJECT}/secrets/app-secret/versions/1",
        f"projects/{PROJECT}/secrets/app-secret/versions/latest",
    ]


def test_many_references_use_one_client_and_one_call_each(
    secret_manager: FakeSecretManager,
) -> None:
    """Several variables are resolved over one connection (one client), with one call per
    distinct reference: a reference used by two variables is read once."""
    secret = secret_manager.add("app-secret", b"s3cret-app")
    token = secret_manager.add("internal-token", b"s3cret-token")
    key = secret_manager.add("openai-key", b"sk-s3cret")
    resolved = resolve_references(
        environ(
            secret_manager,
            WHATSAPP_APP_SECRET=f"sm://{secret}",
            PRIVACY_HASH_KEY=f"sm://{secret}",
            INTERNAL_TASK_TOKEN=f"sm://{token}",
            OPENAI_API_KEY=f"sm://{key}/versions/1",
        )
    )
    assert resolved["WHATSAPP_APP_SECRET"] == resolved["PRIVACY_HASH_KEY"] == "s3cret-app"
    assert resolved["INTERNAL_TASK_TOKEN"] == "s3cret-token"
    assert resolved["OPENAI_API_KEY"] == "sk-s3cret"
    assert sorted(secret_manager.calls) == sorted(
        [f"{secret}/versions/latest", f"{token}/versions/latest", f"{key}/versions/1"]
    )
    assert len(set(secret_manager.peers)) == 1, secret_manager.peers


def test_emulator_calls_carry_no_credentials(secret_manager: FakeSecretManager) -> None:
    """Against the emulator the client sends no authorization metadata (anonymous)."""
    name = secret_manager.add("app-secret", b"value")
    resolve_references(environ(secret_manager, WHATSAPP_APP_SECRET=f"sm://{name}"))
    assert secret_manager.calls
    assert "authorization" not in secret_manager.metadata_keys


def test_resolved_environment_feeds_settings(secret_manager: FakeSecretManager) -> None:
    """Settings read from the resolved environment hold the secrets' values."""
    secret_manager.add("app-secret", b"from-secret-manager")
    secret_manager.add("verify-token", b"verify-from-sm")
    env = environ(
        secret_manager,
        GCP_PROJECT=PROJECT,
        WHATSAPP_APP_SECRET="sm://app-secret",
        WHATSAPP_VERIFY_TOKEN="sm://verify-token",
    )
    settings = load_settings(resolve_references(env))
    assert settings.app_secret == "from-secret-manager"
    assert settings.verify_token == "verify-from-sm"


def test_the_numbers_tokens_may_be_one_secret_holding_every_pair(
    secret_manager: FakeSecretManager,
) -> None:
    """WHATSAPP_ACCESS_TOKENS as one `sm://` reference: the secret's pairs give each number
    its token, as docs/settings.md says."""
    secret_manager.add("number-tokens", b"106540352242933:EAAG-second,106540352242944:EAAG-third")
    env = environ(
        secret_manager,
        GCP_PROJECT=PROJECT,
        WHATSAPP_ACCESS_TOKEN="EAAG-default",
        WHATSAPP_PHONE_NUMBER_ID="106540352242922",
        WHATSAPP_PHONE_NUMBER_IDS="106540352242933,106540352242944",
        WHATSAPP_ACCESS_TOKENS="sm://number-tokens",
    )
    whatsapp = load_settings(resolve_references(env)).whatsapp
    assert whatsapp.token_problems() == []
    assert [whatsapp.token_for(n) for n in whatsapp.business_numbers] == [
        "EAAG-default",
        "EAAG-second",
        "EAAG-third",
    ]


# --- no references ---------------------------------------------------------------------------


def test_without_references_no_client_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no sm:// value nothing is contacted: an emulator host on a closed port and, in the
    production path, credentials that cannot load are both irrelevant."""
    env = {"WHATSAPP_APP_SECRET": "plain", "SECRET_MANAGER_EMULATOR_HOST": closed_port_host()}
    assert resolve_references(env) == env

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    assert resolve_references({"WHATSAPP_APP_SECRET": "plain"}) == {"WHATSAPP_APP_SECRET": "plain"}


def test_references_without_credentials_name_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an emulator and without usable Google credentials, resolution refuses with a
    message naming the variables and the way out, not a traceback from google.auth."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    env = {"WHATSAPP_APP_SECRET": "sm://projects/p/secrets/s", "OPENAI_API_KEY": "sk-plain"}
    with pytest.raises(ConfigError, match="WHATSAPP_APP_SECRET") as caught:
        resolve_references(env)
    assert "SECRET_MANAGER_EMULATOR_HOST" in str(caught.value)
    assert "sk-plain" not in str(caught.value)


# --- failures --------------------------------------------------------------------------------


def test_missing_secret_names_the_variable_and_the_reference(
    secret_manager: FakeSecretManager,
) -> None:
    """NOT_FOUND → ConfigError naming the variable, the reference and 'not found', without
    the server's text, the other variables' values or secrets resolved before it."""
    good = secret_manager.add("app-secret", b"resolved-before-the-failure")
    env = environ(
        secret_manager,
        WHATSAPP_APP_SECRET=f"sm://{good}",
        OPENAI_API_KEY="sk-plain-value",
        INTERNAL_TASK_TOKEN=f"sm://projects/{PROJECT}/secrets/missing/versions/3",
    )
    message = config_error_of(env)
    assert "INTERNAL_TASK_TOKEN" in message
    assert f"sm://projects/{PROJECT}/secrets/missing/versions/3" in message
    assert "not found" in message
    for leaked in (SERVER_DETAIL, "resolved-before-the-failure", "sk-plain-value"):
        assert leaked not in message


def test_short_form_failure_shows_the_full_name_too(secret_manager: FakeSecretManager) -> None:
    """A failing short reference is shown as written and as the resource name it became."""
    env = environ(secret_manager, GCP_PROJECT=PROJECT, WHATSAPP_APP_SECRET="sm://nope")
    message = config_error_of(env)
    assert "WHATSAPP_APP_SECRET" in message
    assert "sm://nope" in message
    assert f"projects/{PROJECT}/secrets/nope/versions/latest" in message


def test_permission_denied_is_a_config_error(secret_manager: FakeSecretManager) -> None:
    """PERMISSION_DENIED → ConfigError naming the variable, the reference and 'permission
    denied', without the server's text or any secret value."""
    name = secret_manager.add("app-secret", b"never-shown")
    secret_manager.denied.add(f"{name}/versions/latest")
    env = environ(secret_manager, WHATSAPP_APP_SECRET=f"sm://{name}")
    message = config_error_of(env)
    assert "WHATSAPP_APP_SECRET" in message
    assert f"sm://{name}" in message
    assert "permission denied" in message
    assert SERVER_DETAIL not in message
    assert "never-shown" not in message


def test_server_down_is_a_config_error() -> None:
    """An emulator host where nothing listens → ConfigError with the gRPC status, after the
    bounded retries (the test's own timeout is the bound)."""
    env = {
        "SECRET_MANAGER_EMULATOR_HOST": closed_port_host(),
        "WHATSAPP_APP_SECRET": f"sm://projects/{PROJECT}/secrets/app-secret",
    }
    message = config_error_of(env, timeout=FAST)
    assert "WHATSAPP_APP_SECRET" in message
    assert "UNAVAILABLE" in message


def test_server_that_never_answers_is_a_config_error(
    secret_manager: FakeSecretManager,
) -> None:
    """A call that gets no answer within the timeout → ConfigError DEADLINE_EXCEEDED."""
    name = secret_manager.add("app-secret", b"slow")
    secret_manager.hanging.add(f"{name}/versions/latest")
    env = environ(secret_manager, WHATSAPP_APP_SECRET=f"sm://{name}")
    with pytest.raises(ConfigError, match="DEADLINE_EXCEEDED") as caught:
        resolve_references(env, timeout=FAST)
    assert "WHATSAPP_APP_SECRET" in str(caught.value)


def test_payload_that_is_not_utf8_is_refused(secret_manager: FakeSecretManager) -> None:
    """A binary payload cannot be a setting: ConfigError naming the variable, no bytes shown."""
    name = secret_manager.add("binary", b"\xff\xfe\x00secret")
    env = environ(secret_manager, WHATSAPP_APP_SECRET=f"sm://{name}")
    with pytest.raises(ConfigError, match=r"WHATSAPP_APP_SECRET.*not UTF-8"):
        resolve_references(env)


@pytest.mark.parametrize(
    "reference",
    [
        "sm://",
        "sm://projects/p/secrets",
        "sm://projects/p/secrets/s/versions/",
        "sm://a/b",
        "sm://s/versions/1/extra",
        "sm://secret with spaces",
    ],
)
def test_malformed_reference_is_refused_before_any_call(
    secret_manager: FakeSecretManager, reference: str
) -> None:
    """A value starting with sm:// that is no reference → ConfigError naming the variable and
    the accepted forms; the server is never called."""
    env = environ(secret_manager, GCP_PROJECT=PROJECT, WHATSAPP_APP_SECRET=reference)
    with pytest.raises(ConfigError, match="WHATSAPP_APP_SECRET") as caught:
        resolve_references(env)
    assert "sm://projects/P/secrets/S" in str(caught.value)
    assert secret_manager.calls == []


def test_short_form_without_gcp_project_is_refused(secret_manager: FakeSecretManager) -> None:
    """`sm://S` without GCP_PROJECT → ConfigError naming the variable and GCP_PROJECT, before
    any call (even when another reference is complete)."""
    full = secret_manager.add("app-secret", b"x")
    env = environ(
        secret_manager, WHATSAPP_APP_SECRET=f"sm://{full}", INTERNAL_TASK_TOKEN="sm://token"
    )
    message = config_error_of(env)
    assert "INTERNAL_TASK_TOKEN" in message
    assert "GCP_PROJECT" in message
    assert secret_manager.calls == []


# --- through the `pyloto` command ------------------------------------------------------------

APP_SECRET_VALUE = "app-secret-from-sm-ção"
TOKEN_VALUE = "internal-token-from-sm"


class _MetaAndPyloto(BaseHTTPRequestHandler):
    """Stands in for a pyloto server configured with the plain values: checks the webhook's
    HMAC signature and the X-Internal-Token, and reports every message as sent."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        digest = hmac.new(APP_SECRET_VALUE.encode(), body, hashlib.sha256).hexdigest()
        given = self.headers.get("X-Hub-Signature-256", "")
        self._answer(200 if hmac.compare_digest(given, f"sha256={digest}") else 403, {})

    def do_GET(self) -> None:
        message_id = self.path.rsplit("/", 1)[-1]
        view = {"message_id": message_id, "state": "sent", "history": []}
        self._answer(200 if self.headers.get("X-Internal-Token") == TOKEN_VALUE else 401, view)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads exit codes and output, not the access log."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """The URL of a local HTTP server that accepts only correctly signed webhooks."""
    server = LocalServer(_MetaAndPyloto)
    yield server.url
    server.stop()


@pytest.fixture
def clean_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any of pyloto's variables, in a tmp directory."""
    for field in Settings.model_fields.values():
        section = field.annotation
        assert isinstance(section, type)
        for info in getattr(section, "model_fields", {}).values():
            monkeypatch.delenv(info.alias, raising=False)
    monkeypatch.setenv("STATE_SQLITE_PATH", str(tmp_path / "pyloto.db"))
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize("source", ["secret_manager", "plain"])
def test_pyloto_simulate_signs_with_the_resolved_secret(
    secret_manager: FakeSecretManager,
    receiver: str,
    clean_environ: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
) -> None:
    """`pyloto simulate --url` with sm:// references behaves as with the plain values: the
    webhook's signature and the internal token match what the server expects (exit 0)."""
    secret_manager.add("app-secret", f"{APP_SECRET_VALUE}\n".encode())
    secret_manager.add("internal-token", TOKEN_VALUE.encode())
    if source == "secret_manager":
        clean_environ.setenv("SECRET_MANAGER_EMULATOR_HOST", secret_manager.host)
        clean_environ.setenv("GCP_PROJECT", PROJECT)
        clean_environ.setenv("WHATSAPP_APP_SECRET", "sm://app-secret")
        clean_environ.setenv(
            "INTERNAL_TASK_TOKEN", f"sm://projects/{PROJECT}/secrets/internal-token"
        )
    else:
        clean_environ.setenv("WHATSAPP_APP_SECRET", APP_SECRET_VALUE)
        clean_environ.setenv("INTERNAL_TASK_TOKEN", TOKEN_VALUE)

    assert main(["simulate", "--url", receiver, "--timeout", "5", "Olá"]) == 0
    out, err = capsys.readouterr()
    assert "sent" in out, (out, err)
    assert len(secret_manager.calls) == (2 if source == "secret_manager" else 0)


def test_pyloto_simulate_with_another_secret_is_rejected(
    secret_manager: FakeSecretManager,
    receiver: str,
    clean_environ: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The check above can fail: a reference to a different secret signs wrongly (exit 1)."""
    secret_manager.add("other-secret", b"not-the-app-secret")
    clean_environ.setenv("SECRET_MANAGER_EMULATOR_HOST", secret_manager.host)
    clean_environ.setenv("GCP_PROJECT", PROJECT)
    clean_environ.setenv("WHATSAPP_APP_SECRET", "sm://other-secret")

    assert main(["simulate", "--url", receiver, "--timeout", "5", "Olá"]) == 1
    _, err = capsys.readouterr()
    assert "403" in err


def test_pyloto_exits_2_naming_a_reference_that_fails(
    secret_manager: FakeSecretManager,
    clean_environ: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pyloto inspect ID` with a missing secret → exit 2, one line naming the variable and the
    reference, no traceback, and nothing started."""
    clean_environ.setenv("SECRET_MANAGER_EMULATOR_HOST", secret_manager.host)
    clean_environ.setenv("WHATSAPP_APP_SECRET", f"sm://projects/{PROJECT}/secrets/gone")

    assert main(["inspect", "wamid.ANY"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "WHATSAPP_APP_SECRET" in err
    assert f"sm://projects/{PROJECT}/secrets/gone" in err
    assert "not found" in err
    assert "Traceback" not in err
