"""A motion graph over the frames of a video avatar (TANGO-style), built from per-frame pose keypoints.

Nodes are footage frames. A *natural* edge plays on (``i -> i+1``) unless a scene cut lies between;
a *transition* edge ``i -> j`` jumps to a frame whose pose is as close to ``i`` as ``i``'s own
neighbours up to ``window`` frames away are (TANGO, ICLR 2025: per-node thresholds; at least 80% of
the keypoints close in both position and velocity), and whose face box is close enough to ``i``'s that
the lip crop stays aligned, and whose picture is as close to ``i``'s as its neighbours' are (the
whole frame and each hand, see livedh/avatar/motion_labels.py: a pose match with a prop in one
frame only would cross-fade into a double exposure). Only the largest strongly connected component
is kept, so a walk on the graph never reaches a dead end. Frames are also labelled idle or gesture
by motion energy (livedh/avatar/motion_labels.py).

Everything is vectorised numpy: a 60 s, 25 fps clip builds in well under a second on one core.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix  # scipy ships with scikit-image, a dependency already
from scipy.sparse.csgraph import connected_components

from livedh.avatar.motion_labels import (
    Appearance,
    Looks,
    appearance_distance,
    appearance_limits,
    appearance_pairs,
    body_scale,
    face_geometry,
    label_spans,
    motion_energy,
    shot_ids,
    sqdist,
)
from livedh.errors import InvalidInputError
from livedh.files import atomic_file

GRAPH_VERSION = 1
NATURAL = 0
TRANSITION = 1
KIND_NAMES = ("natural", "transition")


@dataclass(frozen=True)
class MotionGraphConfig:
    """Knobs of :func:`build_motion_graph` and :func:`label_spans` (defaults follow TANGO)."""

    #: neighbours (each side) that set a node's thresholds; transitions must jump further than this
    window: int = 4
    #: share of the keypoints visible in both frames that must be close in position and velocity
    fraction: float = 0.8
    #: fewer keypoints visible in both frames than this: no transition edge
    min_common: int = 5
    #: face box centres may differ by this share of the source box's size (sqrt of its area)
    face_center_tol: float = 0.1
    #: larger / smaller face box size may be at most this ratio
    face_size_tol: float = 1.1
    #: appearance (when given): each hand region's distance may be this many times the largest to
    #: the frame's own neighbours up to ``window`` away ...
    appearance_tol: float = 1.5
    #: ... the same for the whole frame, looser: a body in motion changes the whole picture more
    #: from frame to frame than two frames on either side of a jump cut with the same pose do
    appearance_frame_tol: float = 3.0
    #: ... or this RMS difference (grey levels over the frame's mean), whichever is larger (still frames)
    appearance_floor: float = 0.06
    #: most transition edges kept per node (the closest poses); bounds memory on long footage
    max_transitions: int = 200
    #: memory bound of one block of the pairwise comparison
    block_bytes: int = 48 << 20
    #: motion energy: moving-average length in frames
    energy_smooth: int = 5
    #: gesture when energy rises above idle + high * (active - idle); idle again below ``low``
    gesture_high: float = 0.5
    gesture_low: float = 0.3
    #: quantiles of the footage's own energy taken as its idle and active levels
    idle_quantile: float = 0.2
    active_quantile: float = 0.9
    #: active level below this multiple of the idle level: the footage has no gestures
    min_contrast: float = 2.0
    #: absolute floor, in shoulder widths per frame (see :func:`body_scale`): a frame moving less
    #: is never a gesture, and footage whose active level is below it has none (pose jitter on a
    #: still person is ~0.002-0.004; real gestures reach 0.015-0.03 at 25 fps)
    gesture_floor: float = 0.006
    #: gesture spans (and idle gaps between gestures) shorter than this many frames are merged away
    min_span: int = 12

    def __post_init__(self) -> None:
        if self.window < 1 or not 0.0 < self.fraction <= 1.0 or self.min_common < 1:
            raise InvalidInputError("motion graph: window >= 1, 0 < fraction <= 1, min_common >= 1")
        if self.face_center_tol < 0 or self.face_size_tol < 1.0 or self.max_transitions < 1:
            raise InvalidInputError("motion graph: face tolerances must be >= 0 / >= 1, max_transitions >= 1")
        if min(self.appearance_tol, self.appearance_frame_tol) <= 0 or self.appearance_floor < 0:
            raise InvalidInputError("motion graph: appearance_tol > 0 and appearance_floor >= 0")
        if not self.gesture_low <= self.gesture_high or self.energy_smooth < 1 or self.min_span < 1:
            raise InvalidInputError("motion graph: gesture_low <= gesture_high, energy_smooth/min_span >= 1")


@dataclass
class MotionGraph:
    """A pruned motion graph. Node ids are source frame indices; edges are CSR over all frames.

    ``successors(i)`` of a frame outside ``nodes`` is empty. ``kinds`` holds :data:`NATURAL` or
    :data:`TRANSITION` per edge, aligned with ``indices``.
    """

    n_frames: int
    nodes: np.ndarray  # (N,) int64, sorted kept frames
    indptr: np.ndarray  # (n_frames + 1,) int64
    indices: np.ndarray  # (E,) int64 target frames
    kinds: np.ndarray  # (E,) uint8
    gesture: np.ndarray  # (n_frames,) bool
    energy: np.ndarray  # (n_frames,) float32
    dropped: np.ndarray  # (n_frames - N,) int64, frames outside the kept component
    cuts: np.ndarray  # (C,) int64, first frame after each scene cut
    version: int = field(default=GRAPH_VERSION)

    def successors(self, i: int) -> np.ndarray:
        """Target frames of the edges leaving frame ``i``."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def edges(self, i: int) -> list[tuple[int, str]]:
        """``(target, "natural" | "transition")`` for each edge leaving frame ``i``."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return [(int(t), KIND_NAMES[k]) for t, k in zip(self.indices[lo:hi], self.kinds[lo:hi], strict=True)]

    @property
    def n_transitions(self) -> int:
        return int(np.count_nonzero(self.kinds == TRANSITION))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "nodes": self.nodes, "indptr": self.indptr, "indices": self.indices, "kinds": self.kinds,
            "gesture": self.gesture, "energy": self.energy, "dropped": self.dropped, "cuts": self.cuts,
        }  # fmt: skip

    def to_json(self) -> str:
        """The graph as a JSON document (versioned)."""
        doc: dict[str, object] = {"version": self.version, "n_frames": self.n_frames}
        doc.update({k: v.tolist() for k, v in self._arrays().items()})
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MotionGraph:
        """Inverse of :meth:`to_json`; raises :class:`InvalidInputError` on a malformed document."""
        try:
            doc = json.loads(text)
            return _from_parts(int(doc["version"]), int(doc["n_frames"]), {k: doc[k] for k in _DTYPES})
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"motion graph: malformed document ({type(e).__name__})") from None

    def save(self, path: Path) -> None:
        """Writes the graph as an ``.npz`` file, atomically."""
        with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
            arrays: dict[str, object] = {"version": self.version, "n_frames": self.n_frames, **self._arrays()}
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> MotionGraph:
        """Inverse of :meth:`save`; raises :class:`InvalidInputError` on a malformed file."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                parts = {k: z[k] for k in _DTYPES}
                return _from_parts(int(z["version"]), int(z["n_frames"]), parts)
        except (ValueError, KeyError, OSError) as e:
            raise InvalidInputError(f"motion graph: malformed file ({type(e).__name__})") from None


