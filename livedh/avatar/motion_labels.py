"""What the motion graph (livedh/avatar/motion_graph.py) knows of each footage frame besides its
pose: scene cuts, motion energy and the idle / gesture labels it gives, the person's size, and a
small appearance descriptor (the whole frame and a patch around each hand, in grey), so that two
frames whose poses match but whose pictures do not (a prop in one hand only) get no transition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from livedh.errors import InvalidInputError

if TYPE_CHECKING:
    from livedh.avatar.motion_graph import MotionGraphConfig


def shot_ids(n_frames: int, cuts: np.ndarray) -> np.ndarray:
    """Shot number of each frame: it increases by one at each cut (cut = first frame of a new shot)."""
    starts = np.zeros(n_frames, dtype=np.int64)
    c = np.asarray(cuts, dtype=np.int64).reshape(-1)
    starts[c[(c > 0) & (c < n_frames)]] = 1
    return np.cumsum(starts)


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared 2-D distance over the last axis; one formula everywhere so equal poses tie exactly."""
    dx = a[..., 0] - b[..., 0]
    dy = a[..., 1] - b[..., 1]
    return dx * dx + dy * dy


def face_geometry(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face box centres, sizes (sqrt of the area) and validity (no face: no transitions)."""
    b = np.asarray(boxes, dtype=np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    valid = np.isfinite(b).all(axis=1) & (w > 0) & (h > 0)
    size = np.sqrt(np.where(valid, w * h, 1.0))
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    return np.where(valid[:, None], centre, 0.0), size, valid


def detect_cuts(
    frames_small: np.ndarray,
    *,
    abs_threshold: float = 30.0,
    rel_threshold: float = 6.0,
    spike: float = 4.0,
    spike_min: float = 4.0,
    chunk: int = 512,
) -> np.ndarray:
    """First frames of new shots in grayscale thumbnails (T, h, w) uint8: the mean absolute
    difference to the previous frame exceeds ``rel_threshold`` times the footage's own median
    difference (so fast motion is not a cut) and either ``abs_threshold`` grey levels (a scene
    change) or, for a jump cut in front of the same background, ``spike_min`` grey levels and
    ``spike`` times every difference within two frames of it (motion is sustained, a cut is not)."""
    f = np.asarray(frames_small)
    if f.ndim != 3:
        raise InvalidInputError("detect_cuts: frames must be (T, h, w) grayscale")
    if f.shape[0] < 2:
        return np.zeros(0, dtype=np.int64)
    diffs = []
    for lo in range(1, f.shape[0], chunk):  # bounded int16 temporaries
        hi = min(f.shape[0], lo + chunk)
        d = np.abs(f[lo:hi].astype(np.int16) - f[lo - 1 : hi - 1].astype(np.int16))
        diffs.append(d.mean(axis=(1, 2)))
    diff = np.concatenate(diffs)
    relative = rel_threshold * float(np.median(diff))
    padded = np.pad(diff, 2)
    near = np.max([padded[k : k + diff.size] for k in (0, 1, 3, 4)], axis=0)  # 2 frames each side
    jump = (diff > spike_min) & (diff > spike * near)
    return (np.nonzero((diff > relative) & ((diff > abs_threshold) | jump))[0] + 1).astype(np.int64)


def motion_energy(
    keypoints: np.ndarray, visible: np.ndarray, *, cuts: np.ndarray | None = None, smooth: int = 5
) -> np.ndarray:
    """Mean keypoint speed (units per frame) of each frame, over the keypoints visible in it and the
    frame before (not across a cut), then a centred moving average of ``smooth`` frames. Frames
    with no measurable keypoint take the value interpolated from their neighbours."""
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool) & np.isfinite(kp).all(axis=2)
    t_n = vis.shape[0]
    if t_n == 0:
        return np.zeros(0)
    shot = shot_ids(t_n, np.zeros(0) if cuts is None else cuts)
    ok = np.zeros(vis.shape, dtype=bool)
    ok[1:] = vis[1:] & vis[:-1] & (shot[1:] == shot[:-1])[:, None]
    speed = np.zeros(vis.shape)
    step = np.where(ok[1:, :, None], kp[1:] - np.where(vis[:-1, :, None], kp[:-1], 0.0), 0.0)
    speed[1:] = np.sqrt((step**2).sum(axis=2))
    count = ok.sum(axis=1)
    has = count > 0
    if not has.any():
        return np.zeros(t_n)
    raw = np.where(has, speed.sum(axis=1) / np.maximum(count, 1), 0.0)
    raw = np.interp(np.arange(t_n), np.nonzero(has)[0], raw[has])
    kernel = np.ones(smooth) / smooth
    padded = np.pad(raw, (smooth // 2, smooth - 1 - smooth // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a bool array: starts, lengths, values."""
    change = np.nonzero(mask[1:] != mask[:-1])[0] + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [mask.size]]))
    return starts, lengths, mask[starts]


