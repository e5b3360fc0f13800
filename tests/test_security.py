"""Access control: keys, session ownership, CORS, content type, engine allowlist, rate limits.

A stranger is simulated by an outermost test middleware that gives the request another peer
address (``X-Test-Peer``); everything else is the real app with fake models."""

import asyncio
import dataclasses

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from livedh.cli import access_problem, build_parser, config_from_args, main
from livedh.config import AppConfig, ServerConfig, TTSConfig
from livedh.errors import ForbiddenError, UnauthorizedError
from livedh.lipsync.engine import LipSyncEngine
from livedh.server.app import create_app
from livedh.server.security import (
    ROUTE_POLICIES,
    RateLimiter,
    Security,
    TokenVerifier,
    all_routes_have_policies,
    mint_token,
)
from livedh.server.services import Services
from livedh.session.manager import SessionManager
from livedh.tts.registry import TTSRegistry, check_engine_allowed
from tests.fakes import LoudnessModel
from tests.test_server import FakeRegistry, _form, _offer_sdp, _wav

STRANGER = {"X-Test-Peer": "203.0.113.7"}
OTHER_STRANGER = {"X-Test-Peer": "198.51.100.9"}


@pytest.fixture(scope="module")
def offer_sdp():
    return asyncio.run(_offer_sdp())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AllowlistRegistry(FakeRegistry):
    """The fake engines, behind the real registry's allowlist rule."""

    def __init__(self, config: TTSConfig) -> None:
        super().__init__()
        self.config = config
        self.engines["edge"] = self.engines["espeak"]

    def get(self, name=None):
        if name is not None:
            check_engine_allowed(self.config, name)
        return super().get(name)


async def _services(config: AppConfig) -> Services:
    engine = LipSyncEngine(LoudnessModel())
    tts = AllowlistRegistry(config.tts)
    return Services(config, tts, engine, SessionManager(config, engine, tts))  # type: ignore[arg-type]


@web.middleware
async def _peer(request: web.Request, handler):
    remote = request.headers.get("X-Test-Peer")
    return await handler(request.clone(remote=remote) if remote else request)


