"""Issue 11, exhaustion: uploads that decode to hours, video bombs, an unbounded build queue,
offers that never finish ICE, and offers that make the server probe hundreds of addresses."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import io
import os
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from livedh.avatar import build as build_mod
from livedh.avatar.build import BuildParams, build_avatar, discard_unfinished, work_dir
from livedh.config import AppConfig, AvatarBuildConfig, ServerConfig, TTSConfig
from livedh.errors import CapacityError, InvalidInputError, PayloadTooLargeError
from livedh.lipsync.engine import LipSyncEngine
from livedh.media.pcm import decode_audio_bytes
from livedh.server.app import create_app
from livedh.server.services import SERVICES
from livedh.session.manager import SessionManager
from livedh.testing.talking_video import VideoSpec, write_talking_video
from livedh.transport.webrtc import screen_candidates
from tests.fakes import LoudnessModel
from tests.test_server import FakeRegistry, _fake_services, _offer_sdp, _wav

# --- helpers ---------------------------------------------------------------------------------


def flac_of_silence(seconds: float, rate: int = 8000) -> bytes:
    """A FLAC file of ``seconds`` of silence: a few kilobytes per 10 minutes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        total = int(seconds * rate)
        for pts in range(0, total, 16384):
            block = np.zeros((1, min(16384, total - pts)), np.int16)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def blank_video(path: Path, seconds: float, size: tuple[int, int], fps: int = 25) -> Path:
    """A flat grey H.264 video: tiny however long it is."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        image = np.full((size[1], size[0], 3), 90, np.uint8)
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _form(**fields: object) -> FormData:
    form = FormData()
    for key, value in fields.items():
        if isinstance(value, Path):
            form.add_field(key, value.read_bytes(), filename=value.name, content_type="video/mp4")
        elif isinstance(value, bytes):
            form.add_field(key, value, filename="a.flac", content_type="application/octet-stream")
        else:
            form.add_field(key, str(value))
    return form


async def _error(response, status: int) -> str:
    body = await response.json()
    assert response.status == status, body
    assert body["code"] == -1 and body["msg"], body
    return str(body["msg"])


@pytest.fixture(scope="module")
def offer_sdp():
    return asyncio.run(_offer_sdp())


# --- audio uploads ---------------------------------------------------------------------------


def test_an_audio_bomb_is_refused_holding_no_more_than_the_cap():
    bomb = flac_of_silence(20 * 60)
    assert len(bomb) < 400_000  # and decodes to 38 MB at 16 kHz
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError, match="longer than the limit of 10 s"):
            decode_audio_bytes(bomb, max_seconds=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 10 s at 16 kHz int16 is 320 kB; holding the whole decode would peak above 38 MB
    assert peak < 2_000_000, peak
    # under the cap it decodes as before
    assert len(decode_audio_bytes(flac_of_silence(3), max_seconds=10)) == 3 * 16000


async def test_uploaded_audio_longer_than_the_cap_is_413_on_both_routes(offer_sdp):
    config = AppConfig(server=ServerConfig(max_upload_seconds=5.0), tts=TTSConfig(engine="piper"))
    async with TestClient(TestServer(create_app(config, _fake_services))) as client:
        offer = await client.post("/offer", json={"sdp": offer_sdp, "type": "offer"})
        sid = (await offer.json())["sessionid"]
        bomb = flac_of_silence(20 * 60)
        msg = await _error(await client.post("/humanaudio", data=_form(sessionid=sid, file=bomb)), 413)
        assert "5 s" in msg and "/" not in msg
        url = f"/api/v1/sessions/{sid}/audio"
        await _error(await client.post(url, data=_form(sessionid=sid, file=bomb)), 413)
        ok = await client.post("/humanaudio", data=_form(sessionid=sid, file=_wav(1.0)))
        assert ok.status == 200, await ok.text()


# --- avatar uploads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    good, _ = write_talking_video(folder / "good.mp4", VideoSpec(seconds=2.0, size=(384, 384)))
    return {
        "good": good,
        "long": blank_video(folder / "long.mp4", 60.0, (64, 64)),
        "large": blank_video(folder / "large.mp4", 1.2, (640, 360)),
        "many": blank_video(folder / "many.mp4", 3.0, (64, 64), fps=50),
    }


def _avatar_config(tmp_path: Path, **build: object) -> AppConfig:
    limits: dict[str, object] = {"min_seconds": 1.0, "max_side": 384, "max_upload_bytes": 3_000_000}
    return AppConfig(
        tts=TTSConfig(engine="piper"),
        avatars_dir=tmp_path / "avatars",
        avatar_build=AvatarBuildConfig(**{**limits, **build}),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("video", "limits", "words"),
    [
        ("long", {"max_seconds": 20.0}, "longer than the limit of 20 s"),
        ("large", {"max_input_pixels": 320 * 240}, "640x360"),
        ("many", {"max_frames": 100}, "more than the limit of 100 frames"),
    ],
)
async def test_video_bombs_are_refused_before_any_job_starts(tmp_path, videos, video, limits, words):
    app = create_app(_avatar_config(tmp_path, **limits), _fake_services)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/api/v1/avatars", data=_form(name="bomb", file=videos[video]))
        msg = await _error(response, 413)
        assert words in msg and str(tmp_path) not in msg
        listing = await (await client.get("/api/v1/avatars")).json()
        assert listing["jobs"] == []
    uploads = tmp_path / "avatars" / ".uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_a_container_that_lies_past_the_probe_is_stopped_while_decoding(videos, tmp_path, monkeypatch):
    probe = build_mod.probe_video

    def lying_probe(path: Path, params: BuildParams) -> build_mod.VideoInfo:
        return probe(path, dataclasses.replace(params, max_frames=None))

    monkeypatch.setattr(build_mod, "probe_video", lying_probe)
    params = BuildParams(min_seconds=1.0, max_side=384, max_frames=20)
    with pytest.raises(PayloadTooLargeError, match="20 frames"):
        build_avatar(videos["good"], "liar", tmp_path, params, progress=False)
    assert not work_dir(tmp_path, "liar").exists() and not (tmp_path / "liar").exists()


async def test_the_build_queue_is_bounded(tmp_path, videos):
    app = create_app(_avatar_config(tmp_path, max_queued=1), _fake_services)
    async with TestClient(TestServer(app)) as client:
        first = await client.post("/api/v1/avatars", data=_form(name="one", file=videos["good"]))
        assert first.status == 202, await first.text()
        second = await client.post("/api/v1/avatars", data=_form(name="two", file=videos["good"]))
        body = await second.json()
        assert second.status == 429 and body["retryable"] is True, body
        job_id = (await first.json())["job"]["id"]
        assert (await client.delete(f"/api/v1/avatars/jobs/{job_id}")).status == 200
        third = await client.post("/api/v1/avatars", data=_form(name="two", file=videos["good"]))
        assert third.status == 202, await third.text()


async def test_a_cancelled_build_leaves_no_work_folder_or_lock_and_keeps_the_old_avatar(tmp_path, videos):
    avatars = tmp_path / "avatars"
    (avatars / "keep").mkdir(parents=True)
    (avatars / "keep" / "manifest.json").write_text("{}")
    app = create_app(_avatar_config(tmp_path), _fake_services)
    async with TestClient(TestServer(app)) as client:
        form = _form(name="keep", replace="true", file=videos["good"])
        response = await client.post("/api/v1/avatars", data=form)
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job"]["id"]
        # the child process has started writing its work folder (no event crosses processes)
        async with asyncio.timeout(60):
            while not (work_dir(avatars, "keep") / "steps").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        job = await (await client.delete(f"/api/v1/avatars/jobs/{job_id}")).json()
        assert job["state"] == "cancelled"
    left = sorted(p.name for p in avatars.iterdir() if p.name != ".uploads")
    assert left == ["keep"], left
    assert (avatars / "keep" / "manifest.json").read_text() == "{}"


def test_discard_unfinished_restores_an_avatar_moved_aside_and_spares_other_names(tmp_path):
    (tmp_path / ".x.work" / "frames").mkdir(parents=True)
    (tmp_path / ".x.lock").write_text("")
    (tmp_path / ".x.build-abcd1234").mkdir()
    (tmp_path / ".x.old-efgh5678" / "avatar").mkdir(parents=True)
    (tmp_path / ".x.old-efgh5678" / "avatar" / "manifest.json").write_text("old")
    (tmp_path / ".x.build-other.work").mkdir()  # the work folder of avatar "x.build-other"
    assert discard_unfinished(tmp_path, "x") is True
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".x.build-other.work", "x"], names
    assert (tmp_path / "x" / "manifest.json").read_text() == "old"


def test_discard_unfinished_touches_nothing_while_a_build_holds_the_lock(tmp_path):
    (tmp_path / ".y.work").mkdir()
    fd = os.open(tmp_path / ".y.lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert discard_unfinished(tmp_path, "y") is False
        assert (tmp_path / ".y.work").is_dir() and (tmp_path / ".y.lock").exists()
    finally:
        os.close(fd)


def test_video_defaults_are_sane():
    c = AvatarBuildConfig()
    assert c.max_upload_bytes <= 512 * 2**20 and c.max_seconds <= 600 and c.max_queued >= 1
    assert c.max_input_pixels <= 3840 * 2160


# --- ICE -------------------------------------------------------------------------------------


def _with_candidates(sdp: str, lines: list[str]) -> str:
    return sdp.rstrip("\r\n") + "\r\n" + "".join(f"{line}\r\n" for line in lines)


def _candidate(i: int, host: str, transport: str = "udp", port: int = 40000) -> str:
    return f"a=candidate:{i} 1 {transport} 2122260223 {host} {port + i} typ host"


def test_candidates_the_server_must_not_probe_are_dropped(offer_sdp):
    junk = [
        _candidate(1, "224.0.0.1"), _candidate(2, "0.0.0.0"), _candidate(3, "255.255.255.255"),
        _candidate(4, "10.0.0.7", transport="tcp"), _candidate(5, "example.com"),
        _candidate(6, "ff02::1"), _candidate(7, "10.0.0.7", port=70000),
    ]  # fmt: skip
    good = [_candidate(8, "10.0.0.7"), _candidate(9, "127.0.0.1"), _candidate(10, "abc-def.local")]
    screened = screen_candidates(_with_candidates(offer_sdp, junk + good), limit=16)
    for line in junk:
        assert line not in screened
    for line in good:
        assert line in screened
    # an ordinary offer is passed on untouched
    assert screen_candidates(offer_sdp, limit=16) == offer_sdp


def test_more_candidates_than_the_cap_are_refused(offer_sdp):
    flood = _with_candidates(offer_sdp, [_candidate(i, f"10.1.{i // 250}.{i % 250}") for i in range(400)])
    with pytest.raises(InvalidInputError, match=r"4\d\d ICE candidate lines"):
        screen_candidates(flood, limit=16)
    seventeen = _with_candidates(offer_sdp, [_candidate(i, f"10.2.0.{i + 1}") for i in range(17)])
    with pytest.raises(InvalidInputError, match="at most 16"):
        screen_candidates(seventeen, limit=16)
    # the same address repeated in every media section counts once
    bare = "".join(f"{line}\r\n" for line in offer_sdp.splitlines() if not line.startswith("a=candidate:"))
    repeated = _with_candidates(bare, [_candidate(0, "10.3.0.1")] * 3)
    assert screen_candidates(repeated, limit=1)


async def test_an_offer_with_400_candidates_is_a_400_before_any_session(offer_sdp):
    flood = _with_candidates(offer_sdp, [_candidate(i, f"10.1.{i // 250}.{i % 250}") for i in range(400)])
    config = AppConfig(server=ServerConfig(), tts=TTSConfig(engine="piper"))
    async with TestClient(TestServer(create_app(config, _fake_services))) as client:
        msg = await _error(await client.post("/offer", json={"sdp": flood, "type": "offer"}), 400)
        assert "candidate" in msg
        assert len(client.app[SERVICES].sessions) == 0


@pytest.fixture
async def make_manager():
    made: list[tuple[SessionManager, LipSyncEngine]] = []

    def make(**server: object) -> SessionManager:
        engine = LipSyncEngine(LoudnessModel())
        config = AppConfig(server=ServerConfig(**server), tts=TTSConfig(engine="piper"))  # type: ignore[arg-type]
        manager = SessionManager(config, engine, FakeRegistry())  # type: ignore[arg-type]
        made.append((manager, engine))
        return manager

    yield make
    for manager, engine in made:
        await manager.aclose()
        await engine.aclose()


async def _until_empty(manager: SessionManager) -> None:
    """Waits for the connect-timeout watchers; the timeout guards a hang, it times nothing."""
    await asyncio.wait_for(asyncio.gather(*manager._watchers.values()), 10)
    assert len(manager) == 0


async def test_sessions_that_never_finish_ice_are_reclaimed(make_manager, offer_sdp):
    assert ServerConfig().connect_timeout <= 10
    manager = make_manager(connect_timeout=0.05)
    session, _, _ = await manager.open_webrtc(offer_sdp, "offer")
    assert session.connection == "connecting" and len(manager) == 1
    await _until_empty(manager)
    assert session.connection == "closed"


async def test_sessions_still_connecting_cannot_hold_every_slot(make_manager, offer_sdp):
    assert ServerConfig(max_sessions=16).connecting_limit == 8
    assert ServerConfig(max_sessions=2).connecting_limit == 2
    manager = make_manager(max_sessions=8, max_connecting=2, connect_timeout=0.2)
    await manager.open_webrtc(offer_sdp, "offer")
    await manager.open_webrtc(offer_sdp, "offer")
    with pytest.raises(CapacityError, match="still connecting"):
        await manager.open_webrtc(offer_sdp, "offer")
    await _until_empty(manager)
    await manager.open_webrtc(offer_sdp, "offer")  # the slots came back
    assert len(manager) == 1
