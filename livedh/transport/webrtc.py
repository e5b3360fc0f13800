"""WebRTC transport (aiortc): two tracks that read an AVChannel and pace from its clock."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from livedh.errors import InvalidInputError
from livedh.media.channel import AVChannel, ChannelClosed
from livedh.transport.encoding import OPUS_CLOCK_RATE, H264Encoder, OpusEncoder

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000
MIC_SAMPLE_RATE = 16000
#: label of the data channel the page opens for server events
EVENTS_LABEL = "events"


class PacketJitterBuffer(JitterBuffer):
    """An audio jitter buffer that hands on every packet as it arrives.

    aiortc's buffer holds 4 audio packets (80 ms) before decoding, and even holding one it
    waits for the next packet to prove a frame complete (a further 20 ms): a delay that every
    turn end and every barge-in would pay. An Opus packet is a whole frame, and speech
    recognition minds late audio more than a lost or reordered packet, so: in order, at once;
    a packet older than one already handed on is dropped.
    """

    def __init__(self, capacity: int = 16) -> None:
        super().__init__(capacity=capacity)
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last is not None:
            ahead = uint16_add(packet.sequence_number, -self._last)
            if ahead == 0 or ahead >= 0x8000:  # a duplicate, or behind what was handed on
                return False, None
        self._last = packet.sequence_number
        # The receiver stores the depayloaded payload on the packet (see RTCRtpReceiver).
        return False, JitterFrame(getattr(packet, "_data", packet.payload), packet.timestamp)


def use_packet_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Give ``receiver`` (an audio receiver) a :class:`PacketJitterBuffer`.

    aiortc has no setting for it, so this replaces a private attribute of aiortc 1.16; False,
    and aiortc's own buffer, when that is not there.
    """
    attribute = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attribute, None)
    if not isinstance(current, JitterBuffer):
        return False
    setattr(receiver, attribute, PacketJitterBuffer(current.capacity))
    return True


class ChannelVideoTrack(MediaStreamTrack):
    """Video frames of a channel, paced by its clock. With an encoder it hands aiortc encoded
    H.264 packets (encoded in ``encode_pool``); otherwise raw frames that aiortc encodes."""

    kind = "video"

    def __init__(self, channel: AVChannel) -> None:
        super().__init__()
        self._channel = channel
        self._ticks_per_frame = VIDEO_CLOCK_RATE // channel.fps
        self._encoder: H264Encoder | None = None
        self._pool: Executor | None = None
        self._keyframe_requested: Callable[[], bool] = lambda: False

    def release(self) -> None:
        """Drop the encoder (its buffers are megabytes) as soon as the stream ends."""
        self._encoder = None
        self._keyframe_requested = lambda: False

    def use_encoder(self, encoder: H264Encoder, pool: Executor,
                    keyframe_requested: Callable[[], bool]) -> None:
        self._encoder, self._pool, self._keyframe_requested = encoder, pool, keyframe_requested

    async def recv(self) -> av.VideoFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            try:
                frame = await self._channel.next_video()
            except ChannelClosed:
                self.stop()
                raise MediaStreamError from None
            if self._encoder is None:
                break
            keyframe = frame.index == 0 or self._keyframe_requested()
            packets = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._encoder.encode, frame.video, self._channel.video_format,
                frame.index, keyframe,
            )
            if packets:
                late = await self._channel.clock.wait_until(frame.index / self._channel.fps)
                self._channel.note_lateness(late)
                return packets[0] if len(packets) == 1 else _join(packets)
        # Frame i is due at start + i / fps on the session clock shared with the audio track.
        late = await self._channel.clock.wait_until(frame.index / self._channel.fps)
        self._channel.note_lateness(late)
        out = av.VideoFrame.from_ndarray(frame.video, format=self._channel.video_format)
        out.pts = frame.index * self._ticks_per_frame
        out.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        return out


def _join(packets: list[av.Packet]) -> av.Packet:
    joined = av.Packet(b"".join(bytes(p) for p in packets))
    joined.pts, joined.time_base = packets[0].pts, packets[0].time_base
    return joined


def negotiated_video_codec(sdp: str) -> str | None:
    """The codec of the first payload type of the first video section of ``sdp``."""
    return _negotiated_codec(sdp, "video")


