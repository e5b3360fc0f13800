"""Walks over the motion graph that the planner needs whole: where the footage can lead on from
each frame (its calmest or busiest future, for scoring), and the shortest way to an action clip on
which every blend completes before the next jump.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.sparse import csr_matrix  # scipy ships with scikit-image, a dependency already
from scipy.sparse.csgraph import dijkstra

from livedh.avatar.motion_graph import NATURAL, MotionGraph

#: the targets of the jumps from frame p that are rough (planner_blend.py)
Rough = Callable[[int], Collection[int]]
#: extra frames a route is charged for a rough jump: taken only where there is no other way
ROUGH = 1000.0
#: rounds of re-routing around rough jumps found on the way (each round charges a new one)
_RETRIES = 12


def footage_activity(energy: np.ndarray, nodes: np.ndarray, quantiles: tuple[float, float]) -> np.ndarray:
    """Each frame's motion energy mapped to 0..1 between the ``quantiles`` of the energy over the
    graph's ``nodes`` (the footage's own scale: any person, distance or resolution). All 0 when the
    footage's energy hardly varies (nothing to choose by)."""
    e = np.nan_to_num(np.asarray(energy, dtype=np.float64))
    if nodes.size == 0:
        return np.zeros(e.size)
    lo, hi = np.quantile(e[nodes], quantiles)
    if hi - lo <= 1e-6 * max(abs(hi), 1e-9):
        return np.zeros(e.size)
    return np.clip((e - lo) / (hi - lo), 0.0, 1.0)


def future_activity(
    act: np.ndarray, graph: MotionGraph, run_len: np.ndarray, *, min_gap: int, discount: float, highest: bool
) -> np.ndarray:
    """Per frame: the discounted mean activity (0..1) of the calmest walk on from it through the
    graph (the busiest if ``highest``), where a jump lands on a run that plays ``min_gap`` frames
    (value iteration, a few ms per avatar; revisits and noise left out)."""
    n, m, sign = act.size, min_gap, -1.0 if highest else 1.0
    a = sign * np.asarray(act, dtype=np.float64)
    seg = sliding_window_view(np.r_[a, np.zeros(m)], m)[:n] @ discount ** np.arange(m)
    land_ok = run_len > m
    after = np.minimum(np.arange(n) + m, n - 1)
    jump = graph.kinds != NATURAL
    rows = np.diff(graph.indptr) > 0
    starts = graph.indptr[:-1][rows]
    v = np.zeros(n)
    best = np.zeros(n)
    for _ in range(int(np.ceil(4.0 / (1.0 - discount)))):
        land = np.where(land_ok, seg + discount**m * v[after], v)
        vals = np.where(jump, land[graph.indices], v[graph.indices])
        if starts.size:
            best[rows] = np.minimum.reduceat(vals, starts)
        v = a + discount * best
    return sign * (1.0 - discount) * v


class Routes:
    """Shortest routes over ``graph`` where a jump lands on a run at least ``longest`` frames long
    (the longest blend) and plays that far on before the next (Dijkstra over natural edges and such
    jumps, taken as landing that far on). ``nat``: frame f has its natural edge; ``run_len``: frames
    to the end of each natural run."""

    def __init__(self, graph: MotionGraph, nat: np.ndarray, run_len: np.ndarray, longest: int) -> None:
        self._graph, self._nat, self._longest = graph, nat, longest
        n = graph.n_frames
        src = np.repeat(np.arange(n), np.diff(graph.indptr))
        self._src = src
        dst, jump = graph.indices, graph.kinds != NATURAL
        land = jump & (run_len[dst] > longest)
        keep = ~jump | land
        rows, cols = src[keep], np.where(land, dst + longest, dst)[keep]
        wts = np.where(land, longest + 1.0, 1.0)[keep]
        order = np.lexsort((wts, cols, rows))
        rows, cols, wts = rows[order], cols[order], wts[order]
        first = np.ones(rows.size, dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])  # duplicates: the lightest
        self._adj = csr_matrix((wts[first], (rows[first], cols[first])), shape=(n, n))
        self._checked: set[int] = set()  # frames whose rough jumps are charged

    def shortest(self, cur: int, start: int, rough: Rough) -> list[int] | None:
        """Frames after ``cur`` up to and including ``start`` by the fewest output frames (the last
        hop, into ``start``, may be any edge), avoiding the jumps ``rough(p)`` lists for frame ``p``
        (blends rougher than the source's own motion, planner_blend.py) where the graph allows: a
        frame on the way with such jumps has them charged :data:`ROUGH` frames more and the way is
        sought again. None when there is no way."""
        into = np.unique(self._src[self._graph.indices == start])  # frames with an edge to start
        rough_in = np.array([p + 1 != start and start in rough(int(p)) for p in into.tolist()], bool)
        for _ in range(_RETRIES):
            dist, pred = dijkstra(self._adj, directed=True, indices=cur, return_predecessors=True)
            if not into.size or not np.isfinite(dist[into]).any():
                return None  # unreachable (the graph is strongly connected, so this does not happen)
            last = int(into[np.argmin(dist[into] + ROUGH * rough_in)])
            hops = [last]
            while hops[-1] != cur:
                hops.append(int(pred[hops[-1]]))
            hops.reverse()
            path: list[int] = []
            again = False
            for p, q in itertools.pairwise(hops):
                if q == p + 1 and self._nat[p] and dist[q] == dist[p] + 1:
                    path.append(q)
                    continue
                path.extend(range(q - self._longest, q + 1))  # a jump to q - longest, then on to q
                if p not in self._checked:
                    self._checked.add(p)
                    self._charge(p, np.fromiter(rough(p), dtype=np.int64) + self._longest)
                    again = True
            if not again:
                break
        return [*path, start]

    def _charge(self, p: int, cols: np.ndarray) -> None:
        """Adds :data:`ROUGH` to the weights of the edges from ``p`` to ``cols`` (those present)."""
        lo, hi = self._adj.indptr[p], self._adj.indptr[p + 1]
        row = self._adj.indices[lo:hi]
        self._adj.data[lo:hi][np.isin(row, cols)] += ROUGH