#: Pose's shoulders (the same positions in pose.UPPER_BODY's 23 points and Pose's own 33)
_SHOULDERS = (11, 12)
#: a shoulder width is about this many face boxes (the lip crop is about a face wide)
_SHOULDERS_PER_FACE = 2.5


def body_scale(keypoints: np.ndarray, visible: np.ndarray, face_boxes: np.ndarray | None = None) -> float:
    """The filmed person's size in pixels: the median shoulder width over the frames where both
    shoulders are visible, or, where that is under a quarter of the frames, ``_SHOULDERS_PER_FACE``
    times the median face box size (sqrt of its area). 0.0 when neither is known."""
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    if kp.ndim == 3 and kp.shape[1] > max(_SHOULDERS):
        both = vis[:, _SHOULDERS[0]] & vis[:, _SHOULDERS[1]] & np.isfinite(kp[:, _SHOULDERS]).all(axis=(1, 2))
        if both.size and both.mean() >= 0.25:
            width = np.sqrt(sqdist(kp[both, _SHOULDERS[0]], kp[both, _SHOULDERS[1]]))
            return float(np.median(width))
    if face_boxes is not None and len(face_boxes):
        _, size, valid = face_geometry(np.asarray(face_boxes))
        if valid.any():
            return _SHOULDERS_PER_FACE * float(np.median(size[valid]))
    return 0.0


def label_spans(energy: np.ndarray, config: MotionGraphConfig, *, scale: float = 0.0) -> np.ndarray:
    """Gesture (True) vs idle per frame, with hysteresis between thresholds set from the footage's
    own energy distribution, gesture spans shorter than ``min_span`` dropped and short idle gaps
    between gestures filled. ``scale``: the person's shoulder width in the energy's units (see
    :func:`body_scale`); it sets the absolute floor ``config.gesture_floor * scale`` under which
    nothing is a gesture, so a still or barely moving person is all idle (0: no floor)."""
    e = np.asarray(energy, dtype=np.float64)
    if e.size == 0:
        return np.zeros(0, dtype=bool)
    idle, active = np.quantile(e, [config.idle_quantile, config.active_quantile])
    floor = config.gesture_floor * max(scale, 0.0)
    if active <= 0 or active < config.min_contrast * max(idle, 1e-9) or active < floor:
        return np.zeros(e.size, dtype=bool)  # no gestures worth the name in this footage
    high = max(idle + config.gesture_high * (active - idle), floor)
    low_floor = floor * config.gesture_low / max(config.gesture_high, 1e-9)  # the same hysteresis ratio
    low = min(high, max(idle + config.gesture_low * (active - idle), low_floor))
    # hysteresis, vectorised: the latest threshold crossed decides (forward fill of +1 / -1 marks)
    mark = np.where(e > high, 1, np.where(e < low, -1, 0))
    idx = np.where(mark != 0, np.arange(e.size), 0)
    np.maximum.accumulate(idx, out=idx)
    gesture = mark[idx] == 1  # before the first mark, idx is 0 and mark[0] is 0 or its own verdict
    for value in (True, False):  # drop short gestures, then fill short idle gaps between gestures
        starts, lengths, values = _runs(gesture)
        short = (values == value) & (lengths < config.min_span)
        if not value:
            short &= (starts > 0) & (starts + lengths < e.size)  # only gaps between two gestures
        for s, n in zip(starts[short], lengths[short], strict=True):
            gesture[s : s + n] = not value
    return gesture


# --- appearance --------------------------------------------------------------------------------------

#: Pose's hand points (wrist, pinky, index, thumb) of the left and the right hand (pose.UPPER_BODY's
#: positions, which are also Pose's own)
HANDS = ((15, 17, 19, 21), (16, 18, 20, 22))
#: each descriptor component is its region's grey levels resampled to this many pixels square
APPEARANCE_SIDE = 12
#: a hand patch is this many shoulder widths square: the hand and what it holds
HAND_PATCH = 0.6


class Appearance(NamedTuple):
    """Appearance descriptors of a footage: component 0 is the whole frame, 1 and 2 the patches
    around the left and right hand. Grey levels are divided by the frame's mean (exposure)."""

    features: np.ndarray  # (T, C, D) float32
    present: np.ndarray  # (T, C) bool: the region is in view (a hand out of view has no patch)


