"""The keep-alive client under the OpenAI and Graph adapters, against a local HTTP/1.1
server: connections are reused, a closed one is replaced, a refused one fails at once, on
asyncio and on uvloop (uvicorn's loop). Over TLS too, with a throwaway CA: the server's
certificate is verified (chain and hostname), and the adapters reach HTTPS peers trusted
through SSL_CERT_FILE."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import uvloop

from pyloto_corp.adapters.http_pool import (
    ConnectFailed,
    HttpPool,
    Origin,
    ResponseFailed,
    default_ssl_context,
    request_head,
)
from pyloto_corp.adapters.openai_llm import OpenAIAssistant
from pyloto_corp.adapters.openai_llm import create_client as create_openai_client
from pyloto_corp.adapters.whatsapp_graph import GraphOutbox
from pyloto_corp.adapters.whatsapp_graph import create_client as create_graph_client
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EventDetection
from pyloto_corp.devtools.fake_openai import DEFAULTS, EVENT, FakeOpenAI
from pyloto_corp.devtools.local_http import LocalServer
from pyloto_corp.domain.replies import text_reply_body
from tests.integration.factories import record
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, VERSION, FakeGraph
from tests.support.redis_server import free_port
from tests.support.running import running
from tests.support.tls import TestCA


class Peer:
    """What the server saw: the client port of each request, its TLS version and ALPN
    protocol (None over plain HTTP), and the SNI name of each TLS handshake."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.tls: list[tuple[str | None, str | None] | None] = []
        self.server_names: list[str | None] = []
        self.lock = threading.Lock()

    def watch(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """`context` (server side), recording the name each client asks for."""

        def record_name(_: Any, name: str | None, __: Any) -> None:
            with self.lock:
                self.server_names.append(name)

        context.sni_callback = record_name
        return context


def handler_for(peer: Peer, *, close_after: bool = False, chunked: bool = False) -> type[Any]:
    """An HTTP/1.1 handler echoing the body; `close_after` closes each connection after its
    answer, `chunked` answers with chunked transfer encoding."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            connection = self.connection
            with peer.lock:
                peer.ports.append(self.client_address[1])
                if isinstance(connection, ssl.SSLSocket):
                    peer.tls.append((connection.version(), connection.selected_alpn_protocol()))
                else:
                    peer.tls.append(None)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if chunked:
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(len(body)))
            if close_after:
                self.send_header("connection", "close")
            self.end_headers()
            if chunked:
                half = len(body) // 2
                for part in (body[:half], body[half:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(body)
            if close_after:
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def peer() -> Peer:
    """A fresh record of requests."""
    return Peer()


@contextlib.contextmanager
def serve(peer: Peer, tls: ssl.SSLContext | None = None, **options: bool) -> Iterator[str]:
    """A local server for one test (HTTPS with a `tls` context); its base URL."""
    server = LocalServer(handler_for(peer, **options), ssl_context=tls)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def keep_alive(peer: Peer) -> Iterator[str]:
    """A server that keeps connections open."""
    with serve(peer) as url:
        yield url


def run_on(loop_name: str, work: Callable[[str], Coroutine[Any, Any, None]], url: str) -> None:
    """Run `work(url)` on a fresh event loop of that kind."""
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(work(url))


def pool_for(url: str) -> HttpPool:
    """A pool with short deadlines."""
    return HttpPool(Origin.of(url), connect_timeout=2.0, read_timeout=2.0)


async def post(pool: HttpPool, body: bytes) -> bytes:
    """POST `body` and return the answer's body."""
    head = request_head("POST", "/echo", [("host", pool.origin.host_header)], len(body))
    answer = await pool.request(head, body)
    assert answer.status == 200
    return answer.body


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_sequential_requests_share_one_connection(
    loop_name: str, keep_alive: str, peer: Peer
) -> None:
    """Requests one after another go over the same connection while the server keeps it."""

    async def work(url: str) -> None:
        pool = pool_for(url)
        try:
            for index in range(5):
                assert await post(pool, b'{"n": %d}' % index) == b'{"n": %d}' % index
        finally:
            await pool.aclose()

    run_on(loop_name, work, keep_alive)
    assert len(peer.ports) == 5
    assert len(set(peer.ports)) == 1


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_connection_the_server_closes_is_replaced(loop_name: str, peer: Peer) -> None:
    """An answer with `connection: close` is read whole and the next request opens a new
    connection instead of failing on the closed one."""

    async def work(url: str) -> None:
        pool = pool_for(url)
        try:
            assert await post(pool, b"first") == b"first"
            assert await post(pool, b"second") == b"second"
        finally:
            await pool.aclose()

    with serve(peer, close_after=True) as url:
        run_on(loop_name, work, url)
    assert len(set(peer.ports)) == 2


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_chunked_answer_is_read_whole(loop_name: str, peer: Peer) -> None:
    """A chunked body comes back joined, and the connection is reused after it."""

    async def work(url: str) -> None:
        pool = pool_for(url)
        try:
            assert await post(pool, b'{"text": "ol\xc3\xa1"}') == b'{"text": "ol\xc3\xa1"}'
            assert await post(pool, b"again") == b"again"
        finally:
            await pool.aclose()

    with serve(peer, chunked=True) as url:
        run_on(loop_name, work, url)
    assert len(set(peer.ports)) == 1


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_refused_connection_fails_at_once_as_not_sent(loop_name: str) -> None:
    """Nothing listening: ConnectFailed (not a timeout, not ResponseFailed) well before the
    connect deadline, on either loop."""
    port = free_port()  # nothing listens there
    caught: list[BaseException] = []

    async def work(url: str) -> None:
        pool = HttpPool(Origin.of(url), connect_timeout=5.0, read_timeout=5.0)
        try:
            await post(pool, b"{}")
        except (ConnectFailed, ResponseFailed) as error:
            caught.append(error)
        finally:
            await pool.aclose()

    started = time.monotonic()
    run_on(loop_name, work, f"http://127.0.0.1:{port}")
    elapsed = time.monotonic() - started
    assert len(caught) == 1
    assert isinstance(caught[0], ConnectFailed)
    assert not caught[0].timed_out
    assert elapsed < 2.5, f"a refused connection took {elapsed:.1f} s"


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throwaway CA for this module's HTTPS servers."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def no_cert_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default trust store: certifi's roots, whatever the environment running the tests
    says."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


def refusal_on(loop_name: str, url: str, context: ssl.SSLContext | None) -> BaseException:
    """What one POST to `url` raises, with a pool on `context` (None: the default)."""
    caught: list[BaseException] = []

    async def work(url: str) -> None:
        pool = HttpPool(Origin.of(url), connect_timeout=5.0, read_timeout=5.0, ssl_context=context)
        try:
            await post(pool, b"{}")
        except (ConnectFailed, ResponseFailed) as error:
            caught.append(error)
        finally:
            await pool.aclose()

    run_on(loop_name, work, url)
    assert len(caught) == 1, "the request went through"
    return caught[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("loop_name", LOOPS)
def test_requests_over_tls_share_one_connection(
    loop_name: str, host: str, ca: TestCA, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool given the production context trusting the test CA speaks HTTPS to a server
    whose certificate names the IP address and localhost: each body comes back, one TLS
    connection carries them all, HTTP/1.1 is negotiated by ALPN, and a host name (never an
    IP address) is sent as SNI."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    context = default_ssl_context()

    async def work(url: str) -> None:
        pool = HttpPool(Origin.of(url), connect_timeout=2.0, read_timeout=2.0, ssl_context=context)
        try:
            for index in range(5):
                body = b'{"n": %d, "text": "ol\xc3\xa1"}' % index
                assert await post(pool, body) == body
        finally:
            await pool.aclose()

    with serve(peer, tls=peer.watch(ca.server_context())) as url:
        assert url.startswith("https://")
        run_on(loop_name, work, url.replace("127.0.0.1", host))
    assert len(peer.ports) == 5
    assert len(set(peer.ports)) == 1
    (negotiated,) = set(peer.tls)
    assert negotiated in (("TLSv1.2", "http/1.1"), ("TLSv1.3", "http/1.1"))
    assert peer.server_names == [None if host == "127.0.0.1" else host]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_default_context_refuses_a_certificate_outside_the_public_roots(
    loop_name: str, ca: TestCA, peer: Peer, no_cert_file: None
) -> None:
    """With certifi's roots, a certificate from an unknown CA fails the handshake: nothing
    was sent (ConnectFailed, not a deadline), well before the connect deadline."""
    with serve(peer, tls=ca.server_context()) as url:
        started = time.monotonic()
        error = refusal_on(loop_name, url, None)
        elapsed = time.monotonic() - started
    assert isinstance(error, ConnectFailed)
    assert not error.timed_out
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError), repr(error.__cause__)
    assert peer.ports == []
    assert elapsed < 2.5, f"a refused certificate took {elapsed:.1f} s"


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_certificate_for_another_host_is_refused(
    loop_name: str, ca: TestCA, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the test CA trusted through SSL_CERT_FILE, a certificate it signed for another
    name fails the hostname check of the pool's default context: nothing is sent."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    with serve(peer, tls=ca.server_context("api.example.org", "192.0.2.1")) as url:
        error = refusal_on(loop_name, url, None)
    assert isinstance(error, ConnectFailed)
    assert not error.timed_out
    cause = error.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError), repr(cause)
    assert "mismatch" in (cause.verify_message or ""), cause.verify_message
    assert peer.ports == []


def test_ssl_cert_file_replaces_the_certifi_roots(
    ca: TestCA, monkeypatch: pytest.MonkeyPatch, no_cert_file: None
) -> None:
    """By default the public roots are trusted and the test CA is not; SSL_CERT_FILE trusts
    its bundle instead; a file that is no bundle is refused naming the variable, as soon as
    the Graph or OpenAI client is built."""

    def subjects(context: ssl.SSLContext) -> list[Any]:
        return [cert["subject"] for cert in context.get_ca_certs()]

    ours = ((("commonName", "pyloto test CA"),),)
    public = subjects(default_ssl_context())
    assert len(public) > 50
    assert ours not in public
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    assert subjects(default_ssl_context()) == [ours]
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.directory / "missing.pem"))
    with pytest.raises(ValueError, match="SSL_CERT_FILE"):
        default_ssl_context()
    # The clients bootstrap builds load it at once: a wrong file stops the start.
    with pytest.raises(ValueError, match="SSL_CERT_FILE"):
        create_graph_client(TOKEN, 2.0)
    with pytest.raises(ValueError, match="SSL_CERT_FILE"):
        create_openai_client("sk-test", "https://api.openai.com/v1", 2.0, 0)