_DTYPES = {
    "nodes": np.int64, "indptr": np.int64, "indices": np.int64, "kinds": np.uint8,
    "gesture": np.bool_, "energy": np.float32, "dropped": np.int64, "cuts": np.int64,
}  # fmt: skip


def _from_parts(version: int, n_frames: int, parts: dict[str, object]) -> MotionGraph:
    if version != GRAPH_VERSION:
        raise ValueError(f"unsupported version {version}")
    a: dict[str, np.ndarray] = {k: np.asarray(parts[k], dtype=dt).reshape(-1) for k, dt in _DTYPES.items()}
    ok = (
        n_frames >= 0
        and a["indptr"].shape == (n_frames + 1,)
        and a["indptr"][0] == 0
        and bool(np.all(np.diff(a["indptr"]) >= 0))
        and a["indptr"][-1] == a["indices"].size == a["kinds"].size
        and a["gesture"].size == a["energy"].size == n_frames
        and a["nodes"].size + a["dropped"].size == n_frames
        and all(
            bool(np.all((a[k] >= 0) & (a[k] < max(n_frames, 1)))) for k in ("nodes", "indices", "dropped")
        )
        and bool(np.all(a["kinds"] <= TRANSITION))
    )
    if not ok:
        raise ValueError("inconsistent arrays")
    return MotionGraph(n_frames=n_frames, version=version, **a)


