"""Real speech for tests and benchmarks: the offline piper voice, at the session's 16 kHz."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from livedh.media.pcm import SESSION_SAMPLE_RATE, StreamResampler


def synthesize(texts: Sequence[str]) -> list[np.ndarray]:
    """Each text spoken by piper (one voice load for all), as 16 kHz mono int16. Blocking: runs
    its own event loop, so call it from synchronous code (fixtures, benchmark set-up)."""
    from livedh.tts.piper import PiperTTS

    async def run() -> list[np.ndarray]:
        engine = PiperTTS()
        out = []
        try:
            for text in texts:
                resampler = StreamResampler(SESSION_SAMPLE_RATE)
                pieces = [resampler.push(chunk) async for chunk in engine.synthesize(text)]
                out.append(np.concatenate([*pieces, resampler.flush()]))
        finally:
            await engine.aclose()
        return out

    return asyncio.run(run())


def write_wav(path: Path, samples: np.ndarray, rate: int = SESSION_SAMPLE_RATE) -> None:
    """Mono int16 ``samples`` as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int16).tobytes())