def _negotiated_codec(sdp: str, kind: str) -> str | None:
    payload = None
    for line in sdp.splitlines():
        if line.startswith(f"m={kind}"):
            parts = line.split()
            payload = parts[3] if len(parts) > 3 else None
        elif payload and line.startswith(f"a=rtpmap:{payload} "):
            return line.split(" ", 1)[1].split("/")[0].upper()
    return None


class ChannelAudioTrack(MediaStreamTrack):
    """20 ms audio blocks of a channel, paced by its clock. With an encoder it hands aiortc
    Opus packets, the blocks of each frame encoded in one ``pool`` job; otherwise raw frames
    that aiortc encodes (one executor job per block, plus a level computed in Python)."""

    kind = "audio"

    def __init__(self, channel: AVChannel) -> None:
        super().__init__()
        self._channel = channel
        self._encoder: OpusEncoder | None = None
        self._pool: Executor | None = None
        self._encoded: deque[av.Packet] = deque()

    def use_encoder(self, encoder: OpusEncoder, pool: Executor) -> None:
        self._encoder, self._pool = encoder, pool

    def release(self) -> None:
        self._encoder = None
        self._encoded.clear()

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        channel = self._channel
        block = channel.samples_per_block
        if self._encoder is not None:
            if not self._encoded:
                # The blocks of one frame arrive together; at most a frame is encoded ahead, so
                # a barge-in still silences the stream within a frame period.
                first, blocks = await self._next(channel.samples_per_frame // block)
                self._encoded.extend(await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._encoder.encode, first, blocks
                ))
            if self._encoded:
                packet = self._encoded.popleft()
                await channel.clock.wait_until((packet.pts or 0) / OPUS_CLOCK_RATE)
                return packet
        index, samples = await self._next_one()
        await channel.clock.wait_until(index * block / channel.sample_rate)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = channel.sample_rate
        out.pts = index * block
        out.time_base = Fraction(1, channel.sample_rate)
        return out

    async def _next(self, most: int) -> tuple[int, list[np.ndarray]]:
        try:
            return await self._channel.next_audio_blocks(most)
        except ChannelClosed:
            self.stop()
            raise MediaStreamError from None

    async def _next_one(self) -> tuple[int, np.ndarray]:
        first, blocks = await self._next(1)
        return first, blocks[0]


def _take_keyframe_request(sender: RTCRtpSender) -> bool:
    """aiortc records a receiver's picture-loss request (PLI/FIR) in a private flag that only
    its own encoder reads; with our encoder we read and clear it, so a viewer who lost packets
    gets a keyframe now instead of at the next periodic one."""
    name = "_RTCRtpSender__force_keyframe"
    requested = bool(getattr(sender, name, False))
    if requested:
        setattr(sender, name, False)
    return requested


def screen_candidates(sdp: str, limit: int) -> str:
    """``sdp`` without the remote ICE candidates the server must never probe, refusing an offer
    with more than ``limit`` addresses to probe.

    Each remote candidate makes aioice send STUN checks to an address the client chose, so an
    offer with hundreds of them turns the server into a packet cannon. Kept: UDP candidates at
    a unicast IP address or an mDNS name (browsers hide their addresses behind ``.local``
    names); loopback and private addresses stay, as a LAN or test network uses them. Dropped:
    other transports (aioice only speaks UDP), multicast, unspecified and broadcast addresses,
    other host names, bad ports. Raises InvalidInputError (400).
    """
    lines = sdp.splitlines()
    total = sum(1 for line in lines if line.startswith("a=candidate:"))
    # browsers repeat their candidates in every media section, so a few lines each is normal
    if total > 4 * limit:
        raise InvalidInputError(
            f"the offer has {total} ICE candidate lines; at most {limit} addresses are accepted"
        )
    kept: list[str] = []
    targets: set[tuple[str, str]] = set()
    for line in lines:
        if line.startswith("a=candidate:"):
            target = _probe_target(line)
            if target is None:
                continue
            targets.add(target)
        kept.append(line)
    if len(targets) > limit:
        raise InvalidInputError(
            f"the offer has {len(targets)} ICE candidate addresses; at most {limit} are accepted"
        )
    return sdp if len(kept) == len(lines) else "\r\n".join(kept) + "\r\n"