# --- building ---------------------------------------------------------------------------------------


def _velocities(p: np.ndarray, vis: np.ndarray, shot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward difference within a shot; the first frame of a shot takes the forward difference."""
    v = np.zeros_like(p)
    ok = np.zeros(vis.shape, dtype=bool)
    same = shot[1:] == shot[:-1]
    back_ok = vis[1:] & vis[:-1] & same[:, None]
    v[1:] = p[1:] - p[:-1]
    ok[1:] = back_ok
    first = np.concatenate([[True], ~same])  # frames that start a shot
    fwd_ok = np.zeros(vis.shape, dtype=bool)
    fwd_ok[:-1] = back_ok  # forward difference of t is the backward difference of t + 1
    v[:-1][first[:-1]] = v[1:][first[:-1]]
    ok[first] = fwd_ok[first]
    return v, ok


def _thresholds(
    p: np.ndarray, v: np.ndarray, pos_ok: np.ndarray, vel_ok: np.ndarray, shot: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and keypoint: the largest squared position / velocity distance to the frames up to
    ``window`` away in the same shot (NaN where no neighbour is usable)."""
    t_n = p.shape[0]
    thr_p = np.full(pos_ok.shape, -np.inf, dtype=p.dtype)
    thr_v = np.full(pos_ok.shape, -np.inf, dtype=p.dtype)
    for d in [*range(-window, 0), *range(1, window + 1)]:
        lo, hi = max(0, -d), min(t_n, t_n - d)  # frames t whose neighbour t + d exists
        if lo >= hi:
            continue
        t = slice(lo, hi)
        n = slice(lo + d, hi + d)
        same = (shot[t] == shot[n])[:, None]
        dp = np.where(same & pos_ok[t] & pos_ok[n], sqdist(p[t], p[n]), -np.inf)
        dv = np.where(same & vel_ok[t] & vel_ok[n], sqdist(v[t], v[n]), -np.inf)
        np.maximum(thr_p[t], dp, out=thr_p[t])
        np.maximum(thr_v[t], dv, out=thr_v[t])
    thr_p[np.isneginf(thr_p)] = np.nan
    thr_v[np.isneginf(thr_v)] = np.nan
    return thr_p, thr_v


_Face = tuple[np.ndarray, np.ndarray, np.ndarray]


def _transition_block(
    rows: slice,
    p: np.ndarray,
    v: np.ndarray,
    usable: tuple[np.ndarray, np.ndarray],
    thr: tuple[np.ndarray, np.ndarray],
    face: _Face,
    cfg: MotionGraphConfig,
    looks: Looks | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Transition targets of the frames in ``rows`` against all frames: (sources, targets)."""
    usable_i, usable_j = usable
    thr_p, thr_v = thr
    centre, size, face_valid = face
    t_n = p.shape[0]
    i = np.arange(rows.start, rows.stop)
    # cheap (B, T) pair rules first: jump length and face box alignment
    pair = np.abs(i[:, None] - np.arange(t_n)[None, :]) > cfg.window
    ratio = size[i, None] / size[None, :]
    pair &= np.sqrt(sqdist(centre[i, None], centre[None])) <= cfg.face_center_tol * size[i, None]
    pair &= (ratio <= cfg.face_size_tol) & (ratio >= 1.0 / cfg.face_size_tol)
    pair &= face_valid[i, None] & face_valid[None, :]
    if looks is not None:
        pair &= appearance_pairs(rows, *looks)
    # positions over the whole block, (B, T, K); velocities only for pairs whose positions pass
    common = usable_i[rows, None, :] & usable_j[None, :, :]
    dp = sqdist(p[rows, None], p[None])
    close = common & (dp <= thr_p[rows, None])
    n_common = common.sum(axis=2)
    need = np.ceil(cfg.fraction * n_common - 1e-9)
    b, dst = np.nonzero(pair & (n_common >= cfg.min_common) & (close.sum(axis=2) >= need))
    src = b + rows.start
    close_v = close[b, dst] & (sqdist(v[src], v[dst]) <= thr_v[src])
    ok = close_v.sum(axis=1) >= need[b, dst]
    b, src, dst = b[ok], src[ok], dst[ok]
    counts = np.bincount(b, minlength=i.size)
    if counts.max(initial=0) > cfg.max_transitions:
        # too many look-alikes (long idle footage): keep the closest poses of each crowded node
        score = np.where(common[b, dst], dp[b, dst] / (thr_p[src] + 1e-6), 0.0).sum(axis=1)
        order = np.lexsort((score / n_common[b, dst], b))
        rank = np.arange(b.size) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = np.sort(order[rank < cfg.max_transitions])
        src, dst = src[keep], dst[keep]
    return src, dst


def _largest_scc(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest strongly connected component that has a cycle (empty if none)."""
    if n == 0 or src.size == 0:
        return np.zeros(n, dtype=bool)
    adj = csr_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(adj, directed=True, connection="strong")  # iterative, no recursion
    sizes = np.bincount(labels)
    best = int(np.argmax(sizes))
    if sizes[best] < 2:  # no self-loops exist, so a lone frame is a dead end
        return np.zeros(n, dtype=bool)
    return labels == best


def _check_inputs(keypoints: np.ndarray, visible: np.ndarray, face_boxes: np.ndarray) -> None:
    if keypoints.ndim != 3 or keypoints.shape[2] != 2:
        raise InvalidInputError("motion graph: keypoints must be (T, K, 2)")
    if visible.shape != keypoints.shape[:2] or face_boxes.shape != (keypoints.shape[0], 4):
        raise InvalidInputError("motion graph: visible must be (T, K) and face_boxes (T, 4)")


def build_motion_graph(
    keypoints: np.ndarray,
    visible: np.ndarray,
    face_boxes: np.ndarray,
    cuts: np.ndarray,
    config: MotionGraphConfig,
    appearance: Appearance | None = None,
) -> MotionGraph:
    """Builds the pruned motion graph of a footage from its poses (see the module docstring).

    ``keypoints`` (T, K, 2) in pixels, ``visible`` (T, K); invisible or non-finite keypoints are left
    out of every comparison. ``face_boxes`` (T, 4) as x0, y0, x1, y1; a frame without a valid box gets
    no transition edge. ``cuts`` lists the first frame of each new shot. The result may be empty
    (``nodes`` empty) when the footage has no loop at all. ``appearance``: the frames' descriptors
    (:func:`livedh.avatar.motion_labels.appearance_features`); None compares poses only.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    vis = np.asarray(visible, dtype=bool)
    boxes = np.asarray(face_boxes, dtype=np.float64)
    _check_inputs(kp, vis, boxes)
    t_n, k_n = vis.shape
    vis = vis & np.isfinite(kp).all(axis=2)
    kp = np.where(vis[..., None], kp, 0.0).astype(np.float32)
    shot = shot_ids(t_n, cuts)
    v, vel_ok = _velocities(kp, vis, shot)
    thr_p, thr_v = _thresholds(kp, v, vis, vel_ok, shot, config.window)
    usable_j = vis & vel_ok
    usable_i = usable_j & np.isfinite(thr_p) & np.isfinite(thr_v)
    face = face_geometry(boxes)
    looks = None if appearance is None else appearance_limits(appearance, shot, config)
    # a block holds ~6 (B, T, K) float32/bool temporaries
    block = max(1, config.block_bytes // max(1, 6 * 4 * t_n * k_n))
    srcs, dsts = [], []
    for start in range(0, t_n, block):
        s, d = _transition_block(
            slice(start, min(t_n, start + block)),
            kp,
            v,
            (usable_i, usable_j),
            (thr_p, thr_v),
            face,
            config,
            looks,
        )
        srcs.append(s)
        dsts.append(d)
    nat = np.nonzero(shot[1:] == shot[:-1])[0]
    src = np.concatenate([nat, *srcs]).astype(np.int64)
    dst = np.concatenate([nat + 1, *dsts]).astype(np.int64)
    kind = np.concatenate([np.full(nat.size, NATURAL), np.full(src.size - nat.size, TRANSITION)])
    energy = motion_energy(kp, vis, cuts=cuts, smooth=config.energy_smooth)
    gesture = label_spans(energy, config, scale=body_scale(kp, vis, boxes))
    return _pruned(
        t_n, (src, dst, kind), gesture=gesture, energy=energy.astype(np.float32),
        cuts=np.unique(np.asarray(cuts, dtype=np.int64).reshape(-1)),
    )  # fmt: skip


def _pruned(
    t_n: int,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    gesture: np.ndarray,
    energy: np.ndarray,
    cuts: np.ndarray,
) -> MotionGraph:
    """The graph of ``edges`` (sources, targets, kinds) cut down to its largest strongly connected
    component; a duplicate edge keeps its natural kind."""
    src, dst, kind = (np.asarray(a, dtype=np.int64) for a in edges)
    keep = _largest_scc(t_n, src, dst)
    inside = keep[src] & keep[dst]
    src, dst, kind = src[inside], dst[inside], kind[inside]
    order = np.lexsort((kind, dst, src))
    src, dst, kind = src[order], dst[order], kind[order]
    first = np.ones(src.size, dtype=bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])  # natural (0) sorts first
    src, dst, kind = src[first], dst[first], kind[first]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=t_n))]).astype(np.int64)
    return MotionGraph(
        n_frames=t_n,
        nodes=np.nonzero(keep)[0].astype(np.int64),
        indptr=indptr,
        indices=dst,
        kinds=kind.astype(np.uint8),
        gesture=gesture,
        energy=energy,
        dropped=np.nonzero(~keep)[0].astype(np.int64),
        cuts=cuts,
    )


# --- action clips -----------------------------------------------------------------------------------


def join_spans(
    graph: MotionGraph,
    keypoints: np.ndarray,
    visible: np.ndarray,
    spans: Sequence[tuple[int, int]],
    *,
    k: int = 8,
    face_boxes: np.ndarray | None = None,
    min_common: int = 5,
    appearance: Appearance | None = None,
    config: MotionGraphConfig | None = None,
) -> MotionGraph:
    """Joins each span ``[start, end)`` of frames (an action clip, played forward in one go) to the
    graph at its ends: transition edges into ``start`` from the ``k`` frames of the rest of the graph
    whose pose is closest to it, and out of ``end - 1`` to the ``k`` frames closest to that one. The
    span's frames are chained (a cut inside a span becomes a transition, so it is blended). Pose
    distance is the mean keypoint distance over keypoints visible in both frames (at least
    ``min_common``); the face box centre breaks ties and stands in when poses are missing. With
    ``appearance``, frames that also look alike by the graph's rule (``config``'s tolerances) come
    first, so a clip is entered without a double exposure wherever the footage allows. Raises
    InvalidInputError when a span cannot be joined (no frame of the graph lies outside the spans)."""
    t_n = graph.n_frames
    kp = np.asarray(keypoints, dtype=np.float32)
    vis = np.asarray(visible, dtype=bool) & np.isfinite(kp).all(axis=2)
    if kp.shape[:2] != vis.shape or kp.shape[0] != t_n:
        raise InvalidInputError(f"join_spans: keypoints/visible must cover the graph's {t_n} frames")
    centre = None if face_boxes is None else face_geometry(np.asarray(face_boxes))[0]
    in_span = np.zeros(t_n, dtype=bool)
    for start, end in spans:
        if not 0 <= start < end <= t_n:
            raise InvalidInputError(f"join_spans: span [{start}, {end}) outside 0..{t_n}")
        in_span[start:end] = True
    in_graph = np.zeros(t_n, dtype=bool)
    in_graph[graph.nodes] = True
    candidates = np.nonzero(in_graph & ~in_span)[0]
    old_src = np.repeat(np.arange(t_n, dtype=np.int64), np.diff(graph.indptr))
    srcs, dsts, kinds = [old_src], [graph.indices], [graph.kinds.astype(np.int64)]
    shot = shot_ids(t_n, graph.cuts)
    looks = None if appearance is None else appearance_limits(appearance, shot, config or MotionGraphConfig())
    for start, end in spans:
        if candidates.size == 0 or k < 1:
            raise InvalidInputError(
                f"frames {start}-{end} cannot be joined to the motion graph: the rest of the footage "
                "has no loop to come from or go back to"
            )
        chain = np.arange(start, end - 1, dtype=np.int64)
        into = _closest(kp, vis, centre, start, candidates, k, min_common, looks)
        out = _closest(kp, vis, centre, end - 1, candidates, k, min_common, looks)
        srcs += [chain, into, np.full(out.size, end - 1)]
        dsts += [chain + 1, np.full(into.size, start), out]
        kinds += [np.where(shot[chain] == shot[chain + 1], NATURAL, TRANSITION),
                  np.full(into.size + out.size, TRANSITION)]  # fmt: skip
    joined = _pruned(
        t_n, (np.concatenate(srcs), np.concatenate(dsts), np.concatenate(kinds)),
        gesture=graph.gesture, energy=graph.energy, cuts=graph.cuts,
    )  # fmt: skip
    kept = np.zeros(t_n, dtype=bool)
    kept[joined.nodes] = True
    if not kept[in_span].all():  # only when the graph's own component was tiny
        raise InvalidInputError("an action clip could not be joined to the motion graph's main loop")
    return joined


def _closest(
    kp: np.ndarray,
    vis: np.ndarray,
    centre: np.ndarray | None,
    ref: int,
    cands: np.ndarray,
    k: int,
    min_common: int,
    looks: Looks | None,
) -> np.ndarray:
    """The ``k`` candidates whose pose is closest to frame ``ref``'s, those that look like it first
    (see :func:`join_spans`)."""
    common = vis[cands] & vis[ref][None, :]
    n_common = common.sum(axis=1)
    dist = np.sqrt(sqdist(kp[cands], kp[ref][None]))
    pose = np.where(n_common >= min_common, (dist * common).sum(axis=1) / np.maximum(n_common, 1), np.inf)
    face = np.zeros(cands.size) if centre is None else np.sqrt(sqdist(centre[cands], centre[ref][None]))
    unlike = np.zeros(cands.size, dtype=bool)
    if looks is not None:
        app, limit, _ = looks
        unlike = ~(appearance_distance(app, cands, np.full(cands.size, ref)) <= limit[ref]).all(axis=1)
    order = np.lexsort((cands, face, pose, unlike))
    return cands[order[:k]].astype(np.int64)
