"""One clock per session: audio and video are paced from it, so they cannot drift apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class MediaClock:
    """Frame i of a stream with period p is due at ``start + i * p``.

    Waiting for an absolute deadline (instead of sleeping a period after each frame)
    keeps errors from accumulating: a late frame does not delay the next ones.

    ``now`` and ``sleep`` are the time source (a test passes a clock it moves itself, so that
    what a session does at which moment does not depend on the machine's load).
    """

    def __init__(
        self,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._now = now
        self._sleep = sleep
        self._start: float | None = None

    def now(self) -> float:
        """The clock's time source (seconds, arbitrary origin)."""
        return self._now()

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
        deadline = self.deadline(pts_seconds)
        # A loop: a sleep may end a hair early (timer resolution), or, with a test's clock,
        # before that clock has been moved far enough.
        while (delay := deadline - self._now()) > 0:
            await self._sleep(delay)
        return -delay
