"""Speech waiting to be played, consumed one frame period at a time by the render loop, and the
cues (actions named in the text) due when it reaches given samples."""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np


class PlayoutBuffer:
    """FIFO of int16 speech samples plus the recent history that audio windows look back into.

    Samples are numbered from the stream's first: ``position`` is the next one ``take`` hands
    out, and ``push(..., at=n)`` can start speech at sample ``n`` of the stream. A cue is due
    once ``take`` has handed out its sample; ``clear`` (barge-in) drops the cues with the speech.
    """

    def __init__(self, history_samples: int) -> None:
        self._pending: deque[np.ndarray] = deque()
        self._pending_len = 0
        self._head_offset = 0  # samples of _pending[0] already consumed
        self._lead = 0  # leading samples of _pending that are the silence before a timed start
        self._history = np.zeros(max(history_samples, 1), dtype=np.int16)
        self.position = 0
        self._cues: list[tuple[int, int, tuple[str, ...]]] = []  # (sample, order, names), sorted
        self._cue_count = 0

    def __len__(self) -> int:
        return self._pending_len

    @property
    def end(self) -> int:
        """The stream sample after the last one queued (where speech pushed now starts)."""
        return self.position + self._pending_len

    def push(self, samples: np.ndarray, *, at: int | None = None) -> int:
        """Queue speech: after what is queued, or, when nothing is and ``at`` is still to come,
        from stream sample ``at`` (silence until then). Returns the stream sample it starts at."""
        if not len(samples):
            return self.end
        if at is not None and not self._pending_len and at > self.position:
            self._lead = at - self.position
            self._pending.append(np.zeros(self._lead, dtype=np.int16))
            self._pending_len += self._lead
        self._pending.append(samples.astype(np.int16, copy=False))
        self._pending_len += len(samples)
        return self.end - len(samples)

    def cue(self, names: tuple[str, ...], at: int | None = None) -> None:
        """``names`` become due when stream sample ``at`` (default: the end of what is queued)
        has been taken."""
        self._cue_count += 1
        bisect.insort(self._cues, (self.end if at is None else at, self._cue_count, names))

    def due_cues(self) -> list[str]:
        """The names of the cues reached by what was taken, in order; each is handed out once."""
        n = bisect.bisect_left(self._cues, (self.position, 0, ()))
        due, self._cues = self._cues[:n], self._cues[n:]
        return [name for _, _, names in due for name in names]

    def clear(self) -> None:
        self._pending.clear()
        self._pending_len = 0
        self._head_offset = 0
        self._lead = 0
        self._cues.clear()

    def _read(self, n: int, consume: bool) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        offset = self._head_offset
        index = 0
        while filled < n and index < len(self._pending):
            chunk = self._pending[index]
            take = min(n - filled, len(chunk) - offset)
            out[filled : filled + take] = chunk[offset : offset + take]
            filled += take
            offset += take
            if offset == len(chunk):
                index += 1
                offset = 0
        if consume:
            for _ in range(index):
                self._pending.popleft()
            self._head_offset = offset
            self._pending_len -= filled
        return out

    def take(self, n: int) -> tuple[np.ndarray, bool]:
        """Pop ``n`` samples (zero-padded when short). Returns (samples, had_speech)."""
        had = self._pending_len > self._lead and self._lead < n
        block = self._read(n, consume=True)
        self._lead = max(0, self._lead - n)
        self.position += n
        self._history = np.concatenate([self._history, block])[-len(self._history) :]
        return block, had

    def upcoming(self, n: int) -> np.ndarray:
        """Up to ``n`` queued samples that ``take`` hands out next, without consuming them (fewer
        when less is queued)."""
        return self._read(min(n, self._pending_len), consume=False)

    def window(self, size: int, lookahead: int) -> np.ndarray:
        """The ``size`` samples ending ``lookahead`` samples after the last ``take`` (future
        samples not yet available are zeros, which is right at the end of an utterance)."""
        future = self._read(lookahead, consume=False) if lookahead else np.zeros(0, np.int16)
        joined = np.concatenate([self._history, future])
        if len(joined) < size:
            joined = np.concatenate([np.zeros(size - len(joined), np.int16), joined])
        return joined[-size:]
