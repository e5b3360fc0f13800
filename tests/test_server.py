"""HTTP API behaviour against the real app, with fake models (no WebRTC connection needed)."""

import asyncio
import io
import wave

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection

from livedh.config import AppConfig, ServerConfig, TTSConfig
from livedh.errors import InvalidInputError
from livedh.lipsync.engine import LipSyncEngine
from livedh.server.app import create_app
from livedh.server.services import Services
from livedh.session.manager import SessionManager
from tests.fakes import LoudnessModel, make_fake_tts, tone


class FakeRegistry:
    def __init__(self) -> None:
        self.engines = {"piper": make_fake_tts(name="piper"), "espeak": make_fake_tts(name="espeak")}

    def get(self, name=None):
        name = name or "piper"
        if name not in self.engines:
            raise InvalidInputError(f"unknown TTS engine {name!r}")
        return self.engines[name]

    def validate_voice(self, voice):
        if voice is not None and len(voice) > 50:
            raise InvalidInputError("voice too long")
        return voice

    def available(self):
        return [{"name": n, "usable": True} for n in self.engines]

    async def aclose(self):
        pass


def _config(**server) -> AppConfig:
    return AppConfig(server=ServerConfig(**server), tts=TTSConfig(engine="piper"))


async def _fake_services(config: AppConfig) -> Services:
    engine = LipSyncEngine(LoudnessModel())
    tts = FakeRegistry()
    return Services(config, tts, engine, SessionManager(config, engine, tts))  # type: ignore[arg-type]


@pytest.fixture
async def client():
    app = create_app(_config(max_sessions=2, max_upload_bytes=200_000), _fake_services)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _offer_sdp() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def offer_sdp():
    return asyncio.run(_offer_sdp())


