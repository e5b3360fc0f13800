"""Fakes of the real base classes, for tests that must not load real models."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Sequence

import numpy as np

from livedh.lipsync.base import LipSyncModel, LipSyncRequest
from livedh.media.pcm import PcmChunk


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype(np.int16)


def make_fake_tts(
    rate: int = 16000, seconds_per_char: float = 0.02, chunk_chars: int = 10,
    delay: float = 0.0, name: str = "fake", sleep=asyncio.sleep,
):
    """A real TTSEngine subclass that speaks each character as 20 ms of tone, in chunks
    (``delay`` seconds of ``sleep``, a ManualClock's for instance, before each chunk)."""
    from livedh.tts.base import TTSEngine

    class _FakeTTS(TTSEngine):
        def __init__(self) -> None:
            self.name = name
            self.calls: list[str] = []
            self.chunks_yielded = 0
            self.closed_early = 0

        async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
            self.calls.append(text)
            done = False
            try:
                for start in range(0, len(text), chunk_chars):
                    part = text[start : start + chunk_chars]
                    if delay:
                        await sleep(delay)
                    self.chunks_yielded += 1
                    yield PcmChunk(tone(len(part) * seconds_per_char, rate), rate)
                done = True
            finally:
                if not done:
                    self.closed_early += 1

    return _FakeTTS()


class LoudnessModel(LipSyncModel):
    """Renders a frame whose every pixel is the RMS of the frame's own audio (0-255).

    The window is exactly one frame of audio, so a frame's brightness tells which audio it was
    rendered from: a test can check that audio and video of one frame index belong together.
    """

    audio_window = 640
    audio_lookahead = 0
    width = 32
    height = 32

    def __init__(self) -> None:
        self.batches: list[int] = []

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        self.batches.append(len(batch))
        out = []
        for request in batch:
            level = float(np.sqrt(np.mean(request.audio.astype(np.float64) ** 2)))
            value = min(255, round(level * 255 * 2))
            out.append(np.full((self.height, self.width, 3), value, dtype=np.uint8))
        return out


class ManualClock:
    """Time that moves only when the test moves it (``advance_to``), for ``MediaClock(clock,
    clock.sleep)``: what a session does at which moment no longer depends on the machine's
    load. Sleepers wake, in deadline order, when the clock reaches their deadline."""

    #: float slack when comparing a deadline with the time it was computed from
    EPSILON = 1e-9

    def __init__(self, start: float = 0.0) -> None:
        self.time = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def __call__(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        if seconds <= self.EPSILON:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.time + seconds, self._count, future))
        await future

    def advance_to(self, time: float) -> None:
        self.time = max(self.time, time)
        while self._sleepers and self._sleepers[0][0] <= self.time + self.EPSILON:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


async def settle(rounds: int = 50) -> None:
    """Let every task that is ready run until it waits again (no threads involved): a fixed
    number of event-loop turns, the same in every run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def make_inline_lipsync(model: LipSyncModel):
    """A LipSyncEngine that renders on the event loop, not a worker thread: with a
    ManualClock, nothing of a session then runs at a moment the test does not choose."""
    from livedh.lipsync.engine import LipSyncEngine

    class _InlineEngine(LipSyncEngine):
        async def render(self, request: LipSyncRequest) -> np.ndarray:
            if self.closed:
                raise RuntimeError("lip-sync engine is closed")
            return self._infer([request])[0]

    return _InlineEngine(model)