BUSINESS = BusinessProfile("Barbearia Navalha", "9h às 19h", "Corte: R$ 50.", None)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_adapters_reach_https_peers_trusted_through_ssl_cert_file(
    loop_name: str, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Graph send and an LLM call go over HTTPS to local stand-ins of both APIs whose CA
    only SSL_CERT_FILE names: the adapters build their TLS context from it as in production."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    graph = FakeGraph(tls=ca.server_context())
    openai_fake = FakeOpenAI(tls=ca.server_context())
    sent: list[str] = []

    async def work(_: str) -> None:
        saved = record(state="queued_outbound")
        outbox = GraphOutbox(
            {PHONE_NUMBER_ID: create_graph_client(TOKEN, 2.0)},
            graph.base_url,
            VERSION,
            store=None,  # type: ignore[arg-type]  # send never reads the store
        )
        assistant = OpenAIAssistant(
            create_openai_client("sk-test", openai_fake.base_url, 2.0, 0),
            "gpt-4o-mini",
            2.0,
            BUSINESS,
        )
        try:
            sent.append(await outbox.send(text_reply_body(saved.inbound, "Olá!")))
            detected = await assistant.detect_event("Quanto custa?", "text")
            assert detected.value == EventDetection.model_validate(DEFAULTS[EVENT])
        finally:
            await outbox.close()
            await assistant.close()

    with running(graph), running(openai_fake):
        assert graph.base_url.startswith("https://")
        assert openai_fake.base_url.startswith("https://")
        run_on(loop_name, work, "")
    assert graph.violations == []
    assert [send.outbound_id for send in graph.sends] == sent
    assert len(openai_fake.requests) == 1
