"""GET /metrics: the exposition parses, and what sessions and requests do moves its numbers."""

import asyncio
import types
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from livedh.asr.base import Transcript
from livedh.config import SessionConfig
from livedh.errors import ProviderError
from livedh.lipsync.engine import LipSyncEngine
from livedh.metrics import Metrics, bounded_label
from livedh.server.app import create_app
from livedh.server.services import SERVICES
from livedh.session.session import Session
from livedh.tts.base import PcmChunk, TTSEngine
from tests.fakes import LoudnessModel, settle
from tests.test_server import _config, _fake_services, _offer_sdp

FAMILIES = {
    "livedh_sessions": "gauge",
    "livedh_first_audio_seconds": "histogram",
    "livedh_frame_lateness_seconds": "histogram",
    "livedh_asr_seconds": "histogram",
    "livedh_llm_first_token_seconds": "histogram",
    "livedh_tts_first_chunk_seconds": "histogram",
    "livedh_session_errors": "counter",
    "livedh_rejected_requests": "counter",
    "process_resident_memory_bytes": "gauge",
}


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with exactly these labels (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.fixture
async def client():
    app = create_app(_config(max_sessions=2), _fake_services)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _scrape(client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return await resp.text()


async def test_the_exposition_parses_and_has_every_family(client):
    text = await _scrape(client)
    types_by_name = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        assert types_by_name.get(name) == kind, name
    assert _sample(text, "livedh_sessions", state="open") == 0


async def _until_speech(session: Session) -> None:
    """Read the video as the transport does (clock-paced, lateness noted) until speech plays."""
    while True:
        frame = await session.channel.next_video()
        session.channel.note_lateness(await session.clock.wait_until(frame.index / session.fps))
        if frame.speech:
            return


async def test_a_session_that_speaks_moves_the_counters(client):
    resp = await client.post("/offer", json={"sdp": await _offer_sdp(), "type": "offer"})
    assert resp.status == 200, await resp.text()
    sid = (await resp.json())["sessionid"]
    text = await _scrape(client)
    # Its peer never finishes ICE here: open and still connecting.
    assert _sample(text, "livedh_sessions", state="open") == 1
    assert _sample(text, "livedh_sessions", state="connecting") == 1
    assert _sample(text, "livedh_first_audio_seconds_count") == 0

    session = client.server.app[SERVICES].sessions.get(sid)
    resp = await client.post("/human", json={"sessionid": sid, "text": "hello there", "type": "echo"})
    assert resp.status == 200, await resp.text()
    await asyncio.wait_for(_until_speech(session), 10)

    text = await _scrape(client)
    assert _sample(text, "livedh_first_audio_seconds_count") == 1
    assert _sample(text, "livedh_tts_first_chunk_seconds_count", engine="piper") == 1
    assert _sample(text, "livedh_frame_lateness_seconds_count") >= 1
    assert _sample(text, "livedh_session_errors_total", where="tts", code="provider_error") is None


async def test_a_refused_request_counts_with_its_reason(client):
    before = await _scrape(client)
    assert _sample(before, "livedh_rejected_requests_total", status="400", reason="invalid_input") is None
    resp = await client.post("/human", json={"sessionid": "not a number", "text": "hi"})
    assert resp.status == 400
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    text = await _scrape(client)
    assert _sample(text, "livedh_rejected_requests_total", status="400", reason="invalid_input") == 1
    assert _sample(text, "livedh_rejected_requests_total", status="404", reason="not_found") == 1


class _FailingTTS(TTSEngine):
    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        raise self.error
        yield  # an async generator, like every engine


@pytest.mark.parametrize("error, code", [
    (ProviderError("the TTS service is down"), "provider_error"),
    (RuntimeError("a bug"), "internal_error"),
])
async def test_a_session_error_counts_by_where_and_code(error, code):
    metrics = Metrics()
    engine = LipSyncEngine(LoudnessModel())
    session = Session(1, SessionConfig(), engine, _FailingTTS(error), metrics=metrics)
    try:
        session.say("hello")
        for _ in range(100):
            if session.errors:
                break
            await settle()
        text = metrics.exposition().decode()
        assert _sample(text, "livedh_session_errors_total", where="tts", code=code) == 1
        # the page hears of it, and the avatar listens again; a bug's own words stay in the log
        assert session.state().state == "listening"
        assert "a bug" not in session.errors[0]["msg"]
        assert not _sample(text, "livedh_tts_first_chunk_seconds_count", engine="failing")
    finally:
        await session.aclose()
        await engine.aclose()


async def test_asr_latency_is_observed_per_finished_turn():
    metrics = Metrics()
    engine = LipSyncEngine(LoudnessModel())

    async def atranscribe(audio, language=None, *, partial=False):
        return Transcript(text="", language="en")

    hearing = types.SimpleNamespace(asr=types.SimpleNamespace(atranscribe=atranscribe))
    session = Session(1, SessionConfig(), engine, _FailingTTS(RuntimeError()), metrics=metrics)
    try:
        await session._answering.transcribe_and_answer(np.zeros(1600, np.float32), "en", hearing)
        assert _sample(metrics.exposition().decode(), "livedh_asr_seconds_count") == 1
    finally:
        await session.aclose()
        await engine.aclose()


async def test_time_to_first_item_uses_the_clock_and_closes_the_stream():
    ticks = iter([10.0, 11.5])
    metrics = Metrics(clock=lambda: next(ticks))
    closed = []

    async def deltas():
        try:
            for word in ("one ", "two ", "three"):
                yield word
        finally:
            closed.append(True)

    stream = metrics.timed_llm(deltas())
    assert await anext(stream) == "one "
    await stream.aclose()  # a barge-in: the LLM request must stop now
    assert closed == [True]
    text = metrics.exposition().decode()
    assert _sample(text, "livedh_llm_first_token_seconds_sum") == 1.5
    assert _sample(text, "livedh_llm_first_token_seconds_bucket", le="1.5") == 1
    assert _sample(text, "livedh_llm_first_token_seconds_bucket", le="1.0") == 0


def test_label_values_stay_bounded():
    metrics = Metrics()
    metrics.count_rejected(400, "/api/v1/sessions/123456 <script>")
    metrics.count_error("tts", ProviderError("upstream http://10.0.0.5:8000 failed"))
    text = metrics.exposition().decode()
    assert _sample(text, "livedh_rejected_requests_total", status="400", reason="other") == 1
    assert "10.0.0.5" not in text and "123456" not in text
    assert bounded_label("rate_limited") == "rate_limited"
    assert bounded_label("Rate Limited") == "other"
