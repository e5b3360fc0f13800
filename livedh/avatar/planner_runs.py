"""Which runs of footage frames the motion planner has shown, so that it shows none twice.

A *run* is the footage frames of ``window`` consecutive output frames. Runs are kept as polynomial
hashes (mod 2**64) of prefix hashes over the output, so the run ending at any output frame, or
after any candidate successor and the frames it forces on (a jump plays on for ``min_gap``
frames; footage with no other way on plays on), is a few numpy operations away. A run repeats
only where every decision point along it had no other way: no visible period.
"""

from __future__ import annotations

from collections import deque

import numpy as np

_BASE = 0x9E3779B97F4A7C15
_MOD = 1 << 64


class RunMemory:
    """The runs shown over the last ``memory`` output frames. The planner hands it each frame it
    shows (:meth:`emit`) and, for what it has planned but not shown, the prefix hashes of the
    planned frames (``queued``)."""

    def __init__(self, window: int, memory: int) -> None:
        self.window, self.memory = window, memory
        w = max(window, 1)
        pw, s0, s1 = [1], [0], [0]
        for k in range(w + 1):  # B**k, sum_{i<k} B**(k-1-i), sum_{i<k} i * B**(k-1-i)  (mod 2**64)
            pw.append(pw[-1] * _BASE % _MOD)
            s0.append((s0[-1] * _BASE + 1) % _MOD)
            s1.append((s1[-1] * _BASE + k) % _MOD)
        self._pow, self._s0, self._s1 = (np.array(a, dtype=np.uint64) for a in (pw, s0, s1))
        self._top = pw[w]  # weight of the frame that leaves a window
        self._hist: deque[int] = deque(maxlen=w + 1)  # prefix hashes of the last frames shown
        self._shown = 0
        self._count: dict[int, int] = {}
        self._log: deque[tuple[int, int]] = deque()

    def _prefixes(self, queued: list[int]) -> list[int]:
        """Prefix hashes of output frames T-w-1 .. T-1 (T: the next frame to plan), 0 before the
        first frame."""
        w = self.window
        known = [*self._hist, *queued][-(w + 1) :]
        return [0] * (w + 1 - len(known)) + known

    def plan(self, queued: list[int], node: int) -> tuple[int, int]:
        """(prefix hash, run hash or -1 while fewer than ``window`` frames are out) of ``node``
        planned after the ``queued`` frames."""
        p = self._prefixes(queued)
        prefix = (p[-1] * _BASE + node) % _MOD
        t = self._shown + len(queued)
        if not self.window or t + 1 < self.window:
            return prefix, -1
        return prefix, (prefix - p[1] * self._top) % _MOD

    def emit(self, prefix: int, key: int) -> None:
        """The planned frame with this prefix and run hash is shown."""
        self._hist.append(prefix)
        if key >= 0:
            self._count[key] = self._count.get(key, 0) + 1
            self._log.append((self._shown, key))
            while self._log[0][0] <= self._shown - self.memory:
                _, old = self._log.popleft()
                self._count[old] -= 1
                if not self._count[old]:
                    del self._count[old]
        self._shown += 1

    def repeats(
        self, queued: list[int], planned: set[int], targets: np.ndarray, forced: np.ndarray
    ) -> np.ndarray:
        """Whether planning each of ``targets`` next, then the ``forced`` frames after it (target+1,
        ...), ends a run already shown or ``planned`` (their run hashes)."""
        w, t = self.window, self._shown + len(queued)
        out = np.zeros(targets.size, dtype=bool)
        if not w or t + int(forced.max(initial=0)) + 1 < w:
            return out
        p = np.array(self._prefixes(queued), dtype=np.uint64)  # times t-w-1 .. t-1
        f = np.minimum(forced, w - 1)
        j = np.arange(int(f.max(initial=0)) + 1)  # frames c+j at times t+j ...
        full = (j[None, :] <= f[:, None]) & (t + j + 1 >= w)[None, :]  # ... that end a full run
        if not full.any():
            return out
        c = np.asarray(targets, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            prefix = p[-1] * self._pow[j + 1] + c * self._s0[j + 1] + self._s1[j + 1]
            keys = prefix - p[j + 1] * np.uint64(self._top)
        # set operations on the distinct keys, numpy for which candidate they belong to
        distinct = set(keys[full].tolist())
        hits = (distinct & self._count.keys()) | (distinct & planned)
        if not hits:
            return out
        return (np.isin(keys, np.fromiter(hits, dtype=np.uint64, count=len(hits))) & full).any(axis=1)


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