def _probe_target(line: str) -> tuple[str, str] | None:
    """(address, port) a candidate line would have the server probe, or None to drop it."""
    bits = line[len("a=candidate:") :].split()
    if len(bits) < 8 or bits[2].lower() != "udp" or bits[6] != "typ":
        return None
    host, port = bits[4], bits[5]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.lower().endswith(".local"):
        return host.lower(), port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_multicast or address.is_unspecified or address == _BROADCAST:
        return None
    return str(address), port


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class WebRTCPeer:
    """One peer connection: sends a channel's audio and video; receives the person's microphone
    (when the offer sends audio) and a data channel for events (transcripts, state)."""

    def __init__(
        self, channel: AVChannel, on_state: Callable[[str], None] | None = None,
        encode_pool: Executor | None = None, frame_size: tuple[int, int] = (512, 512),
    ) -> None:
        """``encode_pool``: encode H.264 ourselves there (when negotiated); ``frame_size``:
        width and height of the channel's video."""
        self._pc = RTCPeerConnection()
        self._channel = channel
        self._encode_pool = encode_pool
        self._frame_size = frame_size
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

    async def accept(
        self, sdp: str, sdp_type: str, max_candidates: int = 16
    ) -> RTCSessionDescription:
        """Answer a browser's offer. Bad SDP, or more than ``max_candidates`` remote ICE
        candidates to probe, raises InvalidInputError."""
        if sdp_type != "offer":
            raise InvalidInputError(f"type must be 'offer', got {sdp_type!r}")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise InvalidInputError("sdp is not a session description (it must start with 'v=0')")
        sdp = screen_candidates(sdp, max_candidates)
        # Our transceivers exist before the offer is applied, so aiortc matches the offer's
        # sections to them and negotiates codecs in our order of preference.
        video = self._pc.addTransceiver(self._video, direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        # H.264 first: we encode it ourselves with real-time settings (encoding.py), the
        # cheapest option (bench/bench_encode.py); VP8 (aiortc's encoder) for the rest.
        preferred = [c for c in codecs if c.name == "H264"]
        preferred += [c for c in codecs if c.name in ("VP8", "rtx")]
        video.setCodecPreferences(preferred)
        # sendrecv: a page that sends its microphone gets it heard; aiortc answers sendonly to
        # an offer that only receives.
        audio = self._pc.addTransceiver(self._audio, direction="sendrecv")
        if not use_packet_jitter_buffer(audio.receiver):
            logger.warning("aiortc's audio jitter buffer could not be replaced: the "
                           "microphone is heard 80 ms later")
        try:
            offer = RTCSessionDescription(sdp=sdp, type=sdp_type)
            await self._pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc's parser raises anything, AssertionError included
            raise InvalidInputError(
                f"could not parse the SDP offer ({type(exc).__name__}: {exc})"
            ) from exc
        if not any(t.mid is not None for t in self._pc.getTransceivers()):
            raise InvalidInputError("the offer has no audio or video media section")
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        local = self._pc.localDescription
        if self._encode_pool is not None and _negotiated_codec(local.sdp, "audio") == "OPUS":
            self._audio.use_encoder(OpusEncoder(self._channel.sample_rate,
                                                self._channel.samples_per_block),
                                    self._encode_pool)
        if self._encode_pool is not None and negotiated_video_codec(local.sdp) == "H264":
            sender = next(t.sender for t in self._pc.getTransceivers() if t.kind == "video")
            width, height = self._frame_size
            self._video.use_encoder(
                H264Encoder(width, height, self._channel.fps), self._encode_pool,
                lambda: _take_keyframe_request(sender),
            )
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._video.stop()
        self._audio.stop()
        self._video.release()
        self._audio.release()
        self._on_state = None  # it refers back to the session: break the cycle
        if self._mic_reader is not None:
            self._mic_reader.cancel()
            await asyncio.gather(self._mic_reader, return_exceptions=True)
        self._events = None
        try:
            await asyncio.wait_for(self._pc.close(), timeout=5)
        except TimeoutError:
            logger.warning("event=pc_close_timeout")
