"""HTTP plumbing shared by the route modules: JSON errors, body parsing, CORS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from livedh.config import AppConfig, ServerConfig
from livedh.errors import (
    InvalidInputError,
    LiveDHError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    UnsupportedMediaError,
)

logger = logging.getLogger("livedh.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
APP_CONFIG = web.AppKey("app_config", AppConfig)
#: largest JSON body: an SDP offer is a few KB (tens with many candidates), text <= 4,000 chars
JSON_BODY_LIMIT = 256 * 1024
#: longest SDP offer accepted (browsers send a few KB); even JSON-escaped it fits the body limit
MAX_SDP_CHARS = 32_000
#: headers of an aiohttp HTTPException kept on the JSON error that replaces it
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def error_response(status: int, code: str, msg: str, retryable: bool = False) -> web.Response:
    return web.json_response(
        {"code": -1, "error": code, "msg": msg, "retryable": retryable}, status=status
    )


def _error_for(exc: LiveDHError) -> web.Response:
    response = error_response(exc.http_status, exc.code, exc.message, exc.retryable)
    if isinstance(exc, RateLimitedError):
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


async def _send_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Answer, then close at once: aiohttp would otherwise linger (up to lingering_time) reading
    the rest of a body that is not coming."""
    response.force_close()  # says "Connection: close"
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        response = error_response(
            413, "payload_too_large",
            f"the request body is too large (limit {request.app._client_max_size} bytes)",
        )
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(
            405, "method_not_allowed", f"{exc.method} is not allowed here; allowed: {allowed}"
        )
    else:
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    for name in _KEPT_HEADERS:
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an HTTP status with a JSON body {code, error, msg}; 5xx only for
    our own bugs, and then without details (they stay in the server log)."""
    try:
        return await handler(request)
    except RequestTimeoutError as exc:
        return await _send_and_close(request, _error_for(exc))
    except LiveDHError as exc:
        return _error_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception as exc:
        if isinstance(exc, (ConnectionError, RequestPayloadError)) and _client_gone(request):
            # A dropped client is not a server fault: one quiet line, no traceback.
            logger.info("event=client_disconnected method=%s path=%r error=%s",
                        request.method, request.path, type(exc).__name__)
            response = error_response(400, "client_disconnected", "the client closed the connection")
            response.force_close()
            return response
        logger.exception("event=http_error method=%s path=%r", request.method, request.path)
        return error_response(500, "internal_error", "internal server error", retryable=True)


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin header or a --cors-origin; None when it is none."""
    try:
        url = URL(origin.strip())
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") \
            or url.query_string or url.fragment or url.user is not None:
        return None
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


def _same_origin(request: web.Request, origin: tuple[str, str, int]) -> bool:
    return parse_origin(f"{request.scheme}://{request.host}") == origin


def cors_middleware(allowed_origins: Collection[str] = ()) -> Middleware:
    """Same-origin by default. ``allowed_origins`` (--cors-origin) may also call, and get CORS
    headers; a request from any other origin is refused (403): a page a user merely opens
    must not drive the kiosk (CSRF), not even with a form or an upload."""
    allowed = set()
    for text in allowed_origins:
        parsed = parse_origin(text)
        if parsed is None:
            raise ValueError(f"--cors-origin {text!r} is not an origin like https://app.example.com")
        allowed.add(parsed)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Origin")
        if header is None:
            return await handler(request)
        origin = parse_origin(header)
        listed = origin is not None and origin in allowed
        if not listed and (origin is None or not _same_origin(request, origin)):
            return error_response(403, "forbidden", "requests from other sites' pages are refused; "
                                  "the operator can allow an origin with --cors-origin")
        if not listed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = header
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers.add("Vary", "Origin")
        return response

    return cors


