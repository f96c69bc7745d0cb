"""Local HTTP servers for stand-in peers (OpenAI, and in the tests Graph, Google certs, proxies)."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that, given a TLS context, speaks HTTPS: each accepted connection
    is wrapped in the thread that serves it, so a slow or failed handshake never stalls the
    accept loop."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            # wrap_socket takes over the accepted socket (the caller's copy is left detached).
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError too: the client refused the certificate or went away
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving `handler` from a daemon thread; HTTPS when
    given a server-side `ssl_context`."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = _Server(("127.0.0.1", port), handler)
        self.server.tls = ssl_context
        # A short poll interval makes shutdown() quick (it waits for the loop to notice).
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """http(s)://127.0.0.1:<port>, without a trailing slash."""
        scheme = "https" if self.server.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
