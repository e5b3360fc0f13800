"""Prometheus metrics of one app: sessions, latencies, errors, rejected requests.

Role-neutral like ``livedh.logs``: whoever measures something gets a ``Metrics`` passed in
(one per app, its own ``CollectorRegistry``: nothing is registered globally, so two apps or two
tests never share counts). Label values come from fixed sets (error codes, engine names, where
an error happened), never from session ids, paths or client input, so the series stay bounded.

Every method is called on the event loop thread (the scrape too), so the locks inside
prometheus_client are never contended; an observation costs about a microsecond.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector

from livedh.errors import LiveDHError

#: the text exposition format, version 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Fixed buckets (seconds), chosen around what a person notices in a conversation.
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)
_FIRST_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0)
# A frame period is 40 ms at 25 fps: lateness beyond it is a visible stutter.
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)

#: what a label value made of an error code may look like (anything else becomes "other")
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")

T = TypeVar("T")


def bounded_label(value: str) -> str:
    """``value`` when it looks like one of our error codes, else "other"."""
    return value if _CODE.fullmatch(value) else "other"


class Metrics:
    """The app's metrics and its registry; ``exposition()`` is the body of ``GET /metrics``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # RSS and CPU of the server: what an exhaustion attack shows first.
        ProcessCollector(registry=registry)
        self.sessions = Gauge(
            "livedh_sessions", "Sessions: open (all), connecting (ICE not finished yet)",
            ["state"], registry=registry,
        )
        self.first_audio = Histogram(
            "livedh_first_audio_seconds",
            "Request (text, upload or voice turn) to the first audible frame's due time",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.frame_lateness = Histogram(
            "livedh_frame_lateness_seconds",
            "How late video frames left the server after their due time",
            buckets=_LATENESS_BUCKETS, registry=registry,
        )
        self.asr = Histogram(
            "livedh_asr_seconds", "Transcription of a finished voice turn",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.llm_first_token = Histogram(
            "livedh_llm_first_token_seconds", "LLM request to its first text delta",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.tts_first_chunk = Histogram(
            "livedh_tts_first_chunk_seconds", "Synthesis of an utterance to its first audio chunk",
            ["engine"], buckets=_FIRST_CHUNK_BUCKETS, registry=registry,
        )
        self.errors = Counter(
            "livedh_session_errors", "Errors inside sessions, by where and error code",
            ["where", "code"], registry=registry,
        )
        self.rejected = Counter(
            "livedh_rejected_requests", "HTTP requests answered with an error, by status and code",
            ["status", "reason"], registry=registry,
        )

    # -- what the measuring code calls ----------------------------------------------------
    def watch_sessions(self, open_count: Callable[[], int], connecting: Callable[[], int]) -> None:
        """Read the session gauges at scrape time (open sessions, and those still connecting),
        instead of keeping them in step on every change."""
        self.sessions.labels("open").set_function(open_count)
        self.sessions.labels("connecting").set_function(connecting)

    def count_error(self, where: str, error: BaseException) -> None:
        code = error.code if isinstance(error, LiveDHError) else "internal_error"
        self.errors.labels(bounded_label(where), bounded_label(code)).inc()

    def count_rejected(self, status: int, reason: str) -> None:
        self.rejected.labels(str(status), bounded_label(reason)).inc()

    def timed_llm(self, deltas: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """``deltas``, observing the time to the first one (the LLM's time to first token)."""
        return self._time_first(deltas, self.llm_first_token.observe)

    def timed_tts(self, chunks: AsyncIterator[T], engine: str) -> AsyncGenerator[T, None]:
        """``chunks``, observing the time to the first one under ``engine``'s label."""
        return self._time_first(chunks, self.tts_first_chunk.labels(bounded_label(engine)).observe)

    async def _time_first(
        self, stream: AsyncIterator[T], observe: Callable[[float], None]
    ) -> AsyncGenerator[T, None]:
        started = self._clock()
        first = True
        try:
            async for item in stream:
                if first:
                    observe(self._clock() - started)
                    first = False
                yield item
        finally:
            # Closing the wrapper closes the stream now (a barge-in stops the request at once).
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- the scrape -----------------------------------------------------------------------
    def exposition(self) -> bytes:
        """Every metric in the text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
