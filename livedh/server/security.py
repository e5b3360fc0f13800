"""Who may call what: the route policy table, API keys, session tokens and per-address limits.

Every route of the app has one policy (``ROUTE_POLICIES``); a route without one is refused, so a
new route is closed until someone decides who may call it. docs/security.md explains the table.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import heapq
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from livedh.config import ServerConfig
from livedh.errors import (
    CapacityError,
    InvalidInputError,
    NotConfiguredError,
    NotFoundError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from livedh.server.http import (
    JSON_BODY_LIMIT,
    Handler,
    error_response,
    parse_json,
    read_body,
    read_json,
    reject_unknown,
)

logger = logging.getLogger("livedh.server")
Clock = Callable[[], float]

#: longest life of a session token; bounds how long a used nonce must be remembered
MAX_TOKEN_TTL = 3600.0


class Policy(enum.Enum):
    PUBLIC = "public"
    #: opens a session: public, unless --private (then an API key or a session token)
    OFFER = "offer"
    #: acts on one session: knowing its id is the capability; failed lookups are rate limited
    SESSION = "session"
    #: an API key, or (with no key configured) a request from loopback
    ADMIN = "admin"


@dataclass(frozen=True)
class RoutePolicy:
    policy: Policy
    #: the body must be application/json (a cross-site form or text/plain POST gets 415)
    json_body: bool = False


_PUBLIC = RoutePolicy(Policy.PUBLIC)
_ADMIN = RoutePolicy(Policy.ADMIN)
_SESSION = RoutePolicy(Policy.SESSION)
_SESSION_JSON = RoutePolicy(Policy.SESSION, json_body=True)
_OFFER = RoutePolicy(Policy.OFFER, json_body=True)
_SID = "/api/v1/sessions/{sessionid}"

#: (method, canonical path) -> policy. HEAD follows GET.
ROUTE_POLICIES: dict[tuple[str, str], RoutePolicy] = {
    ("GET", "/"): _PUBLIC,
    ("GET", "/web"): _PUBLIC,
    ("GET", "/api/v1/health"): _PUBLIC,
    ("GET", "/api/v1/openapi.json"): _PUBLIC,
    ("GET", "/api/v1/avatar"): _PUBLIC,
    ("GET", "/api/v1/tts/engines"): _PUBLIC,
    ("POST", "/offer"): _OFFER,
    ("POST", "/api/v1/sessions"): _OFFER,
    ("POST", "/human"): _SESSION_JSON,
    ("POST", "/humanaudio"): _SESSION,
    ("POST", "/interrupt_talk"): _SESSION_JSON,
    ("POST", "/is_speaking"): _SESSION_JSON,
    ("GET", _SID): _SESSION,
    ("PATCH", _SID): _SESSION_JSON,
    ("DELETE", _SID): _SESSION,
    ("POST", _SID + "/say"): _SESSION_JSON,
    ("POST", _SID + "/audio"): _SESSION,
    ("POST", _SID + "/interrupt"): _SESSION,
    ("POST", _SID + "/action"): _SESSION_JSON,
    ("GET", "/api/v1/sessions"): _ADMIN,
    ("POST", "/api/v1/tokens"): RoutePolicy(Policy.ADMIN, json_body=True),
    ("GET", "/api/v1/avatars"): _ADMIN,
    ("POST", "/api/v1/avatars"): _ADMIN,
    ("GET", "/api/v1/avatars/jobs/{job_id}"): _ADMIN,
    ("DELETE", "/api/v1/avatars/jobs/{job_id}"): _ADMIN,
    ("GET", "/metrics"): _ADMIN,
    ("POST", "/set_audiotype"): _SESSION_JSON,
    ("POST", "/record"): _ADMIN,
}


def policy_for(method: str, path: str) -> RoutePolicy | None:
    return ROUTE_POLICIES.get(("GET" if method == "HEAD" else method, path))


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window). Memory is
    bounded: ``max_keys`` keys, the least recently seen forgotten first."""

    def __init__(self, limit: int, window: float = 60.0, clock: Clock = time.monotonic,
                 max_keys: int = 10_000) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("a rate limit needs limit >= 1, window > 0, max_keys >= 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may act again, or None when it may act now."""
        events = self._events.get(key)
        if events is None or len(events) < self.limit:
            return None
        wait = events[0] + self.window - self._clock()
        return wait if wait > 0 else None

    def hit(self, key: str) -> None:
        events = self._events.get(key)
        if events is None:
            # Only the newest ``limit`` events decide, so that is all a key keeps.
            events = self._events[key] = deque(maxlen=self.limit)
            if len(self._events) > self._max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        events.append(self._clock())


# --- session tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(api_key: str) -> bytes:
    # Derived, so a token's signature never doubles as anything keyed by the API key itself.
    return hmac.new(api_key.encode(), b"livedh session token v1", hashlib.sha256).digest()


def mint_token(api_key: str, ttl: float = 300.0, *, now: Clock = time.time) -> str:
    """A single-use token that opens one session on a --private server until ``ttl`` seconds
    from now. ``api_key`` is the server's first key; an app backend can mint offline."""
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise InvalidInputError(f"a token's ttl must be between 1 and {MAX_TOKEN_TTL:.0f} seconds")
    payload = json.dumps({"exp": round(now() + ttl, 3), "nonce": secrets.token_hex(16)},
                         separators=(",", ":")).encode()
    signature = hmac.new(_signing_key(api_key), payload, hashlib.sha256).digest()
    return f"v1.{_b64(payload)}.{_b64(signature)}"


class TokenVerifier:
    """Checks tokens from ``mint_token``; each nonce is accepted once, and remembered until its
    token expires (at most ``max_nonces`` at a time: beyond that tokens are refused, not
    forgotten, so a replay can never slip through)."""

    def __init__(self, api_key: str, clock: Clock = time.time, max_nonces: int = 100_000) -> None:
        self._key = _signing_key(api_key)
        self._clock = clock
        self._max_nonces = max_nonces
        self._used: set[str] = set()
        self._expiry: list[tuple[float, str]] = []

    def redeem(self, token: str) -> None:
        """Accept ``token`` once, or raise UnauthorizedError saying why not."""
        exp, nonce = self._check(token)
        now = self._clock()
        if exp <= now:
            raise UnauthorizedError("the session token has expired; ask the app for a new one")
        if exp > now + MAX_TOKEN_TTL + 60:
            raise UnauthorizedError("the session token lives too long to be accepted")
        while self._expiry and self._expiry[0][0] <= now:
            self._used.discard(heapq.heappop(self._expiry)[1])
        if nonce in self._used:
            raise UnauthorizedError("the session token was already used; each opens one session")
        if len(self._used) >= self._max_nonces:
            raise CapacityError("too many session tokens in flight; try again later")
        self._used.add(nonce)
        heapq.heappush(self._expiry, (exp, nonce))

    def _check(self, token: str) -> tuple[float, str]:
        bad = UnauthorizedError("the session token is not valid")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1" or len(token) > 512:
            raise bad
        try:
            payload, signature = _unb64(parts[1]), _unb64(parts[2])
        except ValueError:
            raise bad from None
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise bad
        claims = json.loads(payload)  # signed by us: well formed
        return float(claims["exp"]), str(claims["nonce"])


# --- the policy, enforced ---------------------------------------------------------------------

_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def _is_loopback(request: web.Request) -> bool:
    """The peer is this machine, and not a local reverse proxy relaying someone else."""
    if any(h in request.headers for h in _FORWARDED):
        return False
    try:
        address = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _refuse(code: str, status: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    response = error_response(status, code, msg, retryable=status == 429)
    response.headers.update(headers or {})
    return response


class Security:
    """The server's access state: keys, token verifier and rate limiters (one per app)."""

    def __init__(self, config: ServerConfig, *, clock: Clock = time.monotonic,
                 wall_clock: Clock = time.time) -> None:
        self.api_keys: tuple[str, ...] = tuple(k for k in config.api_keys if k)
        self.private = config.private
        self.token_ttl = config.token_ttl
        self.offers = RateLimiter(config.offer_rate, 60.0, clock)
        self.lookups = RateLimiter(config.lookup_failure_rate, 60.0, clock)
        self.tokens = TokenVerifier(self.api_keys[0], wall_clock) if self.api_keys else None
        self._wall_clock = wall_clock

    def is_api_key(self, presented: str | None) -> bool:
        if presented is None:
            return False
        found = False
        for key in self.api_keys:  # every key compared: the time says nothing about which
            found |= hmac.compare_digest(presented.encode(), key.encode())
        return found

    def is_admin(self, request: web.Request) -> bool:
        """Holds an API key, or (no key configured) calls from this machine."""
        if self.api_keys:
            return self.is_api_key(_bearer(request))
        return _is_loopback(request)

    def mint(self, ttl: float | None = None) -> tuple[str, float]:
        if not self.api_keys:
            raise NotConfiguredError("session tokens are signed with an API key: start the "
                                     "server with --api-key")
        ttl = self.token_ttl if ttl is None else ttl
        return mint_token(self.api_keys[0], ttl, now=self._wall_clock), ttl

    def _limited(self, limiter: RateLimiter, key: str, what: str) -> web.Response | None:
        wait = limiter.retry_after(key)
        if wait is None:
            return None
        seconds = max(1, int(wait + 0.999))
        return _refuse("rate_limited", 429, f"too many {what} from this address; retry in "
                       f"{seconds} s", {"Retry-After": str(seconds)})

    def check_admin(self, request: web.Request) -> web.Response | None:
        if self.api_keys:
            presented = _bearer(request)
            if self.is_api_key(presented):
                return None
            msg = ("this route needs an API key: send Authorization: Bearer <key>"
                   if presented is None else "the API key is not valid")
            return _refuse("unauthorized", 401, msg, {"WWW-Authenticate": "Bearer"})
        if _is_loopback(request):
            return None
        return _refuse("forbidden", 403, "this route answers only requests from the server's "
                       "own machine; the operator can configure --api-key to allow others")

    async def check_offer(self, request: web.Request) -> web.Response | None:
        """A refusal, or None when the request may open a session."""
        if self.is_admin(request):
            return None
        address = request.remote or "unknown"
        refused = self._limited(self.offers, address, "new sessions")
        if refused is not None:
            return refused
        self.offers.hit(address)
        if not self.private:
            return None
        token = _bearer(request)
        if token is None:
            token = await _body_token(request)
        if token is None or self.tokens is None:
            return _refuse("unauthorized", 401, "this server is private: send a session "
                           "token (body field 'token') or Authorization: Bearer <key>",
                           {"WWW-Authenticate": "Bearer"})
        try:
            self.tokens.redeem(token)
        except UnauthorizedError as exc:
            return _refuse("unauthorized", 401, exc.message, {"WWW-Authenticate": "Bearer"})
        return None

    async def check_session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Run a session route, counting lookups of ids that do not exist per address."""
        if self.is_admin(request):
            return await handler(request)
        address = request.remote or "unknown"
        refused = self._limited(self.lookups, address, "lookups of unknown sessions")
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except NotFoundError:
            self.lookups.hit(address)
            raise


async def _body_token(request: web.Request) -> str | None:
    """The ``token`` field of a JSON body, if there is one (read_body keeps the body for the
    handler). Anything odd is "no token": the handler reports bad JSON."""
    if not request.body_exists:
        return None
    data = await read_body(request, JSON_BODY_LIMIT)
    try:
        body = parse_json(data)
    except InvalidInputError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    return token if isinstance(token, str) and token else None


def require_json_content_type(request: web.Request) -> None:
    """A JSON route's body must say application/json: browsers send text/plain and forms
    cross-site without asking (no preflight), never application/json."""
    if request.body_exists and request.content_type != "application/json":
        raise UnsupportedMediaError("send the body as JSON with Content-Type: application/json")


SECURITY = web.AppKey("security", Security)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:  # no such route or method: the 404/405 as is
        return await handler(request)
    security = request.app[SECURITY]
    resource = match.route.resource
    rule = policy_for(request.method, resource.canonical) if resource is not None else None
    if rule is None:
        logger.warning("event=route_without_policy method=%s path=%s", request.method, request.path)
        return _refuse("forbidden", 403, "this route is not open to requests")
    if rule.json_body:
        require_json_content_type(request)
    refused: web.Response | None = None
    if rule.policy is Policy.ADMIN:
        refused = security.check_admin(request)
    elif rule.policy is Policy.OFFER:
        refused = await security.check_offer(request)
    elif rule.policy is Policy.SESSION:
        return await security.check_session(request, handler)
    return refused if refused is not None else await handler(request)


# --- POST /api/v1/tokens ----------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.post("/api/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    """Mint a single-use session token for a --private server (an app backend calls this)."""
    ttl: Any = None
    if request.body_exists:
        body = await read_json(request)
        reject_unknown(body, ("ttl",))
        ttl = body.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                            or not 1 <= ttl <= MAX_TOKEN_TTL):
        raise InvalidInputError(f"'ttl' must be a number of seconds from 1 to {MAX_TOKEN_TTL:.0f}")
    token, expires_in = request.app[SECURITY].mint(ttl)
    return web.json_response({"token": token, "expires_in": expires_in})


def all_routes_have_policies(app: web.Application) -> list[tuple[str, str]]:
    """Routes of ``app`` with no policy (a test keeps this empty)."""
    missing: list[tuple[str, str]] = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if policy_for(route.method, path) is None:
            missing.append((route.method, path))
    return missing


__all__ = [
    "ROUTE_POLICIES", "SECURITY", "Policy", "RateLimiter", "Security", "TokenVerifier",
    "all_routes_have_policies", "mint_token", "policy_for",
    "require_json_content_type", "routes", "security_middleware",
]
