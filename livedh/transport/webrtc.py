"""WebRTC transport (aiortc): two tracks that read an AVChannel and pace from its clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from livedh.errors import InvalidInputError
from livedh.media.channel import AVChannel, ChannelClosed

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000


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
    """One peer connection sending a channel's audio and video to a browser."""

    def __init__(
        self, channel: AVChannel, on_state: Callable[[str], None] | None = None
    ) -> None:
        self._pc = RTCPeerConnection()
        self._video = ChannelVideoTrack(channel)
        self._audio = ChannelAudioTrack(channel)
        self._on_state = on_state
        self._closed = False
        self._pc.on("connectionstatechange", self._state_changed)

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
                transceiver.direction = "sendonly"
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
        try:
            await asyncio.wait_for(self._pc.close(), timeout=5)
        except TimeoutError:
            logger.warning("event=pc_close_timeout")
