"""One clock per session: audio and video are paced from it, so they cannot drift apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class MediaClock:
    """Frame i of a stream with period p is due at ``start + i * p``.

    Waiting for an absolute deadline (instead of sleeping a period after each frame)
    keeps errors from accumulating: a late frame does not delay the next ones.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._start: float | None = None

    @property
    def started(self) -> bool:
        return self._start is not None

    def start(self) -> float:
        """Start the clock once; later calls return the same start time."""
        if self._start is None:
            self._start = self._now()
        return self._start

    def elapsed(self) -> float:
        return 0.0 if self._start is None else self._now() - self._start

    def deadline(self, pts_seconds: float) -> float:
        return self.start() + pts_seconds

    async def wait_until(self, pts_seconds: float) -> float:
        """Sleep until media time ``pts_seconds``; return how late we woke (s, >= 0)."""
        delay = self.deadline(pts_seconds) - self._now()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, self._now() - self.deadline(pts_seconds))
