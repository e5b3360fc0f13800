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
ones. Computed per source frame on first use (a few hundred edges, ~0.1 ms) and kept.
"""

from __future__ import annotations

import numpy as np

from livedh.avatar.motion_graph import NATURAL, MotionGraph

#: face points and shoulders (pose.UPPER_BODY positions 0..12): the large, slow parts of the picture
BODY = slice(0, 13)


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
        self._memo: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """For the edges leaving frame ``i`` (CSR order): blend length, and the largest predicted
        step of the blended output as a share of the source's 99th percentile (0 for natural edges)."""
        got = self._memo.get(i)
        if got is None:
            got = self._memo[i] = self._compute(i)
        return got

    def _compute(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        g = self._graph
        lo, hi = g.indptr[i], g.indptr[i + 1]
        targets = g.indices[lo:hi]
        jumps = g.kinds[lo:hi] != NATURAL
        length = np.full(targets.size, int(self._lengths[0]))
        share = np.zeros(targets.size)
        if jumps.any():
            length[jumps], share[jumps] = self._best(i, targets[jumps])
        return length, share

    def _best(self, i: int, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, kmax = self._graph.n_frames, int(self._lengths[-1])
        left = [i]
        for _ in range(kmax + 1):
            left.append(int(self._on[left[-1]]))
        a = np.array(left)  # frame of the footage left at output step s (s = 0: the frame before)
        b = np.minimum(j[:, None] + np.arange(kmax + 1)[None, :], n - 1)  # reached: j + s - 1 at step s
        shares = []
        for k in self._lengths:
            s = np.arange(1, k + 1)
            w = (s / (k + 1))[None, :, None, None]
            blend = (1 - w) * self._kp[a[s]][None] + w * self._kp[b[:, s - 1]]
            vis = self._vis[a[s]][None] & self._vis[b[:, s - 1]]
            frames = np.concatenate(
                [np.broadcast_to(self._kp[a[0]], (j.size, 1, *self._kp.shape[1:])), blend,
                 self._kp[b[:, k]][:, None]], axis=1)  # fmt: skip
            fvis = np.concatenate(
                [np.broadcast_to(self._vis[a[0]], (j.size, 1, self._vis.shape[1])), vis,
                 self._vis[b[:, k]][:, None]], axis=1)  # fmt: skip
            step = _steps(frames[:, :-1], fvis[:, :-1], frames[:, 1:], fvis[:, 1:]) / self._p99
            shares.append(np.nan_to_num(step, nan=0.0).max(axis=(1, 2)))
        table = np.stack(shares, axis=1)  # (edges, lengths)
        best = np.argmin(table, axis=1)
        return self._lengths[best], table[np.arange(j.size), best]
