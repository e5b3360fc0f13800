"""How smooth each transition of a motion graph can be blended, and over how many frames.

The graph's rule admits a jump ``i -> j`` when most keypoints are close at the jump (motion_graph.py),
but a blend shows more than the jump: over its ``k`` frames the footage left plays on (``i+1``,
``i+2``, ...) while the footage reached plays from ``j``, and each output frame lies ``s / (k + 1)``
of the way between them. Each output step is then the footage's own motion plus the share of the
gap between the two streams, and that gap grows when they move differently (a hand rising on one
side only), or is large already for a few keypoints (a whole hand elsewhere: 20% of the points may
miss the rule). :class:`BlendCosts` predicts the largest keypoint step of the blended output for
each blend length from ``lengths`` (the issue's 4-8 frames) exactly as the output shows it, over
all keypoints and over the face and shoulders alone (which carry most of the picture, so most of
its optical flow), as a share of the source's own 99th percentile of the same step. The planner
takes the length with the smallest share, avoids jumps whose share exceeds 1 and prefers small
ones. Computed for every edge at once when built (vectorised, ~20 us per edge on 2 cores: about
0.15 s for 40 s of footage, in the planner's worker thread), so a planner step only slices.
"""

from __future__ import annotations

import numpy as np

from livedh.avatar.motion_graph import NATURAL, MotionGraph

#: face points and shoulders (pose.UPPER_BODY positions 0..12): the large, slow parts of the picture
BODY = slice(0, 13)
#: jump edges predicted per numpy pass: temporaries of a few MB, which the allocator reuses (fresh
#: pages for larger ones cost more than the arithmetic)
_CHUNK = 256


def _steps(a: np.ndarray, va: np.ndarray, b: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """(..., 2) mean keypoint distance a -> b over keypoints visible in both, for all keypoints and
    for :data:`BODY`; NaN where none is."""
    both = va & vb
    d = np.linalg.norm(b - a, axis=-1) * both
    out = []
    for part in (slice(None), BODY):
        n = both[..., part].sum(axis=-1)
        out.append(np.where(n > 0, d[..., part].sum(axis=-1) / np.maximum(n, 1), np.nan))
    return np.stack(out, axis=-1)


class BlendCosts:
    """Blend length and smoothness share per transition edge of ``graph``, from the footage's
    keypoints ``(N, K, 2)`` and ``visible`` ``(N, K)`` (see the module docstring)."""

    def __init__(
        self, graph: MotionGraph, keypoints: np.ndarray, visible: np.ndarray, lengths: tuple[int, int]
    ) -> None:
        n = graph.n_frames
        self._graph = graph
        self._kp = np.nan_to_num(np.asarray(keypoints, dtype=np.float64))
        self._vis = np.asarray(visible, dtype=bool) & np.isfinite(np.asarray(keypoints)).all(axis=2)
        self._lengths = np.arange(lengths[0], lengths[1] + 1)
        src = np.repeat(np.arange(n), np.diff(graph.indptr))
        nat = np.zeros(n, dtype=bool)
        nat[src[graph.kinds == NATURAL]] = True
        # the footage left plays on under the fade, held where its run ends (as the planner does)
        self._on = np.where(nat, np.arange(n) + 1, np.arange(n))
        natural = np.flatnonzero(nat)
        steps = _steps(self._kp[natural], self._vis[natural], self._kp[natural + 1], self._vis[natural + 1])
        p99 = [np.nanpercentile(s, 99) if np.isfinite(s).any() else np.nan for s in steps.T]
        self._p99 = np.array([p if np.isfinite(p) and p > 1e-6 else np.inf for p in p99])
        # every edge at once, in chunks (a few ms per thousand edges): a planner step then only slices
        self._length = np.full(src.size, int(self._lengths[0]))
        self._share = np.zeros(src.size)
        jumps = np.flatnonzero(graph.kinds != NATURAL)
        for lo in range(0, jumps.size, _CHUNK):
            e = jumps[lo : lo + _CHUNK]
            self._length[e], self._share[e] = self._best(src[e], graph.indices[e])

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """For the edges leaving frame ``i`` (CSR order): blend length, and the largest predicted
        step of the blended output as a share of the source's 99th percentile (0 for natural edges)."""
        lo, hi = self._graph.indptr[i], self._graph.indptr[i + 1]
        return self._length[lo:hi], self._share[lo:hi]

    @property
    def shares(self) -> np.ndarray:
        """The share of every edge of the graph (CSR order)."""
        return self._share

    def _best(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best blend length and its share for the jumps ``i -> j`` (arrays of frames)."""
        n, kmax = self._graph.n_frames, int(self._lengths[-1])
        left = [i]
        for _ in range(kmax):
            left.append(self._on[left[-1]])
        a = np.stack(left, axis=1)  # frame of the footage left at output step s (s = 0: the frame before)
        b = np.minimum(j[:, None] + np.arange(kmax + 1)[None, :], n - 1)  # reached: j + s - 1 at step s
        ka, kb, va, vb = self._kp[a], self._kp[b], self._vis[a], self._vis[b]
        # Output frame s (1..k) of a blend over k is ka[s] + s / (k + 1) * gap[s - 1], so its step
        # s -> s + 1 (s < k) is dA[s] + g[s] / (k + 1), with dA and g the same for every k; and
        # the visibility of those frames does not depend on k either.
        gap = kb[:, :kmax] - ka[:, 1:]
        d_a = np.diff(ka, axis=1)
        g = gap * np.arange(1, kmax + 1)[None, :, None, None]
        g[:, 1:] -= gap[:, :-1] * np.arange(1, kmax)[None, :, None, None]
        fvis = np.concatenate([va[:, :1], va[:, 1:] & vb[:, :kmax]], axis=1)  # frames 0..kmax
        both = fvis[:, :-1] & fvis[:, 1:]
        counts = [np.maximum(both[..., part].sum(axis=-1), 1) for part in (slice(None), BODY)]
        seen = [both[..., part].any(axis=-1) for part in (slice(None), BODY)]
        rows = np.arange(j.size)
        shares = []
        for k in self._lengths.tolist():
            d = d_a[:, :k] + g[:, :k] * (1.0 / (k + 1))
            dist = np.sqrt(np.einsum("...i,...i->...", d, d)) * both[:, :k]
            last = kb[:, k] - ka[:, k] - (k / (k + 1)) * gap[:, k - 1]  # frame k -> the footage reached
            lvis = fvis[:, k] & vb[:, k]
            ldist = np.sqrt(np.einsum("...i,...i->...", last, last)) * lvis
            worst = np.zeros(j.size)
            for p, part in enumerate((slice(None), BODY)):
                mean = np.where(seen[p][:, :k], dist[..., part].sum(axis=-1) / counts[p][:, :k], 0.0)
                lcnt = lvis[:, part].sum(axis=-1)
                lmean = np.where(lcnt > 0, ldist[:, part].sum(axis=-1) / np.maximum(lcnt, 1), 0.0)
                worst = np.maximum(worst, np.maximum(mean.max(axis=1), lmean) / self._p99[p])
            shares.append(worst)
        table = np.stack(shares, axis=1)  # (edges, lengths)
        best = np.argmin(table, axis=1)
        return self._lengths[best], table[rows, best]