def _app(clock: FakeClock | None = None, tts: TTSConfig | None = None, **server) -> web.Application:
    config = AppConfig(server=ServerConfig(**server), tts=tts or TTSConfig(engine="piper"))
    clock = clock or FakeClock()
    access = Security(config.server, clock=clock, wall_clock=clock)
    app = create_app(config, _services, access)
    app.middlewares.insert(0, _peer)  # outermost: every other middleware sees the new peer
    return app


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(**kwargs) -> TestClient:
        client = TestClient(TestServer(_app(**kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _open(client, sdp, **extra) -> int:
    resp = await client.post("/offer", json={"sdp": sdp, "type": "offer"}, **extra)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["sessionid"]


async def _status(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    if status >= 400:
        assert body["code"] == -1 and body["msg"]
    return body


# --- the policy table -------------------------------------------------------------------------


async def test_every_route_has_a_policy_and_every_policy_a_route(make_client):
    client = await make_client()
    assert all_routes_have_policies(client.app) == []
    registered = {
        ("GET" if r.method == "HEAD" else r.method, r.resource.canonical)
        for r in client.app.router.routes() if r.resource is not None
    }
    assert set(ROUTE_POLICIES) - registered == set()  # no stale entries


async def test_a_route_without_a_policy_is_refused():
    app = _app()

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="leaked")

    app.router.add_get("/debug/secret", secret)
    assert sorted(all_routes_have_policies(app)) == [("GET", "/debug/secret"), ("HEAD", "/debug/secret")]
    async with TestClient(TestServer(app)) as client:
        await _status(await client.get("/debug/secret"), 403)
        # Unknown paths and methods keep their 404/405.
        await _status(await client.get("/nope"), 404)
        await _status(await client.put("/offer"), 405)


# --- ownership --------------------------------------------------------------------------------


async def test_a_stranger_cannot_list_speak_revoice_interrupt_or_close(make_client, offer_sdp):
    client = await make_client()
    sid = await _open(client, offer_sdp)
    wrong = sid + 1
    msg = (await _status(await client.get("/api/v1/sessions", headers=STRANGER), 403))["msg"]
    assert "--api-key" in msg
    await _status(await client.post("/human", json={"sessionid": wrong, "text": "hi"},
                                     headers=STRANGER), 404)
    await _status(await client.post(f"/api/v1/sessions/{wrong}/say", json={"text": "hi"},
                                    headers=STRANGER), 404)
    await _status(await client.patch(f"/api/v1/sessions/{wrong}", json={"tts": {"engine": "espeak"}},
                                     headers=STRANGER), 404)
    await _status(await client.post("/interrupt_talk", json={"sessionid": wrong},
                                    headers=STRANGER), 404)
    await _status(await client.delete(f"/api/v1/sessions/{wrong}", headers=STRANGER), 404)
    # The owner's session is untouched.
    state = await _status(await client.get(f"/api/v1/sessions/{sid}"), 200)
    assert state["tts_engine"] == "piper" and state["speaking"] is False
    # The id is the capability: whoever holds it controls the session.
    await _status(await client.post(f"/api/v1/sessions/{sid}/say", json={"text": "hi"},
                                    headers=STRANGER), 200)


async def test_loopback_is_admin_only_without_keys_and_not_through_a_proxy(make_client):
    client = await make_client()
    assert (await _status(await client.get("/api/v1/sessions"), 200))["sessions"] == []
    await _status(await client.get("/api/v1/avatars", headers=STRANGER), 403)
    await _status(await client.get("/api/v1/avatars/jobs/x", headers=STRANGER), 403)
    await _status(await client.post("/api/v1/avatars", headers=STRANGER), 403)
    await _status(await client.get("/metrics", headers=STRANGER), 403)
    assert (await client.get("/metrics")).status == 200
    # A local reverse proxy relays strangers from 127.0.0.1: forwarded requests are not local.
    await _status(await client.get("/api/v1/sessions", headers={"X-Forwarded-For": "1.2.3.4"}), 403)


async def test_keys_are_required_once_configured(make_client):
    client = await make_client(api_keys=("first-key", "second-key"))
    resp = await client.get("/api/v1/sessions")  # loopback is not enough any more
    await _status(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    await _status(await client.get("/api/v1/sessions",
                                   headers={"Authorization": "Bearer wrong"}), 401)
    await _status(await client.get("/api/v1/sessions",
                                   headers={"Authorization": "Basic second-key"}), 401)
    await _status(await client.get("/api/v1/sessions",
                                   headers={"Authorization": "Bearer second-key", **STRANGER}), 200)
    await _status(await client.get("/metrics"), 401)
    resp = await client.get("/metrics", headers={"Authorization": "Bearer first-key", **STRANGER})
    assert resp.status == 200 and "livedh_sessions" in await resp.text()
    # Public routes stay public.
    await _status(await client.get("/api/v1/health", headers=STRANGER), 200)


async def test_session_ids_are_unguessable_and_exact_in_javascript(make_client, offer_sdp):
    client = await make_client()
    ids = [await _open(client, offer_sdp) for _ in range(2)]
    manager = SessionManager(AppConfig(), None, None)  # type: ignore[arg-type]
    ids += [manager._new_id() for _ in range(1000)]
    assert all(2**52 <= i < 2**53 for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(float(i) == i for i in ids)  # a JavaScript Number holds each exactly


async def test_lookups_of_unknown_sessions_are_rate_limited_per_address(make_client, offer_sdp):
    clock = FakeClock()
    client = await make_client(clock=clock, lookup_failure_rate=3)
    sid = await _open(client, offer_sdp)
    for n in range(3):
        await _status(await client.post("/is_speaking", json={"sessionid": 2**52 + n},
                                         headers=STRANGER), 404)
    resp = await client.post("/is_speaking", json={"sessionid": 2**52 + 9}, headers=STRANGER)
    await _status(resp, 429)
    assert resp.headers["Retry-After"] == "60"
    # Even a right id is refused while the address is blocked; others are not affected.
    await _status(await client.get(f"/api/v1/sessions/{sid}", headers=STRANGER), 429)
    await _status(await client.get(f"/api/v1/sessions/{sid + 1}", headers=OTHER_STRANGER), 404)
    await _status(await client.get(f"/api/v1/sessions/{sid}"), 200)  # the local admin
    clock.now += 30
    resp = await client.get(f"/api/v1/sessions/{sid}", headers=STRANGER)
    assert resp.status == 429 and resp.headers["Retry-After"] == "30"
    clock.now += 30
    await _status(await client.get(f"/api/v1/sessions/{sid}", headers=STRANGER), 200)


def test_the_rate_limiter_slides_and_forgets_the_oldest_addresses():
    clock = FakeClock()
    limiter = RateLimiter(2, 10.0, clock, max_keys=3)
    limiter.hit("a")
    clock.now += 4
    limiter.hit("a")
    assert limiter.retry_after("a") == pytest.approx(6.0)
    clock.now += 6
    assert limiter.retry_after("a") is None  # the first event left the window
    for key in "bcd":
        limiter.hit(key)
        limiter.hit(key)
    assert len(limiter) == 3 and limiter.retry_after("a") is None  # "a" was forgotten
    assert limiter.retry_after("d") is not None


async def test_offers_are_rate_limited_per_address(make_client, offer_sdp):
    clock = FakeClock()
    client = await make_client(clock=clock, offer_rate=2)
    bad = {"sdp": "nonsense", "type": "offer"}
    for _ in range(2):
        await _status(await client.post("/offer", json=bad, headers=STRANGER), 400)
    resp = await client.post("/api/v1/sessions", json=bad, headers=STRANGER)
    await _status(resp, 429)
    assert int(resp.headers["Retry-After"]) == 60
    await _status(await client.post("/offer", json=bad, headers=OTHER_STRANGER), 400)
    await _open(client, offer_sdp)  # the local admin is not limited
    clock.now += 60
    await _status(await client.post("/offer", json=bad, headers=STRANGER), 400)


# --- CORS and content type --------------------------------------------------------------------


async def test_same_origin_only_by_default(make_client):
    client = await make_client()
    own = f"http://{client.server.host}:{client.server.port}"
    resp = await client.get("/api/v1/health", headers={"Origin": own})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    for origin in ("https://evil.example", f"https://{client.server.host}:{client.server.port}",
                   "null", "garbage"):
        msg = (await _status(await client.get("/api/v1/health", headers={"Origin": origin}), 403))["msg"]
        assert "--cors-origin" in msg
    # A cross-site upload form aimed at the kiosk itself.
    resp = await client.post("/humanaudio", data=_form(1, _wav(0.1)),
                             headers={"Origin": "https://evil.example"})
    await _status(resp, 403)
    await _status(await client.options("/human", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}), 403)


async def test_listed_origins_get_cors_headers(make_client):
    client = await make_client(cors_origins=("https://app.example.com",))
    origin = {"Origin": "https://app.example.com"}
    resp = await client.options("/human", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    resp = await client.get("/api/v1/health", headers=origin)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in resp.headers.getall("Vary")
    # Errors carry the headers too, so the page can read them.
    resp = await client.get("/api/v1/sessions/1", headers=origin)
    assert resp.status == 404 and resp.headers["Access-Control-Allow-Origin"]
    await _status(await client.get("/api/v1/health", headers={"Origin": "https://other.example"}), 403)


async def test_json_routes_refuse_other_content_types(make_client, offer_sdp):
    client = await make_client()
    sid = await _open(client, offer_sdp)
    body = f'{{"sessionid": {sid}, "text": "hi"}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        resp = await client.post("/human", data=body, headers={"Content-Type": content_type})
        await _status(resp, 415)
    await _status(await client.post("/offer", data=b"{}", headers={"Content-Type": "text/plain"}), 415)
    await _status(await client.patch(f"/api/v1/sessions/{sid}", data=b"{}"), 415)  # no type
    resp = await client.post("/is_speaking", json={"sessionid": sid})
    assert (await _status(resp, 200))["data"] is False  # nothing was spoken
    # A body-less POST needs no type.
    await _status(await client.post(f"/api/v1/sessions/{sid}/interrupt"), 200)


# --- TTS engines ------------------------------------------------------------------------------


async def test_online_engines_need_the_operator(make_client, offer_sdp):
    client = await make_client()
    resp = await client.post("/offer", json={"sdp": offer_sdp, "type": "offer",
                                             "tts": {"engine": "edge"}})
    assert "--tts-engines" in (await _status(resp, 403))["msg"]
    sid = await _open(client, offer_sdp)
    await _status(await client.patch(f"/api/v1/sessions/{sid}", json={"tts": {"engine": "edge"}}), 403)
    enabled = await make_client(tts=TTSConfig(engine="piper", allowed_engines=("piper", "edge")))
    sid = await _open(enabled, offer_sdp)
    resp = await enabled.patch(f"/api/v1/sessions/{sid}", json={"tts": {"engine": "edge"}})
    await _status(resp, 200)


async def test_the_registry_allows_the_default_and_listed_engines_only():
    registry = TTSRegistry(TTSConfig(engine="espeak"))
    try:
        with pytest.raises(ForbiddenError, match="--tts-engines"):
            registry.get("edge")
        assert [e["name"] for e in registry.available()] == ["piper", "espeak"]
    finally:
        await registry.aclose()
    registry = TTSRegistry(TTSConfig(engine="edge", allowed_engines=("espeak",)))
    try:
        assert registry.get("edge").name == "edge"  # the configured default always is
        with pytest.raises(ForbiddenError):
            registry.get("piper")
        assert [e["name"] for e in registry.available()] == ["espeak", "edge"]
    finally:
        await registry.aclose()


# --- --private and session tokens -------------------------------------------------------------


async def test_private_offers_need_a_key_or_a_single_use_token(make_client, offer_sdp):
    clock = FakeClock()
    client = await make_client(clock=clock, private=True, api_keys=("the-key",), token_ttl=60)
    admin = {"Authorization": "Bearer the-key"}
    offer = {"sdp": offer_sdp, "type": "offer"}
    resp = await client.post("/offer", json=offer, headers=STRANGER)
    assert resp.status == 401 and "token" in (await resp.json())["msg"]
    await _status(await client.post("/api/v1/tokens", headers=STRANGER), 401)
    minted = await _status(await client.post("/api/v1/tokens", headers={**admin, **STRANGER}), 200)
    assert minted["expires_in"] == 60
    token = minted["token"]
    # The body is read for the token and still reaches the handler whole.
    await _status(await client.post("/offer", json={**offer, "token": token}, headers=STRANGER), 200)
    msg = (await _status(await client.post("/offer", json={**offer, "token": token},
                                           headers=STRANGER), 401))["msg"]
    assert "already used" in msg
    # As a Bearer credential, and minted offline (`livedh token`) with the same key.
    offline = mint_token("the-key", 30, now=clock)
    await _status(await client.post("/api/v1/sessions", json=offer,
                                    headers={"Authorization": f"Bearer {offline}", **STRANGER}), 201)
    # Expired, forged, or signed with another key.
    late = (await _status(await client.post("/api/v1/tokens", json={"ttl": 5}, headers=admin), 200))
    clock.now += 6
    msg = (await _status(await client.post("/offer", json={**offer, "token": late["token"]},
                                           headers=STRANGER), 401))["msg"]
    assert "expired" in msg
    for forged in (mint_token("other-key", 30, now=clock), "v1.e30.AAAA", "x" * 600, "a.b.c"):
        await _status(await client.post("/offer", json={**offer, "token": forged},
                                        headers=OTHER_STRANGER), 401)
    await _status(await client.post("/offer", json=offer, headers={**admin, **STRANGER}), 200)
    await _status(await client.post("/api/v1/tokens", json={"ttl": 10_000}, headers=admin), 400)


def test_used_nonces_are_remembered_until_expiry_and_bounded():
    clock = FakeClock()
    verifier = TokenVerifier("k", clock, max_nonces=2)
    tokens = [mint_token("k", 10, now=clock) for _ in range(3)]
    verifier.redeem(tokens[0])
    verifier.redeem(tokens[1])
    with pytest.raises(Exception, match="too many"):  # full: refused, never forgotten early
        verifier.redeem(tokens[2])
    with pytest.raises(UnauthorizedError, match="already used"):
        verifier.redeem(tokens[0])
    clock.now += 11
    assert len(verifier._used) == 2
    with pytest.raises(UnauthorizedError, match="expired"):
        verifier.redeem(tokens[2])
    verifier.redeem(mint_token("k", 10, now=clock))  # expired nonces made room
    assert len(verifier._used) == 1


def test_token_cli_and_access_options(capsys, monkeypatch):
    monkeypatch.setenv("LIVEDH_API_KEYS", "env-key, second")
    assert main(["token", "--ttl", "60"]) == 0
    TokenVerifier("env-key").redeem(capsys.readouterr().out.strip())
    assert main(["token", "--api-key", "cli-key", "--ttl", "99999"]) == 2
    args = build_parser().parse_args(["serve", "--api-key", "k1", "--private", "--cors-origin",
                                      "https://a.example", "--tts-engines", "piper,edge"])
    config = config_from_args(args)
    assert config.server.api_keys == ("k1", "env-key", "second")
    assert config.tts.allowed_engines == ("piper", "edge") and config.server.private
    assert access_problem(config) is None
    monkeypatch.delenv("LIVEDH_API_KEYS")
    bad = dataclasses.replace(config, server=ServerConfig(private=True))
    assert "--api-key" in (access_problem(bad) or "")
    bad = dataclasses.replace(config, server=ServerConfig(cors_origins=("a.example/x",)))
    assert "--cors-origin" in (access_problem(bad) or "")


@pytest.mark.parametrize("option, value", [
    ("--max-upload-seconds", "0"), ("--connect-timeout", "-1"), ("--body-timeout", "0"),
    ("--idle-timeout", "0"), ("--llm-timeout", "0"), ("--max-video-seconds", "-5"),
    ("--max-upload-mb", "0"), ("--max-ice-candidates", "0"), ("--max-build-queue", "0"),
    ("--max-queued-chars", "0"), ("--max-connecting", "0"),
])
def test_limits_out_of_range_are_a_cli_error(option, value, capsys):
    from livedh.cli import limits_problem

    assert limits_problem(config_from_args(build_parser().parse_args(["serve"]))) is None
    args = build_parser().parse_args(["serve", option, value])
    assert option in (limits_problem(config_from_args(args)) or "")
    # The server refuses to start, with the message and a non-zero exit, before serving.
    assert main(["serve", option, value, "--port", "1"]) == 2
    assert option in capsys.readouterr().err
