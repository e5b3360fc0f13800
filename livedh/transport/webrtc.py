"""WebRTC transport (aiortc): two tracks that read an AVChannel and pace from its clock."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from livedh.errors import InvalidInputError
from livedh.media.channel import AVChannel, ChannelClosed

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000
MIC_SAMPLE_RATE = 16000
#: label of the data channel the page opens for server events
EVENTS_LABEL = "events"


class ChannelVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, channel: AVChannel) -> None:
        super().__init__()
        self._channel = channel
        self._ticks_per_frame = VIDEO_CLOCK_RATE // channel.fps

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = await self._channel.next_video()
        except ChannelClosed:
            self.stop()
            raise MediaStreamError from None
        # Frame i is due at start + i / fps on the session clock shared with the audio track.
        await self._channel.clock.wait_until(frame.index / self._channel.fps)
        out = av.VideoFrame.from_ndarray(frame.video, format=self._channel.video_format)
        out.pts = frame.index * self._ticks_per_frame
        out.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        return out


class ChannelAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, channel: AVChannel) -> None:
        super().__init__()
        self._channel = channel

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            index, samples = await self._channel.next_audio()
        except ChannelClosed:
            self.stop()
            raise MediaStreamError from None
        block = self._channel.samples_per_block
        await self._channel.clock.wait_until(index * block / self._channel.sample_rate)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = self._channel.sample_rate
        out.pts = index * block
        out.time_base = Fraction(1, self._channel.sample_rate)
        return out


class WebRTCPeer:
    """One peer connection: sends a channel's audio and video; receives the person's microphone
    (when the offer sends audio) and a data channel for events (transcripts, state)."""

    def __init__(
        self, channel: AVChannel, on_state: Callable[[str], None] | None = None
    ) -> None:
        self._pc = RTCPeerConnection()
        self._video = ChannelVideoTrack(channel)
        self._audio = ChannelAudioTrack(channel)
        self._on_state = on_state
        self._closed = False
        #: 16 kHz mono int16 chunks from the microphone; None marks the end of the track
        self._mic: asyncio.Queue[np.ndarray | None] = asyncio.Queue(maxsize=500)
        self._mic_reader: asyncio.Task[None] | None = None
        self._mic_track: MediaStreamTrack | None = None
        self._events: RTCDataChannel | None = None
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("track", self._on_track)
        self._pc.on("datachannel", self._on_datachannel)

    @property
    def has_microphone(self) -> bool:
        return self._mic_track is not None

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._mic_reader is None and not self._closed:
            self._mic_track = track
            self._mic_reader = asyncio.create_task(self._read_mic(track), name="webrtc-mic")

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=MIC_SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):  # type: ignore[arg-type]
                    samples = out.to_ndarray().reshape(-1).astype(np.int16)
                    if self._mic.full():
                        self._mic.get_nowait()  # nobody listening: keep the newest audio
                    self._mic.put_nowait(samples)
        except MediaStreamError:
            pass
        finally:
            if self._mic.full():
                self._mic.get_nowait()
            self._mic.put_nowait(None)

    async def microphone(self) -> AsyncIterator[np.ndarray]:
        """The person's microphone as 16 kHz mono int16 chunks, until the track ends."""
        while True:
            chunk = await self._mic.get()
            if chunk is None:
                return
            yield chunk

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == EVENTS_LABEL:
            self._events = channel

    def send_event(self, event: dict[str, Any]) -> bool:
        """Send a JSON event to the page if its events channel is open."""
        channel = self._events
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(event, ensure_ascii=False))
        return True

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    def _state_changed(self) -> None:
        if self._on_state is not None:
            self._on_state(self.connection_state)

    async def accept(self, sdp: str, sdp_type: str) -> RTCSessionDescription:
        """Answer a browser's offer. Bad SDP raises InvalidInputError."""
        if sdp_type != "offer":
            raise InvalidInputError(f"type must be 'offer', got {sdp_type!r}")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise InvalidInputError("sdp is not a session description (it must start with 'v=0')")
        try:
            offer = RTCSessionDescription(sdp=sdp, type=sdp_type)
            await self._pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc's parser raises anything, AssertionError included
            raise InvalidInputError(
                f"could not parse the SDP offer ({type(exc).__name__}: {exc})"
            ) from exc
        kinds = {t.kind for t in self._pc.getTransceivers()}
        if "video" not in kinds and "audio" not in kinds:
            raise InvalidInputError("the offer has no audio or video media section")
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.sender.replaceTrack(self._video)
                transceiver.direction = "sendonly"
                codecs = RTCRtpSender.getCapabilities("video").codecs
                # VP8 first: with aiortc's encoder settings it costs less CPU per 512x512 frame
                # than x264 (bench/bench_encode.py); H.264 stays for clients without VP8.
                preferred = [c for c in codecs if c.name == "VP8"]
                preferred += [c for c in codecs if c.name in ("H264", "rtx")]
                transceiver.setCodecPreferences(preferred)
            elif transceiver.kind == "audio":
                transceiver.sender.replaceTrack(self._audio)
                # A page that sends its microphone offers sendrecv: receive it too.
                offered = getattr(transceiver, "_offerDirection", None)
                transceiver.direction = (
                    "sendrecv" if offered in ("sendrecv", "sendonly") else "sendonly"
                )
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        local = self._pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._video.stop()
        self._audio.stop()
        if self._mic_reader is not None:
            self._mic_reader.cancel()
            await asyncio.gather(self._mic_reader, return_exceptions=True)
        try:
            await asyncio.wait_for(self._pc.close(), timeout=5)
        except TimeoutError:
            logger.warning("event=pc_close_timeout")
