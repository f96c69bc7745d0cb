"""The keep-alive client under the OpenAI and Graph adapters, against a local HTTP/1.1
server: connections are reused, a closed one is replaced, a refused one fails at once, on
asyncio and on uvloop (uvicorn's loop)."""

from __future__ import annotations

import asyncio
import contextlib
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
    request_head,
)
from pyloto_corp.devtools.local_http import LocalServer
from tests.support.redis_server import free_port


class Peer:
    """What the server saw: the client port of each request."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.lock = threading.Lock()


def handler_for(peer: Peer, *, close_after: bool = False, chunked: bool = False) -> type[Any]:
    """An HTTP/1.1 handler echoing the body; `close_after` closes each connection after its
    answer, `chunked` answers with chunked transfer encoding."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            with peer.lock:
                peer.ports.append(self.client_address[1])
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
def serve(peer: Peer, **options: bool) -> Iterator[str]:
    """A local server for one test; its base URL."""
    server = LocalServer(handler_for(peer, **options))
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