async def _open(client, offer_sdp) -> int:
    resp = await client.post("/offer", json={"sdp": offer_sdp, "type": "offer"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["type"] == "answer" and body["sdp"].startswith("v=0")
    assert 2**52 <= body["sessionid"] < 2**53  # unguessable, exact in a JavaScript Number
    return body["sessionid"]


async def _error(resp, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["code"] == -1 and isinstance(body["msg"], str) and body["msg"]
    return body["msg"]


async def test_legacy_flow(client, offer_sdp):
    sid = await _open(client, offer_sdp)
    resp = await client.post("/human", json={"sessionid": sid, "text": "hello", "type": "echo"})
    assert (await resp.json()) == {"code": 0, "msg": "ok"}
    resp = await client.post("/is_speaking", json={"sessionid": sid})
    body = await resp.json()
    assert body["code"] == 0 and body["data"] is True
    resp = await client.post("/interrupt_talk", json={"sessionid": str(sid)})
    assert resp.status == 200
    resp = await client.post("/is_speaking", json={"sessionid": sid})
    assert (await resp.json())["data"] is False
    state = await (await client.get(f"/api/v1/sessions/{sid}")).json()
    assert state["sessionid"] == sid and state["tts_engine"] == "piper"
    assert (await client.delete(f"/api/v1/sessions/{sid}")).status == 200
    await _error(await client.post("/is_speaking", json={"sessionid": sid}), 404)


async def test_bad_json_and_sdp(client, offer_sdp):
    await _error(await client.post("/offer", data=b"{not json",
                                   headers={"Content-Type": "application/json"}), 400)
    await _error(await client.post("/offer", json=[1, 2]), 400)
    await _error(await client.post("/offer", json={"type": "offer"}), 400)
    msg = await _error(await client.post("/offer", json={"sdp": "hello", "type": "offer"}), 400)
    assert "sdp" in msg.lower()
    garbage = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video nonsense\r\n"
    await _error(await client.post("/offer", json={"sdp": garbage, "type": "offer"}), 400)
    await _error(await client.post("/offer", json={"sdp": offer_sdp, "type": "answer"}), 400)
    await _error(
        await client.post("/offer", json={"sdp": offer_sdp, "type": "offer",
                                          "tts": {"engine": "nope"}}), 400)
    # Nothing half-made was left behind.
    assert (await (await client.get("/api/v1/sessions")).json())["sessions"] == []


async def test_text_validation(client, offer_sdp):
    sid = await _open(client, offer_sdp)
    for body in [
        {"sessionid": sid, "text": "", "type": "echo"},
        {"sessionid": sid, "text": "x" * 10_000, "type": "echo"},
        {"sessionid": sid, "text": 5, "type": "echo"},
        {"sessionid": sid, "text": "hi", "type": "sing"},
        {"sessionid": sid, "text": "hi", "type": "echo", "interrupt": "yes"},
        {"sessionid": "abc", "text": "hi"},
    ]:
        await _error(await client.post("/human", json=body), 400)
    await _error(await client.post("/human", json={"sessionid": 1, "text": "hi"}), 404)
    msg = await _error(
        await client.post("/human", json={"sessionid": sid, "text": "hi", "type": "chat"}), 409
    )
    assert "LLM" in msg


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone(seconds).tobytes())
    return buf.getvalue()


def _form(sid, data: bytes, name: str = "a.wav") -> FormData:
    form = FormData()
    form.add_field("sessionid", str(sid))
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


async def test_audio_uploads(client, offer_sdp):
    sid = await _open(client, offer_sdp)
    resp = await client.post("/humanaudio", data=_form(sid, _wav(0.5)))
    assert resp.status == 200, await resp.text()
    await _error(await client.post("/humanaudio", data=_form(sid, b"\x00garbage" * 100)), 415)
    await _error(await client.post("/humanaudio", data=_form(sid, np.random.bytes(300_000))), 413)
    await _error(await client.post("/humanaudio", json={"sessionid": sid}), 400)
    await _error(await client.post("/humanaudio", data=_form(999, _wav(0.1))), 404)
    resp = await client.post(f"/api/v1/sessions/{sid}/audio", data=_form(sid, _wav(0.2)))
    assert resp.status == 200


async def test_capacity_returns_503(client, offer_sdp):
    await _open(client, offer_sdp)
    await _open(client, offer_sdp)
    msg = await _error(await client.post("/offer", json={"sdp": offer_sdp, "type": "offer"}), 503)
    assert "full" in msg


async def test_v1_api_and_openapi(client, offer_sdp):
    resp = await client.post("/api/v1/sessions", json={"sdp": offer_sdp, "type": "offer",
                                                      "tts": {"engine": "espeak"}})
    assert resp.status == 201
    sid = (await resp.json())["sessionid"]
    resp = await client.post(f"/api/v1/sessions/{sid}/say", json={"text": "hi", "mode": "echo"})
    assert resp.status == 200
    resp = await client.patch(f"/api/v1/sessions/{sid}", json={"tts": {"engine": "piper"}})
    assert (await resp.json())["tts_engine"] == "piper"
    assert (await client.post(f"/api/v1/sessions/{sid}/interrupt")).status == 200
    listed = (await (await client.get("/api/v1/sessions")).json())["sessions"]
    assert [s["sessionid"] for s in listed] == [sid]
    assert (await (await client.get("/api/v1/tts/engines")).json())["engines"]
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    # Every /api/v1 route the app serves is documented.
    app_paths = {
        r.resource.canonical
        for r in client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/v1")
    }
    assert app_paths <= set(doc["paths"]), app_paths - set(doc["paths"])
    await _error(await client.get("/api/v1/nope"), 404)
    await _error(await client.get("/api/v1/sessions/12x"), 400)
    health = await (await client.get("/api/v1/health")).json()
    assert health["status"] == "ok" and health["sessions"] == 1


async def test_same_origin_by_default(client):
    # tests/test_security.py covers --cors-origin and foreign origins.
    resp = await client.options("/human")
    assert resp.status == 405 and "Access-Control-Allow-Origin" not in resp.headers


async def test_closed_sessions_are_freed_without_waiting_for_the_cyclic_gc(offer_sdp):
    import gc
    import weakref

    engine = LipSyncEngine(LoudnessModel())
    manager = SessionManager(_config(), engine, FakeRegistry())  # type: ignore[arg-type]
    gc.disable()  # a reference cycle would keep the session (and its buffers) alive
    try:
        refs = []
        for _ in range(3):
            session, _, _ = await manager.open_webrtc(offer_sdp, "offer")
            refs.append(weakref.ref(session))
            await manager.close(session.id)
            del session
        await asyncio.sleep(0.1)
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()
        await manager.aclose()
        await engine.aclose()
