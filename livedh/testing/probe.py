"""A WebRTC client that connects to a livedh server and measures what a viewer gets.

`livedh probe URL --say "Hello"` prints JSON: connection time, delivered fps and frame gaps,
time from the /human request to the first speech audio, time from an interrupt to silence, and
how well mouth motion follows the speech (correlation, and the A/V offset where it peaks).
Both streams are timed by their own RTP timestamps relative to their first frame: the server
starts audio and video on one clock, so equal relative times mean equal session times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livedh.media.pcm import decode_audio_bytes
from livedh.transport.webrtc import use_packet_jitter_buffer

SPEECH_RMS = 300.0  # int16 RMS above which a 20 ms audio frame counts as speech


@dataclass
class ProbeResult:
    sessionid: int = 0
    connect_s: float = 0.0
    video_frames: int = 0
    video_size: tuple[int, int] = (0, 0)
    fps: float = 0.0
    frame_gap_p50_ms: float = 0.0
    frame_gap_p99_ms: float = 0.0
    frame_gap_max_ms: float = 0.0
    audio_seconds: float = 0.0
    speech_seconds: float = 0.0
    first_audio_after_say_ms: float | None = None
    silence_after_interrupt_ms: float | None = None
    #: microphone clips played: [start, end, end of the voice in it] client seconds after
    #: connecting
    mic_segments: list[list[float]] = field(default_factory=list)
    #: end of the voice in the first clip -> first avatar speech at the client
    answer_after_speech_end_ms: float | None = None
    #: start of a later clip spoken over the avatar -> its audio silent
    silence_after_talk_over_ms: float | None = None
    #: the server's barge-in event arriving (its VAD confirmed the talk-over) -> audio silent
    silence_after_barge_in_ms: float | None = None
    #: events received on the data channel: [seconds after connecting, event]
    events: list[list[Any]] = field(default_factory=list)
    mouth_audio_corr: float | None = None
    best_lag_frames: int | None = None
    best_lag_corr: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Recording:
    video: list[tuple[float, float, float]] = field(default_factory=list)  # arrival, pts_s, mouth
    audio: list[tuple[float, float, float, float]] = field(default_factory=list)  # arr, pts, dur, rms
    size: tuple[int, int] = (0, 0)


class ScriptedMicrophone(MediaStreamTrack):
    """A microphone that plays given 16 kHz clips at given times and silence otherwise."""

    kind = "audio"

    def __init__(self, clips: list[tuple[float, np.ndarray]]) -> None:
        super().__init__()
        self._clips = sorted(clips, key=lambda c: c[0])
        self._start: float | None = None
        self._index = 0
        self.played: list[list[float]] = []  # [start, end, voice end] monotonic times

    def play_in(self, delay: float, clip: np.ndarray) -> None:
        """Schedule ``clip`` ``delay`` seconds from now."""
        now = 0.0 if self._start is None else time.monotonic() - self._start
        # On the 20 ms block grid, so the clip starts exactly at a block.
        self._clips.append((round((now + delay) / 0.02) * 0.02, clip))

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = self._index * 0.02
        block = np.zeros(320, np.int16)
        for at, clip in self._clips:
            offset = round((t - at) * 16000)
            if 0 <= offset < len(clip):
                part = clip[offset : offset + 320]
                block[: len(part)] = part
                if offset == 0:
                    end = due + len(clip) / 16000
                    self.played.append([due, end, due + voice_end(clip)])
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.pts = self._index * 320
        frame.time_base = Fraction(1, 16000)
        self._index += 1
        return frame


def voice_end(clip: np.ndarray) -> float:
    """Seconds into ``clip`` where its voice ends: the end of its last 20 ms block louder than
    SPEECH_RMS (recorded speech trails off into silence; the turn's wait starts at the voice)."""
    blocks = len(clip) // 320
    if not blocks:
        return len(clip) / 16000
    rms = np.sqrt(np.mean(clip[: blocks * 320].astype(np.float64).reshape(blocks, 320) ** 2, axis=1))
    loud = np.flatnonzero(rms > SPEECH_RMS)
    return (int(loud[-1]) + 1) * 0.02 if len(loud) else len(clip) / 16000


class _CountingDecoder:
    """Stands in for aiortc's video decoder in light mode: one tiny frame per received encoded
    frame, with its timestamp, so a load test's clients cost (almost) no CPU."""

    def decode(self, encoded_frame: Any) -> list[av.VideoFrame]:
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts = encoded_frame.timestamp
        frame.time_base = Fraction(1, 90000)
        return [frame]


def use_light_video_decoder() -> None:
    import aiortc.rtcrtpreceiver as receiver

    real = receiver.get_decoder

    def get_decoder(codec: Any) -> Any:
        return _CountingDecoder() if codec.mimeType.lower().startswith("video/") else real(codec)

    receiver.get_decoder = get_decoder


def _mouth_metric(rgb: np.ndarray, box: tuple[int, int, int, int] | None,
                  ref: list[np.ndarray]) -> float:
    if box is None:
        return 0.0
    x0, y0, x1, y1 = box
    crop = rgb[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    if not ref:
        ref.append(crop)
        return 0.0
    return float(np.abs(crop - ref[0]).mean())


async def _timed_frames(track: MediaStreamTrack) -> AsyncIterator[tuple[Any, float, float]]:
    """(frame, arrival time, seconds since the track's first frame by its timestamps)."""
    first_pts: int | None = None
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        arrival = time.monotonic()
        pts = int(frame.pts or 0)
        first_pts = pts if first_pts is None else first_pts
        rel = float((pts - first_pts) * frame.time_base) if frame.time_base else 0.0
        yield frame, arrival, rel


async def _record_video(track: MediaStreamTrack, rec: _Recording,
                        box: tuple[int, int, int, int] | None, avatar_size: tuple[int, int],
                        light: bool = False) -> None:
    ref: list[np.ndarray] = []
    async for frame, arrival, rel in _timed_frames(track):
        rec.size = (frame.width, frame.height)
        if light:  # timing only: leave the CPU to the server being measured
            rec.video.append((arrival, rel, 0.0))
            continue
        rgb = frame.to_ndarray(format="rgb24")
        scaled = box
        if box is not None and avatar_size[0] and rec.size != avatar_size:
            sx, sy = rec.size[0] / avatar_size[0], rec.size[1] / avatar_size[1]
            scaled = (int(box[0] * sx), int(box[1] * sy), int(box[2] * sx), int(box[3] * sy))
        rec.video.append((arrival, rel, _mouth_metric(rgb, scaled, ref)))


async def _record_audio(track: MediaStreamTrack, rec: _Recording) -> None:
    async for frame, arrival, rel in _timed_frames(track):
        samples = frame.to_ndarray().astype(np.float32)
        duration = frame.samples / frame.sample_rate
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        rec.audio.append((arrival, rel, duration, rms))


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 10 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def analyse(rec: _Recording, result: ProbeResult, say_at: float | None,
            interrupt_at: float | None) -> None:
    video = np.array(rec.video) if rec.video else np.zeros((0, 3))
    audio = np.array(rec.audio) if rec.audio else np.zeros((0, 4))
    result.video_frames = len(video)
    result.video_size = rec.size
    if len(video) > 1:
        span = video[-1, 0] - video[0, 0]
        result.fps = round((len(video) - 1) / span, 2) if span > 0 else 0.0
        gaps = np.diff(video[:, 0]) * 1000
        result.frame_gap_p50_ms = round(float(np.percentile(gaps, 50)), 1)
        result.frame_gap_p99_ms = round(float(np.percentile(gaps, 99)), 1)
        result.frame_gap_max_ms = round(float(gaps.max()), 1)
    if len(audio):
        speech = audio[:, 3] > SPEECH_RMS
        result.audio_seconds = round(float(audio[:, 2].sum()), 3)
        result.speech_seconds = round(float(audio[speech, 2].sum()), 3)
        if say_at is not None:
            after = audio[(audio[:, 0] >= say_at) & speech]
            if len(after):
                result.first_audio_after_say_ms = round((after[0, 0] - say_at) * 1000, 1)
        if interrupt_at is not None:
            # Silence = the first arrival after the interrupt from which no speech follows.
            after = audio[audio[:, 0] >= interrupt_at]
            loud = np.nonzero(after[:, 3] > SPEECH_RMS)[0]
            quiet_from = 0 if not len(loud) else loud[-1] + 1
            if quiet_from < len(after):
                result.silence_after_interrupt_ms = round(
                    (after[quiet_from, 0] - interrupt_at) * 1000, 1
                )
    if len(video) > 20 and len(audio):
        # Audio envelope over each video frame's 40 ms, on the shared relative clock.
        period = float(np.median(np.diff(video[:, 1]))) or 0.04
        envelope = np.zeros(len(video))
        for i, (_, pts, _) in enumerate(video):
            sel = (audio[:, 1] >= pts) & (audio[:, 1] < pts + period)
            envelope[i] = audio[sel, 3].mean() if sel.any() else 0.0
        mouth = video[:, 2]
        result.mouth_audio_corr = _round(_correlation(mouth, envelope))
        best: tuple[int, float] | None = None
        for lag in range(-6, 7):
            a = mouth[max(lag, 0) : len(mouth) + min(lag, 0)]
            b = envelope[max(-lag, 0) : len(envelope) + min(-lag, 0)]
            c = _correlation(a, b)
            if c is not None and (best is None or c > best[1]):
                best = (lag, c)
        if best is not None:
            result.best_lag_frames, result.best_lag_corr = best[0], _round(best[1])


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


async def probe(base_url: str, seconds: float, say: str | None = None, say_at: float = 1.0,
                mode: str = "echo", interrupt_at: float | None = None,
                offer_extra: dict[str, Any] | None = None, light: bool = False,
                hold: float = 0.0,
                mic_clips: list[tuple[float, np.ndarray]] | None = None,
                talk_over: tuple[float, np.ndarray] | None = None,
                packet_buffer: bool = False) -> ProbeResult:
    """Watch a session for ``seconds``; ``hold`` keeps the connection open that much longer
    without recording (benchmarks use it to overlap sessions)."""
    result = ProbeResult()
    rec = _Recording()
    if light:
        use_light_video_decoder()  # this process is a measuring client: patching it is fine
    pc = RTCPeerConnection()
    tasks: list[asyncio.Task[None]] = []
    pc.addTransceiver("video", direction="recvonly")
    mic = ScriptedMicrophone(mic_clips or []) if (mic_clips or talk_over) else None
    if mic is not None:
        audio = pc.addTransceiver(mic, direction="sendrecv")
    else:
        audio = pc.addTransceiver("audio", direction="recvonly")
    if packet_buffer:
        # What the server delivers, without the fixed 80 ms aiortc adds before decoding.
        use_packet_jitter_buffer(audio.receiver)
    received_events: list[tuple[float, Any]] = []
    channel = pc.createDataChannel("events")

    pending_talk_over = [talk_over] if talk_over is not None else []

    @channel.on("message")
    def on_message(message: str) -> None:
        event = json.loads(message)
        received_events.append((time.monotonic(), event))
        # Talk over the avatar a set time after it starts speaking (its first answer).
        if event.get("state") == "speaking" and pending_talk_over and mic is not None:
            delay, clip = pending_talk_over.pop()
            mic.play_in(delay, clip)

    async with aiohttp.ClientSession(base_url) as http:
        avatar: dict[str, Any] = {}
        async with http.get("/api/v1/avatar") as resp:
            if resp.status == 200:
                avatar = await resp.json()
        box = tuple(avatar["mouth_box"]) if avatar.get("mouth_box") else None
        avatar_size = (int(avatar.get("width", 0)), int(avatar.get("height", 0)))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                tasks.append(asyncio.ensure_future(
                    _record_video(track, rec, box, avatar_size, light)))
            else:
                tasks.append(asyncio.ensure_future(_record_audio(track, rec)))

        started = time.monotonic()
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                **(offer_extra or {})}
        async with http.post("/offer", json=body) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"/offer failed: {resp.status} {answer}")
        result.sessionid = int(answer["sessionid"])
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        while pc.connectionState not in ("connected", "failed", "closed"):
            if time.monotonic() - started > 15:
                break
            await asyncio.sleep(0.01)
        result.connect_s = round(time.monotonic() - started, 3)
        if pc.connectionState != "connected":
            result.errors.append(f"connection state {pc.connectionState}")
        t0 = time.monotonic()
        say_time = interrupt_time = None
        events = []
        if say:
            events.append((say_at, "say"))
        if interrupt_at is not None:
            events.append((interrupt_at, "interrupt"))
        for at, kind in sorted(events):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            if kind == "say":
                say_time = time.monotonic()
                payload = {"sessionid": result.sessionid, "text": say, "type": mode,
                           "interrupt": False}
                async with http.post("/human", json=payload) as resp:
                    if resp.status != 200:
                        result.errors.append(f"/human {resp.status} {await resp.text()}")
            else:
                interrupt_time = time.monotonic()
                async with http.post("/interrupt_talk",
                                     json={"sessionid": result.sessionid}) as resp:
                    if resp.status != 200:
                        result.errors.append(f"/interrupt_talk {resp.status}")
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        mic_played = list(mic.played) if mic is not None else []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if hold:
            await asyncio.sleep(hold)
        await pc.close()
    analyse(rec, result, say_time, interrupt_time)
    result.events = [[round(t - t0, 3), e] for t, e in received_events]
    result.mic_segments = [[round(t - t0, 3) for t in segment] for segment in mic_played]
    analyse_conversation(rec, result, mic_played, received_events)
    return result


