"""What /ops answers while the console is off (OPS_CONSOLE_ENABLED unset or false).

A 404 like any unknown path, but one a person can read: the console is off and the two
steps that turn it on. It names settings and commands only, never anything of this
instance (no account, record, token or address).
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, route

_HOW = (
    "set OPS_CONSOLE_ENABLED=true and restart `pyloto serve`, then sign in with an account "
    "made by `pyloto users add NAME --role operator` (docs/accounts.md)"
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyloto · console off</title></head>
<body><h1>The operations console is off</h1>
<p>To turn it on, set <code>OPS_CONSOLE_ENABLED=true</code> and restart
<code>pyloto serve</code>.</p>
<p>Then sign in with an account made by
<code>pyloto users add NAME --role operator</code>
(see <code>docs/console.md</code> and <code>docs/accounts.md</code>).</p>
</body></html>
"""

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}

_METHODS: list[Any] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    """A browser's request: its Accept names HTML before (or without) JSON."""
    accept = request.headers.get("accept", "").lower()
    html = accept.find("text/html")
    json = accept.find("application/json")
    return html >= 0 and (json < 0 or html < json)


@route(["/ops", "/ops/{rest:path}"], http_method=_METHODS, status_code=404)
async def console_off(request: Request[Any, Any, Any]) -> Response[Any]:
    """404 with a page saying the console is off and how to turn it on (JSON for a client
    that does not ask for HTML)."""
    if _wants_html(request):
        return Response(_PAGE, status_code=404, media_type=MediaType.HTML, headers=_HEADERS)
    return Response(
        {"status_code": 404, "detail": f"the operations console is off: {_HOW}"},
        status_code=404,
        media_type=MediaType.JSON,
        headers=_HEADERS,
    )
