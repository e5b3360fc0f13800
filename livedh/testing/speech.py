"""Real speech for tests and benchmarks: the offline piper voice, at the session's 16 kHz."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from livedh.media.pcm import SESSION_SAMPLE_RATE, StreamResampler


def synthesize(texts: Sequence[str]) -> list[np.ndarray]:
    """Each text spoken by piper (one voice load for all), as 16 kHz mono int16: the same
    samples every run (piper without its random noise). Blocking: runs its own event loop, so
    call it from synchronous code (fixtures, benchmark set-up)."""
    from livedh.tts.piper import PiperTTS

    async def run() -> list[np.ndarray]:
        engine = PiperTTS(deterministic=True)
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
