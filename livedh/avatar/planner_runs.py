"""Which footage the motion planner has shown, so that it shows no long run of it twice.

The planner hands :class:`MatchMemory` each frame it shows; before each decision it asks, for
every successor and the frames that successor forces on (a jump plays on for ``min_gap`` frames;
footage with no other way on plays on), how long a run of output would then repeat one shown
before (the longest common stretch with any earlier part of the output). The planner never takes
a successor whose repeat reaches ``repeat_window`` where another is below it, and steers away from
long repeats before it is cornered: a guarantee, not a tuning outcome, wherever the graph allows.
"""

from __future__ import annotations

import numpy as np


class MatchMemory:
    """The footage indices of the last ``memory`` output frames shown (a numpy buffer that is
    compacted when full, so appending is O(1) amortised)."""

    def __init__(self, memory: int, cap: int) -> None:
        self.memory, self.cap = memory, cap
        self._buf = np.zeros(2 * memory + 1, dtype=np.int32)
        self._start = self._end = 0

    def emit(self, node: int) -> None:
        if self._end == self._buf.size:
            keep = self._buf[self._end - self.memory + 1 : self._end].copy()
            self._buf[: keep.size] = keep
            self._start, self._end = 0, keep.size
        self._buf[self._end] = node
        self._end += 1
        self._start = max(self._start, self._end - self.memory)

    def repeat_lengths(self, queued: list[int], targets: np.ndarray, forced: np.ndarray) -> np.ndarray:
        """Per target: the longest run of output frames (up to ``cap``), ending in the stretch
        ``target, target+1, .., target+forced`` planned after the ``queued`` frames, that the
        output already showed: the match before the target's earlier occurrence (backwards) plus
        how far that occurrence played on the same way."""
        out = np.concatenate([self._buf[self._start : self._end], np.asarray(queued, dtype=np.int32)])
        n, cap = out.size, self.cap
        res = np.zeros(targets.size, dtype=np.int64)
        back = np.arange(1, min(cap, n) + 1)
        recent = out[n - back] if n else out[:0]
        for k, (c, f) in enumerate(zip(targets.tolist(), forced.tolist(), strict=True)):
            q = np.flatnonzero(out == c)
            if not q.size:
                continue
            prev = q[:, None] - back[None, :]
            eq = (prev >= 0) & (out[np.maximum(prev, 0)] == recent[None, :])
            before = np.where(eq.all(axis=1), back.size, eq.argmin(axis=1))
            ahead = np.arange(int(f) + 1)
            nxt = q[:, None] + ahead[None, :]
            eq = (nxt < n) & (out[np.minimum(nxt, n - 1)] == c + ahead[None, :])
            on = np.where(eq.all(axis=1), ahead.size, eq.argmin(axis=1))
            res[k] = int((before + on).max())
        return res


def forced_frames(edge_ok: np.ndarray, indptr: np.ndarray, nat: np.ndarray) -> np.ndarray:
    """Per frame (and one past the last): how many frames after it play on with no other way (only
    its natural edge among the ``edge_ok`` edges of the CSR graph ``indptr``; ``nat``: frame f has
    its natural edge)."""
    n = indptr.size - 1
    ok = np.concatenate([[0], np.cumsum(edge_ok)])
    choices = ok[indptr[1:]] - ok[indptr[:-1]]
    forced = np.zeros(n + 1, dtype=np.int64)
    for f in range(n - 1, -1, -1):
        if choices[f] <= 1 and nat[f]:
            forced[f] = 1 + forced[f + 1]
    return forced


def cornered_frames(
    jumps_ok: np.ndarray, shares: np.ndarray | None, indptr: np.ndarray, run_len: np.ndarray, within: int
) -> np.ndarray:
    """Per frame: its natural run ends within ``within`` frames (``run_len``: frames to the run's
    end) and no frame after it on the run has a smooth jump (an edge in ``jumps_ok`` whose blend
    ``shares`` is at most 1). All False without shares (no pose: every jump counts as smooth)."""
    n = indptr.size - 1
    if shares is None:
        return np.zeros(n, dtype=bool)
    cs = np.concatenate([[0], np.cumsum(jumps_ok & (shares <= 1.0))])
    smooth = (cs[indptr[1:]] - cs[indptr[:-1]]) > 0
    later = np.concatenate([[0], np.cumsum(smooth)])
    f = np.arange(n)
    return (run_len <= within) & (later[f + run_len] - later[f + 1] == 0)
