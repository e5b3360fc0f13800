"""Sentences spoken before come from memory: a shared, bounded cache in front of any engine.

A kiosk says the same answers all day, and a synthesized first sentence is most of what a
person waits for after their question (piper: about 200 ms for a 50-character sentence on two
cores). ``CachingTTS`` keeps each complete synthesis of a short text, keyed by engine, voice
and text, and replays it at once; ``prefill`` synthesizes known answers ahead of time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable

from livedh.media.pcm import PcmChunk
from livedh.tts.base import TTSEngine

log = logging.getLogger(__name__)

_Key = tuple[str, str | None, str]


def _nbytes(chunks: tuple[PcmChunk, ...]) -> int:
    return sum(chunk.samples.nbytes for chunk in chunks)


class PhraseCache:
    """Synthesized texts, least recently used out first, bounded by the bytes of their audio.

    Used from the event loop only (no lock). ``max_chars``: longer texts are not kept (they are
    rarely repeated word for word, and would push many short ones out).
    """

    def __init__(self, max_bytes: int = 64 * 2**20, max_chars: int = 200) -> None:
        if max_bytes < 0 or max_chars < 1:
            raise ValueError("max_bytes must be >= 0 and max_chars >= 1")
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self._items: OrderedDict[_Key, tuple[PcmChunk, ...]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def wants(self, text: str) -> bool:
        return self.max_bytes > 0 and 0 < len(text) <= self.max_chars

    def __contains__(self, key: _Key) -> bool:
        return key in self._items

    def get(self, key: _Key) -> tuple[PcmChunk, ...] | None:
        chunks = self._items.get(key)
        if chunks is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return chunks

    def put(self, key: _Key, chunks: tuple[PcmChunk, ...]) -> None:
        size = _nbytes(chunks)
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old)
        self._items[key] = chunks
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= _nbytes(dropped)


class CachingTTS(TTSEngine):
    """``inner`` behind a ``PhraseCache``: a text it has fully synthesized before (same voice)
    is replayed from memory. A synthesis that was stopped (barge-in) is not kept."""

    def __init__(self, inner: TTSEngine, cache: PhraseCache) -> None:
        self.inner = inner
        self.name = inner.name
        self._cache = cache

    def _key(self, text: str, voice: str | None) -> _Key:
        return (self.inner.name, voice, text)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        key = self._key(text, voice)
        if not self._cache.wants(text):
            async for chunk in self.inner.synthesize(text, voice):
                yield chunk
            return
        cached = self._cache.get(key)
        if cached is not None:
            for chunk in cached:
                yield chunk
            return
        chunks: list[PcmChunk] = []
        stream = self.inner.synthesize(text, voice)
        try:
            async for chunk in stream:
                chunks.append(chunk)
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        # Only reached when the consumer read to the end: the synthesis is complete.
        self._cache.put(key, tuple(chunks))

    @property
    def cache_bytes(self) -> int:
        return self._cache.nbytes

    async def prefill(self, texts: Iterable[str], voice: str | None = None) -> int:
        """Synthesize ``texts`` not cached yet, one after another; returns how many were."""
        done = 0
        for text in texts:
            if not self._cache.wants(text) or self._key(text, voice) in self._cache:
                continue
            async for _ in self.synthesize(text, voice):
                pass
            done += 1
        return done

    async def warmup(self) -> None:
        await self.inner.warmup()

    async def aclose(self) -> None:
        await self.inner.aclose()