def appearance_features(
    grey: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, *, frame_width: float
) -> Appearance:
    """Descriptors of small grey frames (T, h, w) uint8 (any size, e.g. a 1/4 decode), with the
    pose in the full frame's pixels (``frame_width`` wide). A hand's patch is centred on its
    visible points; a hand with none visible is absent."""
    g = np.asarray(grey)
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool) & np.isfinite(kp).all(axis=2)
    if g.ndim != 3 or kp.shape[:1] != g.shape[:1] or vis.shape != kp.shape[:2] or kp.shape[1] <= 22:
        raise InvalidInputError("appearance: grey frames (T, h, w) and a (T, 23, 2) pose per frame")
    t_n, _, w = g.shape
    side = APPEARANCE_SIDE
    to_grey = w / max(float(frame_width), 1.0)
    shoulders = body_scale(kp, vis) * to_grey
    patch = max(4, round(HAND_PATCH * shoulders if shoulders > 0 else 0.15 * w))
    present = np.zeros((t_n, 1 + len(HANDS)), dtype=bool)
    present[:, 0] = True
    centres = []
    for c, hand in enumerate(HANDS, start=1):
        v = vis[:, hand]
        present[:, c] = v.any(axis=1)
        centres.append((kp[:, hand] * v[..., None]).sum(axis=1) / np.maximum(v.sum(axis=1), 1)[:, None])
    features = np.zeros((t_n, present.shape[1], side * side), dtype=np.float32)
    for i in range(t_n):  # ~10 us per call: a loop of cv2 calls is cheaper than a gather in numpy
        features[i, 0] = cv2.resize(g[i], (side, side), interpolation=cv2.INTER_AREA).ravel()
        for c, centre in enumerate(centres, start=1):
            if present[i, c]:
                x, y = (centre[i] * to_grey).tolist()
                cut = cv2.getRectSubPix(g[i], (patch, patch), (x, y))
                features[i, c] = cv2.resize(cut, (side, side), interpolation=cv2.INTER_AREA).ravel()
    mean = g.reshape(t_n, -1).mean(axis=1, dtype=np.float64)
    features /= np.maximum(mean, 1.0).astype(np.float32)[:, None, None]
    return Appearance(features, present)


def appearance_distance(a: Appearance, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(M, C) distance of the components of frames ``i[m]`` and ``j[m]``: the RMS difference of
    their features where both are present, 0 where neither is, +inf where one only is (a hand
    in view in one frame and not in the other)."""
    f, present = a
    d = np.sqrt(np.mean(np.square(f[i] - f[j]), axis=2))
    both, either = present[i] & present[j], present[i] | present[j]
    return np.where(both, d, np.where(either, np.inf, 0.0))


#: descriptors, per-frame distance limits (T, C), squared feature norms (T, C)
Looks = tuple[Appearance, np.ndarray, np.ndarray]


def appearance_limits(app: Appearance, shot: np.ndarray, cfg: MotionGraphConfig) -> Looks:
    """Checked descriptors, each frame's largest distance per region that a transition from it may
    have (the tolerance times its neighbours', at least the floor), and the squared feature norms."""
    f = np.asarray(app.features, dtype=np.float32)
    present = np.asarray(app.present, dtype=bool)
    if f.ndim != 3 or present.shape != f.shape[:2] or f.shape[0] != shot.size:
        raise InvalidInputError(f"motion graph: appearance must be (T, C, D) features for {shot.size} frames")
    app = Appearance(f, present)
    tol = np.full(f.shape[1], cfg.appearance_tol)
    tol[0] = cfg.appearance_frame_tol
    limit = tol * np.maximum(_appearance_thresholds(app, shot, cfg.window), cfg.appearance_floor)
    return app, limit, np.einsum("tcd,tcd->tc", f, f)


def _appearance_thresholds(app: Appearance, shot: np.ndarray, window: int) -> np.ndarray:
    """(T, C): each frame's largest appearance distance to the frames up to ``window`` away in the
    same shot, per region (+inf where a hand comes or goes among them: that hand is not judged)."""
    t_n = shot.size
    thr = np.zeros(app.present.shape)
    for d in [*range(-window, 0), *range(1, window + 1)]:
        t = np.arange(max(0, -d), min(t_n, t_n - d))
        t = t[shot[t] == shot[t + d]]
        thr[t] = np.maximum(thr[t], appearance_distance(app, t, t + d))
    return thr


def appearance_pairs(rows: slice, app: Appearance, limit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """(B, T): frame pairs whose every region is within the row frame's ``limit`` (see
    :func:`appearance_distance`), by one matrix product per region."""
    f, present = app
    ok = np.ones((rows.stop - rows.start, f.shape[0]), dtype=bool)
    for c in range(f.shape[1]):
        cross = f[rows, c] @ f[:, c].T
        sq = (norms[rows, c, None] + norms[None, :, c] - 2.0 * cross) / f.shape[2]
        both = present[rows, c, None] & present[None, :, c]
        near = np.sqrt(np.maximum(sq, 0.0)) <= limit[rows, c, None]
        neither = ~(present[rows, c, None] | present[None, :, c])
        ok &= np.where(both, near, neither) | np.isinf(limit[rows, c, None])
    return ok
