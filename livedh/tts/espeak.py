"""espeak-ng: the any-language offline fallback, run as a subprocess that streams WAV."""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator

import numpy as np

from livedh.errors import InvalidInputError, ProviderError
from livedh.media.pcm import PcmChunk
from livedh.tts.base import TTSEngine
from livedh.tts.text import validate_voice

_INSTALL_HINT = "install it with: apt-get install espeak-ng"
# A WAV header is ~44 bytes; anything this long without a "data" chunk is not espeak output.
_MAX_HEADER_BYTES = 4096


class WavStreamParser:
    """Turns a WAV byte stream into int16 PCM as bytes arrive.

    The header is walked chunk by chunk up to ``data`` (a streaming writer puts a placeholder
    size there, so everything after it is audio until EOF).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.sample_rate: int | None = None
        self.channels = 1
        self._in_data = False

    def feed(self, data: bytes) -> np.ndarray:
        """Return the whole samples (mono int16) that ``data`` completes; may be empty."""
        self._buffer += data
        if not self._in_data and not self._parse_header():
            return np.zeros(0, dtype=np.int16)
        frame_bytes = 2 * self.channels
        usable = len(self._buffer) - len(self._buffer) % frame_bytes
        raw, self._buffer = self._buffer[:usable], self._buffer[usable:]
        samples = np.frombuffer(raw, dtype="<i2")
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1)
        return samples.astype(np.int16)

    def _parse_header(self) -> bool:
        buf = self._buffer
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise ValueError("not a WAV stream")
        pos = 12
        while len(buf) >= pos + 8:
            chunk_id = buf[pos : pos + 4]
            (size,) = struct.unpack("<I", buf[pos + 4 : pos + 8])
            body = pos + 8
            if chunk_id == b"data":
                if self.sample_rate is None:
                    raise ValueError("WAV data before its fmt chunk")
                self._buffer = buf[body:]
                self._in_data = True
                return True
            if len(buf) < body + size:
                break
            if chunk_id == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", buf[body : body + 16])
                if fmt != 1 or bits != 16 or channels < 1:
                    raise ValueError(f"unsupported WAV format {fmt} with {bits} bits")
                self.sample_rate, self.channels = rate, channels
            pos = body + size + (size & 1)  # chunks are word-aligned
        if len(buf) > _MAX_HEADER_BYTES:
            raise ValueError("no data chunk in the WAV header")
        return False


class EspeakTTS(TTSEngine):
    """espeak-ng voices (``en-us``, ``zh``/``cmn``, ``fr`` ... see ``espeak-ng --voices``)."""

    name = "espeak"
    default_voice = "en-us"

    def __init__(self, binary: str = "espeak-ng", *, words_per_minute: int = 175):
        self._binary = binary
        self._words_per_minute = words_per_minute

    def problem(self) -> str | None:
        """Why this engine cannot synthesize now, or None when it can."""
        if shutil.which(self._binary) is None:
            return f"{self._binary} is not installed; {_INSTALL_HINT}"
        return None

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        voice = validate_voice(voice) or self.default_voice
        text = text.strip()
        if not text:
            return
        binary = shutil.which(self._binary)
        if binary is None:
            raise ProviderError(
                f"{self._binary} is not installed; {_INSTALL_HINT}", retryable=False
            )
        # The text goes through stdin: it cannot be mistaken for an option, and has no argv limit.
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-v",
                voice,
                "-s",
                str(self._words_per_minute),
                "-b",
                "1",
                "--stdout",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ProviderError(f"cannot run {binary}: {exc}", retryable=False) from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            # No drain: the transport feeds the text in the background while we read the audio
            # (awaiting it could deadlock once espeak blocks on a full stdout pipe).
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            parser = WavStreamParser()
            while data := await proc.stdout.read(16384):
                try:
                    samples = parser.feed(data)
                except ValueError as exc:
                    raise ProviderError(f"espeak-ng wrote bad WAV: {exc}", retryable=False) from exc
                if len(samples) and parser.sample_rate is not None:
                    yield PcmChunk(samples, parser.sample_rate)
            returncode = await proc.wait()
            if returncode != 0:
                message = (await proc.stderr.read()).decode("utf-8", "replace").strip()
                if "voice does not exist" in message:
                    raise InvalidInputError(
                        f"espeak-ng has no voice {voice!r} (list them with: espeak-ng --voices)"
                    )
                raise ProviderError(f"espeak-ng failed ({returncode}): {message}", retryable=False)
        finally:
            # On barge-in (aclose or cancellation) the process must not keep running.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
