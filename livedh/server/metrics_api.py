"""GET /metrics (Prometheus text format), and the count of requests answered with an error.

Who may scrape is decided by the access policy (livedh/server/security.py: an admin route),
not here.
"""

from __future__ import annotations

import json

from aiohttp import web

from livedh.metrics import CONTENT_TYPE
from livedh.server.services import SERVICES

routes = web.RouteTableDef()

#: error bodies are a few hundred bytes; anything bigger is not one of ours
_MAX_ERROR_BODY = 4096


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    # On the event loop on purpose: the session gauges read session state at scrape time.
    body = request.app[SERVICES].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def count_rejected(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: count every 4xx/5xx by status and error code.

    It sees every response, whichever middleware or handler made it, so the error paths need
    no hook of their own.
    """
    if response.status < 400:
        return
    services = request.app.get(SERVICES)
    if services is None:  # start-up failed; nothing to count into
        return
    services.metrics.count_rejected(response.status, _error_code(response))


def _error_code(response: web.StreamResponse) -> str:
    """The ``error`` field of our JSON error body (see http.error_response), else http_<status>."""
    body = getattr(response, "body", None)
    if isinstance(body, bytes) and len(body) <= _MAX_ERROR_BODY:
        try:
            code = json.loads(body).get("error")
        except (ValueError, AttributeError, RecursionError):
            code = None
        if isinstance(code, str):
            return code  # Metrics.count_rejected bounds it
    return f"http_{response.status}"
