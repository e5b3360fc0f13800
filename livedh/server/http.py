"""HTTP plumbing shared by the route modules: JSON errors, body parsing, CORS."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from livedh.errors import InvalidInputError, LiveDHError

logger = logging.getLogger("livedh.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, msg: str, retryable: bool = False) -> web.Response:
    return web.json_response(
        {"code": -1, "error": code, "msg": msg, "retryable": retryable}, status=status
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an HTTP status with a JSON body {code, error, msg}."""
    try:
        return await handler(request)
    except LiveDHError as exc:
        return error_response(exc.http_status, exc.code, exc.message, exc.retryable)
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413, "payload_too_large",
            f"the request body is too large (limit {request.app._client_max_size} bytes)",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        logger.exception("event=http_error path=%s", request.path)
        return error_response(500, "internal_error", "internal server error", retryable=True)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """LiveTalking allows any origin; its clients are often served from elsewhere."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response()
    else:
        response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    return response


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    return body


def require_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise InvalidInputError(f"'{key}' is required and must be a string")
    return value


def optional_str(body: dict[str, Any], key: str, max_len: int = 200) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidInputError(f"'{key}' must be a string of at most {max_len} characters")
    return value


def require_bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"'{key}' must be true or false")
    return value


def ok(**extra: Any) -> web.Response:
    return web.json_response({"code": 0, "msg": "ok", **extra})