@contextlib.asynccontextmanager
async def reading_body(request: web.Request) -> AsyncIterator[None]:
    """Guards a body read: a client that sends nothing for ``body_timeout`` seconds gets a 408
    (slow but moving uploads go on), and a body aiohttp cannot parse (multipart framing, control
    bytes in part headers, bad chunking) is the client's 400 rather than our 500."""
    timeout = request.app[APP_CONFIG].server.body_timeout
    loop = asyncio.get_running_loop()
    content = request.content
    seen, last_progress = content.total_bytes, loop.time()
    handle: asyncio.TimerHandle | None = None
    try:
        async with asyncio.timeout(None) as deadline:

            def watch() -> None:
                nonlocal seen, last_progress, handle
                now = loop.time()
                if content.total_bytes != seen:
                    seen, last_progress = content.total_bytes, now
                if now - last_progress >= timeout:
                    deadline.reschedule(now)
                else:
                    handle = loop.call_later(min(timeout / 4, timeout - (now - last_progress)), watch)

            handle = loop.call_later(timeout / 4, watch)
            try:
                yield
            finally:
                handle.cancel()
    except TimeoutError:
        if not deadline.expired():
            raise
        raise RequestTimeoutError(
            f"no request body data arrived for {timeout:g} s (the body timeout)"
        ) from None
    except RequestPayloadError:
        if _client_gone(request):
            raise  # a dropped client: the errors middleware logs one quiet line
        raise InvalidInputError("the request body is malformed") from None
    except (HttpProcessingError, ValueError, LookupError, AssertionError) as exc:
        # Never echo aiohttp's text: it can quote the raw header bytes.
        raise InvalidInputError(f"the request body is malformed ({type(exc).__name__})") from None


#: the body once read (a middleware may read it before the handler: the offer's token)
_BODY = web.RequestKey("livedh_body", bytes)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) past ``limit`` bytes, under the body timeout. Read once
    per request: a second call returns the same bytes."""
    def check(size: int | None) -> None:
        if size is not None and size > limit:
            raise PayloadTooLargeError(f"the request body is larger than the limit of {limit} bytes")

    cached = request.get(_BODY)
    if cached is not None:
        check(len(cached))
        return cached
    check(request.content_length)
    chunks: list[bytes] = []
    size = 0
    async with reading_body(request):
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            check(size)
            chunks.append(chunk)
    body = request[_BODY] = b"".join(chunks)
    return body


def _reject_constant(name: str) -> Any:
    raise InvalidInputError(f"the body is not valid JSON: {name} is not a JSON number")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInputError(f"the number {text[:40]} is out of range")
    return value


def _parse_int(text: str) -> int:
    # int() of thousands of digits is slow (and refused past 4,300): no field needs more than 20.
    if len(text.lstrip("-")) > 20:
        raise InvalidInputError("a number in the body has too many digits")
    return int(text)


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, finite numbers, bounded nesting."""
    try:
        return json.loads(
            data.decode("utf-8"),
            parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int,
        )
    except UnicodeDecodeError:
        raise InvalidInputError("the body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidInputError("the body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from None
    except ValueError:
        raise InvalidInputError("the body is not valid JSON") from None


async def read_json(request: web.Request, limit: int = JSON_BODY_LIMIT) -> dict[str, Any]:
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaError("send the JSON body as UTF-8 (charset=utf-8)")
    body = parse_json(await read_body(request, limit))
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    return body


def reject_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """/api/v1 bodies are exact: an unknown field is a mistake worth telling the client about."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise InvalidInputError(f"unknown field(s) {names}; allowed: {', '.join(allowed)}")


def require_str(body: dict[str, Any], key: str, max_len: int | None = None) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise InvalidInputError(f"'{key}' is required and must be a string")
    if max_len is not None and len(value) > max_len:
        raise InvalidInputError(f"'{key}' must be at most {max_len} characters")
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


class _ProtocolLogger(logging.LoggerAdapter):
    """aiohttp's connection logger, minus tracebacks for requests aiohttp itself refuses as
    malformed HTTP (bad chunking, header bytes): those are the client's 400, one info line."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.info("event=bad_http_request error=%s", type(exc_info).__name__)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def server_options(config: ServerConfig) -> dict[str, Any]:
    """aiohttp server settings for web.run_app / AppRunner. aiohttp arms keepalive_timeout when a
    connection opens, so it also closes one that never completes its request headers."""
    return {
        "keepalive_timeout": config.idle_timeout,
        "logger": _ProtocolLogger(logging.getLogger("aiohttp.server"), {}),
    }


def ok(**extra: Any) -> web.Response:
    return web.json_response({"code": 0, "msg": "ok", **extra})
