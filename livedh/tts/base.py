"""The TTS role: one hook, ``synthesize``, an async generator of PCM chunks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from livedh.media.pcm import PcmChunk


class TTSEngine(ABC):
    """A speech synthesizer.

    ``synthesize`` must yield the first chunk as soon as it exists (streaming), never block the
    event loop (blocking synthesis runs in a worker thread), and stop promptly when the consumer
    stops iterating (the generator is closed on barge-in). Engines are shared by sessions, so
    they must keep no per-utterance state on ``self``.
    """

    name: str = "base"

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        """Yield mono int16 PCM chunks for ``text`` (any sample rate)."""

    async def warmup(self) -> None:  # noqa: B027 - optional hook
        """Load models now, so the first utterance does not pay for it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, subprocesses). Idempotent."""
