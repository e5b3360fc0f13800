"""PCM audio helpers: the chunk type that flows tts -> lipsync -> transport, resampling and
decoding of uploaded files."""

from __future__ import annotations

import io
import itertools
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from livedh.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError

# The session's internal audio format: mono int16. 16 kHz is what speech models
# (whisper, Wav2Lip's mel front-end) expect, so no second resampling is needed there.
SESSION_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class PcmChunk:
    """Mono int16 samples at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.dtype != np.int16 or self.samples.ndim != 1:
            raise ValueError("PcmChunk.samples must be a 1-D int16 array")

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class StreamResampler:
    """Resamples a stream of chunks without clicks at chunk boundaries (keeps filter state)."""

    def __init__(self, target_rate: int = SESSION_SAMPLE_RATE) -> None:
        self.target_rate = target_rate
        self._resampler: av.AudioResampler | None = None
        self._source_rate: int | None = None

    def push(self, chunk: PcmChunk) -> np.ndarray:
        if chunk.sample_rate == self.target_rate:
            return chunk.samples
        if self._resampler is None or chunk.sample_rate != self._source_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.target_rate)
            self._source_rate = chunk.sample_rate
        frame = av.AudioFrame.from_ndarray(
            chunk.samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = chunk.sample_rate
        return _frames_to_array(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        out = _frames_to_array(self._resampler.resample(None))
        self._resampler = None
        return out


def _frames_to_array(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def decode_audio_bytes(
    data: bytes, target_rate: int = SESSION_SAMPLE_RATE, *, max_seconds: float | None = None
) -> np.ndarray:
    """Decode an uploaded file (wav, mp3, ogg, flac ...) to mono int16 at ``target_rate``.

    Decodes frame by frame and stops as soon as the audio is longer than ``max_seconds``
    (PayloadTooLargeError): a few kilobytes of compressed silence can decode to gigabytes, so
    at most the cap plus one frame is ever held. Raises UnsupportedMediaError when the bytes are
    not audio we can decode.
    """
    if not data:
        raise InvalidInputError("the audio file is empty")
    limit = None if max_seconds is None else int(max_seconds * target_rate)
    parts: list[np.ndarray] = []
    held = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UnsupportedMediaError("the file has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=target_rate)
            # None last: the resampler's buffered tail counts towards the cap too.
            for frame in itertools.chain(container.decode(audio=0), [None]):
                parts.append(_frames_to_array(resampler.resample(frame)))
                held += len(parts[-1])
                if limit is not None and held > limit:
                    raise PayloadTooLargeError(
                        f"the audio is longer than the limit of {max_seconds:g} s; send a shorter clip"
                    )
    except InvalidInputError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, MemoryError) as exc:
        raise UnsupportedMediaError(
            f"could not decode the audio file ({exc.__class__.__name__}); send wav, mp3, ogg or flac"
        ) from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    if len(samples) == 0:
        raise UnsupportedMediaError("the audio file decodes to no samples")
    return samples


def trim_leading_silence(
    samples: np.ndarray, threshold: int = 200, keep: int = SESSION_SAMPLE_RATE // 100
) -> np.ndarray:
    """Drop samples before the first one louder than ``threshold``, keeping ``keep`` samples of
    lead-in so the onset is not clipped. All-quiet input returns an empty array."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(loud):
        return samples[:0]
    return samples[max(0, int(loud[0]) - keep) :]


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray, rate: int = SESSION_SAMPLE_RATE) -> None:
    """Mono int16 ``samples`` as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(samples).astype("<i2").tobytes())
