"""Edge: Microsoft's online neural voices through the ``edge-tts`` package (extra "edge")."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import av
import numpy as np

from livedh.errors import InvalidInputError, MissingDependencyError, ProviderError
from livedh.media.pcm import PcmChunk
from livedh.tts.base import TTSEngine
from livedh.tts.text import validate_voice

log = logging.getLogger(__name__)


class Mp3StreamDecoder:
    """Decodes MP3 bytes cut at arbitrary points into mono int16 PCM (keeps parser state)."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("mp3", "r")
        self._resampler: av.AudioResampler | None = None
        self.sample_rate: int | None = None

    def decode(self, data: bytes) -> np.ndarray:
        """Samples completed by ``data``; empty bytes flush the decoder at the end."""
        parts: list[np.ndarray] = []
        packets = self._codec.parse(data) if data else self._codec.parse(None)
        for packet in packets:
            parts.extend(self._decode_packet(packet))
        if not data:
            parts.extend(self._decode_packet(None))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def _decode_packet(self, packet: av.Packet | None) -> list[np.ndarray]:
        try:
            frames = self._codec.decode(packet)
        except av.error.InvalidDataError:
            # One corrupt frame should not end the utterance; the next frame resyncs.
            log.debug("skipped an undecodable mp3 packet")
            return []
        out = []
        for frame in frames:
            if not isinstance(frame, av.AudioFrame):
                continue
            if self._resampler is None:
                self.sample_rate = frame.sample_rate
                self._resampler = av.AudioResampler(
                    format="s16", layout="mono", rate=frame.sample_rate
                )
            for converted in self._resampler.resample(frame):
                out.append(converted.to_ndarray().reshape(-1).astype(np.int16))
        return out


class EdgeTTS(TTSEngine):
    """Online voices such as ``en-US-AriaNeural`` or ``zh-CN-XiaoxiaoNeural``."""

    name = "edge"
    default_voice = "en-US-AriaNeural"

    def __init__(self, *, connect_timeout: int = 10, receive_timeout: int = 30):
        self._connect_timeout = connect_timeout
        self._receive_timeout = receive_timeout
        # MP3 decoding is CPU work: keep it off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="livedh-tts-edge")

    def problem(self) -> str | None:
        """Why this engine cannot synthesize now, or None when it can (the network is not
        probed: that would cost a request per call)."""
        if importlib.util.find_spec("edge_tts") is None:
            return MissingDependencyError("edge-tts", "edge").message
        return None

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        try:
            import edge_tts
            from edge_tts.exceptions import EdgeTTSException, NoAudioReceived
        except ImportError as exc:
            raise MissingDependencyError("edge-tts", "edge") from exc
        voice = validate_voice(voice) or self.default_voice
        if not text.strip():
            return
        try:
            communicate = edge_tts.Communicate(
                text,
                voice,
                connect_timeout=self._connect_timeout,
                receive_timeout=self._receive_timeout,
            )
        except ValueError as exc:
            raise InvalidInputError(
                f"invalid edge voice {voice!r}: use a name like en-US-AriaNeural"
            ) from exc
        loop = asyncio.get_running_loop()
        decoder = Mp3StreamDecoder()
        stream = communicate.stream()
        try:
            async for message in stream:
                if message.get("type") != "audio" or not message.get("data"):
                    continue  # word/sentence boundary metadata
                samples = await loop.run_in_executor(
                    self._executor, decoder.decode, message["data"]
                )
                if len(samples) and decoder.sample_rate is not None:
                    yield PcmChunk(samples, decoder.sample_rate)
            samples = await loop.run_in_executor(self._executor, decoder.decode, b"")
            if len(samples) and decoder.sample_rate is not None:
                yield PcmChunk(samples, decoder.sample_rate)
        except NoAudioReceived as exc:
            raise ProviderError(
                f"edge-tts returned no audio for voice {voice!r}; check the voice name",
                retryable=False,
            ) from exc
        except (aiohttp.ClientError, EdgeTTSException, OSError, TimeoutError) as exc:
            raise ProviderError(
                f"edge-tts could not reach the Microsoft speech service "
                f"({exc.__class__.__name__}: {exc}); check the network or use piper/espeak",
                retryable=True,
            ) from exc
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
