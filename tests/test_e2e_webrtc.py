"""End to end over real WebRTC: the real server and an aiortc client in a network namespace."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

from livedh.testing.live import LiveServer, live_server
from livedh.testing.netns import netns_available

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]

SENTENCE = "Hello! I am the default avatar. My lips move with my voice."
LONG = SENTENCE + " I can speak for as long as you like, and stop when you interrupt me."


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    with live_server(tmp_path_factory.mktemp("e2e"), "--max-sessions", "8") as srv:
        yield srv


def test_speech_and_lip_motion_arrive_in_sync(server):
    result = server.probe("--seconds", "9", "--say", SENTENCE, "--say-at", "1.0")
    print(result)
    assert result["errors"] == []
    assert result["video_size"] == [512, 512]
    assert 23.0 <= result["fps"] <= 27.0, result
    assert result["speech_seconds"] > 2.0, result
    assert result["first_audio_after_say_ms"] is not None
    # The mouth region moves with the speech envelope: well above chance (0), and at the
    # right time (the best lag is within one frame of zero).
    assert result["mouth_audio_corr"] > 0.5, result
    assert abs(result["best_lag_frames"]) <= 1, result
    log = server.log()
    sid = result["sessionid"]
    for event in ("connect", "speak_start", "speak_end", "close"):
        assert f"event={event} session={sid}" in log, event


def test_interrupt_silences_the_avatar(server):
    result = server.probe("--seconds", "5", "--say", LONG, "--say-at", "0.5",
                          "--interrupt-at", "2.5")
    assert result["errors"] == []
    assert result["silence_after_interrupt_ms"] is not None, result
    # Everything after the interrupt is silence (the speech would have lasted ~8 s).
    assert result["speech_seconds"] < 2.6, result
    assert f"event=interrupt session={result['sessionid']}" in server.log()


def test_bad_input_does_not_disturb_another_session(server):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(server.probe, "--seconds", "7", "--say", SENTENCE, "--say-at",
                                "0.5")
        time.sleep(2.0)
        assert server.get("/offer", "POST", raw="{oops")[0] == 400
        assert server.get("/offer", "POST", body={"sdp": "v=0\r\nbogus", "type": "offer"})[0] == 400
        assert server.get("/human", "POST", body={"sessionid": 42, "text": "hi"})[0] == 404
        assert server.get("/human", "POST", body={"sessionid": 42, "text": ""})[0] in (400, 404)
        status, body = server.get("/humanaudio", "POST", raw="x", content_type="text/plain")
        assert status == 400 and body["msg"]
        result = streaming.result(timeout=60)
    assert result["errors"] == []
    assert result["fps"] >= 23.0 and result["speech_seconds"] > 2.0, result
    assert server.process.poll() is None


def test_sessions_release_everything_when_peers_leave(server):
    # Warm up: engines and worker threads are created on first use and then shared.
    server.probe("--seconds", "1.5", "--say", "Warm up.", "--say-at", "0.2")
    baseline = _idle_runtime(server)
    for _ in range(10):
        server.probe("--seconds", "0.6")
    middle = _idle_runtime(server)
    for _ in range(10):
        server.probe("--seconds", "0.6")
    after = _idle_runtime(server)
    # Every task a session started is gone.
    assert after["tasks"] <= baseline["tasks"], (baseline, after)
    # Threads belong to bounded shared pools, never to a session: ten more sessions leave no
    # thread behind. Thread pools start threads lazily (when all of theirs are busy), so a
    # pool may still be growing after the first ten: each is held to its own size instead
    # (services.py, WhisperASR workers=2, PiperTTS workers=2, asyncio's default executor).
    cores = os.cpu_count() or 1
    pool_sizes = {"livedh-encode": cores, "livedh-asr": 2, "livedh-tts": 2, "asyncio": min(32, cores + 4)}
    counts_middle, counts_after = middle["thread_counts"], after["thread_counts"]
    for pool, count in counts_after.items():
        assert count <= max(counts_middle.get(pool, 0), pool_sizes.get(pool, 0)), (pool, middle, after)
    assert set(after["thread_names"]) <= {"MainThread", "asyncio", "livedh-asr", "livedh-encode",
                                          "livedh-lipsync", "livedh-tts"}, after


def _idle_runtime(server: LiveServer) -> dict:
    deadline = time.monotonic() + 30
    while True:
        _status, health = server.get("/api/v1/health")
        if health["sessions"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert health["sessions"] == 0
    time.sleep(1.0)  # let executor threads that finished their last job settle
    return server.get("/api/v1/health")[1]["runtime"]