def analyse_conversation(rec: _Recording, result: ProbeResult, played: list[list[float]],
                         events: list[tuple[float, Any]]) -> None:
    """First clip: a question, answered by the avatar. Later clips: talking over the avatar."""
    if not played or not rec.audio:
        return
    audio = np.array(rec.audio)
    speech = audio[:, 3] > SPEECH_RMS
    voice_ended = played[0][2]
    answer = audio[(audio[:, 0] >= voice_ended) & speech]
    if len(answer):
        result.answer_after_speech_end_ms = round((answer[0, 0] - voice_ended) * 1000, 1)
    for start, _, _ in played[1:]:
        before = audio[(audio[:, 0] >= start - 0.3) & (audio[:, 0] < start)]
        if not len(before) or not (before[:, 3] > SPEECH_RMS).any():
            continue  # the avatar was not speaking: nothing to interrupt
        # Silent = the first block after which 0.5 s stays quiet (the avatar may answer the
        # interruption later; that is a new reply, not a failure to stop).
        after = audio[audio[:, 0] >= start]
        quiet = after[:, 3] <= SPEECH_RMS
        run = 25
        for i in range(len(after) - run):
            if quiet[i : i + run].all():
                result.silence_after_talk_over_ms = round((after[i, 0] - start) * 1000, 1)
                barge_in = [t for t, e in events if e.get("type") == "barge_in" and t >= start]
                if barge_in:
                    result.silence_after_barge_in_ms = round((after[i, 0] - barge_in[0]) * 1000, 1)
                break


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8010")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to watch")
    parser.add_argument("--say", default=None, help="text to send with /human")
    parser.add_argument("--say-at", type=float, default=1.0, help="seconds after connecting")
    parser.add_argument("--mode", default="echo", choices=["echo", "chat"])
    parser.add_argument("--interrupt-at", type=float, default=None)
    parser.add_argument("--tts", default=None, help="TTS engine for the session")
    parser.add_argument("--light", action="store_true",
                        help="time frames only (no pixel analysis): for load tests")
    parser.add_argument("--mic", nargs=2, action="append", metavar=("SECONDS", "WAV"),
                        default=[], help="play WAV as the microphone at SECONDS (repeatable)")
    parser.add_argument("--talk-over", nargs=2, metavar=("DELAY", "WAV"), default=None,
                        help="play WAV as the microphone DELAY s after the avatar starts speaking")
    parser.add_argument("--packet-buffer", action="store_true",
                        help="decode each audio packet as it arrives (as the server does for "
                             "the microphone) instead of after aiortc's 4-packet buffer")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="stay connected this many seconds after measuring")


def run(args: argparse.Namespace) -> int:
    extra = {"tts": {"engine": args.tts}} if args.tts else None
    try:
        clips = [(float(at), decode_audio_bytes(Path(path).read_bytes())) for at, path in args.mic]
        over = None
        if args.talk_over:
            over = (float(args.talk_over[0]), decode_audio_bytes(Path(args.talk_over[1]).read_bytes()))
        result = asyncio.run(probe(args.url, args.seconds, args.say, args.say_at, args.mode,
                                   args.interrupt_at, extra, args.light, args.hold, clips, over,
                                   args.packet_buffer))
    except (aiohttp.ClientError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result)))
    return 0 if not result.errors else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="livedh probe")
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
