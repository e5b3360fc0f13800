"""Motion graph construction (livedh/avatar/motion_graph.py) on synthetic poses with known answers."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest

from livedh.avatar.motion_graph import (
    NATURAL,
    TRANSITION,
    MotionGraph,
    MotionGraphConfig,
    build_motion_graph,
)
from livedh.avatar.motion_labels import (
    Appearance,
    appearance_features,
    body_scale,
    detect_cuts,
    label_spans,
    motion_energy,
)
from livedh.errors import InvalidInputError

CFG = MotionGraphConfig()
BOX = np.array([200.0, 100.0, 300.0, 220.0])


def _curve(n: int, k: int, rng: np.random.Generator, offset: float = 0.0, start: int = 0) -> np.ndarray:
    """(n, k, 2) poses moving monotonically and accelerating: pose distance grows with the frame gap."""
    t = np.arange(start, start + n, dtype=np.float64)
    s = t + 0.02 * t**2
    dirs = rng.uniform(0.5, 2.0, (k, 2))
    base = rng.uniform(100, 400, (k, 2)) + offset
    return base[None] + s[:, None, None] * dirs[None]


def _three_shots(k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shots A = 0..49, B = 50..99 (far away), C = 100..149 (an exact copy of A); cuts at 50 and 100."""
    rng = np.random.default_rng(1)
    a = _curve(50, k, rng)
    b = _curve(50, k, rng, offset=5000.0)
    kp = np.concatenate([a, b, a.copy()])
    return kp, np.ones(kp.shape[:2], dtype=bool), np.tile(BOX, (150, 1)), np.array([50, 100])


def _expected_three_shots() -> set[tuple[int, int]]:
    pairs = set()
    for i in range(50):
        for m in range(max(0, i - 4), min(49, i + 4) + 1):
            pairs |= {(i, 100 + m), (100 + i, m)}
    return pairs


def _transitions(g: MotionGraph) -> set[tuple[int, int]]:
    return {(i, t) for i in range(g.n_frames) for t, kind in g.edges(i) if kind == "transition"}


def _assert_strongly_connected(g: MotionGraph) -> None:
    nodes = set(g.nodes.tolist())
    assert nodes
    reverse: dict[int, list[int]] = {n: [] for n in nodes}
    for i in nodes:
        succ = g.successors(i).tolist()
        assert succ, f"dead end at {i}"
        assert set(succ) <= nodes
        for t in succ:
            reverse[t].append(i)
    for step in (lambda n: g.successors(n).tolist(), lambda n: reverse[n]):
        seen, todo = {int(g.nodes[0])}, deque([int(g.nodes[0])])
        while todo:
            for m in step(todo.popleft()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        assert seen == nodes


def test_transitions_exactly_between_matching_frames() -> None:
    g = build_motion_graph(*_three_shots(), CFG)
    assert _transitions(g) == _expected_three_shots()
    _assert_strongly_connected(g)


def _grey_frames(kp: np.ndarray, vis: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """128 px grey pictures of ``kp`` (frame pixels / 8): a dark disc on each visible hand, and a
    bright block (a prop) in the left hand of the frames where ``prop``."""
    frames = np.full((kp.shape[0], 128, 128), 120, np.uint8)
    for t, frame in enumerate(frames):
        frame[:, :] += (np.arange(128) // 16).astype(np.uint8)[None, :]  # a background, not flat
        for c, hand in enumerate(((15, 17, 19, 21), (16, 18, 20, 22))):
            if vis[t, hand].any():
                x, y = (kp[t, hand].mean(axis=0) / 8).round().astype(int).tolist()
                cv2.circle(frame, (x, y), 3, 60, -1)
                if c == 0 and prop[t]:
                    cv2.rectangle(frame, (x - 3, y - 6), (x + 3, y + 6), 230, -1)
    return frames


def _a_to_c(g: MotionGraph) -> set[tuple[int, int]]:
    return {(i, t) for i, t in _transitions(g) if (i < 50) != (t < 50)}


def test_appearance_keeps_look_alikes_and_drops_a_prop_in_one_hand() -> None:
    kp, vis, boxes, cuts = _three_shots(k=23)  # C (100..149) is A's poses again
    same = appearance_features(_grey_frames(kp, vis, np.zeros(150, bool)), kp, vis, frame_width=1024)
    g = build_motion_graph(kp, vis, boxes, cuts, CFG, appearance=same)
    assert _transitions(g) == _expected_three_shots()  # same poses, same pictures: as pose-only
    prop = np.zeros(150, bool)
    prop[125:] = True  # the second half of C holds a prop; its poses are A's all the same
    looks = appearance_features(_grey_frames(kp, vis, prop), kp, vis, frame_width=1024)
    g = build_motion_graph(kp, vis, boxes, cuts, CFG, appearance=looks)
    found = _a_to_c(g)
    assert not {(i, t) for i, t in found if max(i, t) >= 125 + CFG.window}  # no double exposure
    clear = {(i, t) for i, t in _expected_three_shots() if max(i, t) < 125 - CFG.window}
    assert clear and clear <= found  # while the frames without a prop keep theirs
    _assert_strongly_connected(g)


def test_appearance_drops_pose_matches_with_a_hand_out_of_view_in_one_frame() -> None:
    kp, vis, boxes, cuts = _three_shots(k=23)
    vis[100:, 15:] = False  # C: the same pose, but the hands are out of the frame
    grey = _grey_frames(kp, vis, np.zeros(150, bool))
    assert _a_to_c(build_motion_graph(kp, vis, boxes, cuts, CFG))  # the pose rule alone allows it
    looks = appearance_features(grey, kp, vis, frame_width=1024)
    assert looks.present[:100, 1:].all() and not looks.present[100:, 1:].any()
    assert not _a_to_c(build_motion_graph(kp, vis, boxes, cuts, CFG, appearance=looks))


def test_appearance_must_cover_the_frames() -> None:
    kp, vis, boxes, cuts = _three_shots(k=23)
    bad = Appearance(np.zeros((149, 3, 4), np.float32), np.ones((149, 3), bool))
    with pytest.raises(InvalidInputError, match="appearance"):
        build_motion_graph(kp, vis, boxes, cuts, CFG, appearance=bad)
    with pytest.raises(InvalidInputError, match="appearance"):
        MotionGraphConfig(appearance_tol=0.0)


def test_cuts_are_never_crossed_by_natural_edges_and_dead_shot_is_dropped() -> None:
    g = build_motion_graph(*_three_shots(), CFG)
    for i in range(g.n_frames):
        for t, kind in g.edges(i):
            if kind == "natural":
                assert t == i + 1 and t not in (50, 100)
    assert 50 not in g.successors(49).tolist()
    # shot B has no way back (a chain ending at a cut): it is dropped whole
    assert g.dropped.tolist() == list(range(50, 100))
    assert g.nodes.tolist() == [*range(50), *range(100, 150)]


def test_scc_pruning_removes_dead_end_tail() -> None:
    kp, vis, boxes, cuts = _three_shots()
    rng = np.random.default_rng(1)
    a = _curve(80, 10, rng)  # same generator draws as shot A: its frames 50..79 continue A's motion
    kp = np.concatenate([kp, a[50:]])
    vis = np.ones(kp.shape[:2], dtype=bool)
    boxes = np.tile(BOX, (kp.shape[0], 1))
    g = build_motion_graph(kp, vis, boxes, cuts, CFG)
    # tail frames 150..153 are close enough to A's last frames to jump back; 154.. never return
    assert g.dropped.tolist() == [*range(50, 100), *range(154, 180)]
    assert {t for t in g.successors(153).tolist() if t < 50} == {49}
    _assert_strongly_connected(g)


def test_eighty_percent_rule() -> None:
    kp, vis, boxes, cuts = _three_shots(k=10)
    one_off, three_off = kp.copy(), kp.copy()
    one_off[100:, 0] += 500.0  # 1 keypoint of 10 far: 90% close, transitions stay
    three_off[100:, :3] += 500.0  # 3 of 10 far: 70% close, none
    assert _transitions(build_motion_graph(one_off, vis, boxes, cuts, CFG)) == _expected_three_shots()
    g = build_motion_graph(three_off, vis, boxes, cuts, CFG)
    assert g.n_transitions == 0 and g.nodes.size == 0


def test_same_poses_moving_the_other_way_are_no_transition() -> None:
    kp, vis, boxes, cuts = _three_shots()
    kp[100:] = kp[:50][::-1]  # shot C plays shot A backwards: positions match, velocities do not
    g = build_motion_graph(kp, vis, boxes, cuts, CFG)
    assert g.n_transitions == 0


@pytest.mark.parametrize(
    ("shift", "scale", "allowed"),
    [(0.0, 1.0, True), (5.0, 1.0, True), (40.0, 1.0, False), (0.0, 1.05, True), (0.0, 1.3, False)],
)
def test_face_box_rule(shift: float, scale: float, allowed: bool) -> None:
    kp, vis, boxes, cuts = _three_shots()
    centre = (BOX[:2] + BOX[2:]) / 2 + shift
    half = (BOX[2:] - BOX[:2]) / 2 * scale
    boxes[100:] = np.concatenate([centre - half, centre + half])
    g = build_motion_graph(kp, vis, boxes, cuts, CFG)
    assert (_transitions(g) == _expected_three_shots()) if allowed else g.n_transitions == 0


def test_frames_without_face_get_no_transitions() -> None:
    kp, vis, boxes, cuts = _three_shots()
    boxes[[20, 120]] = np.nan  # matching poses, both without a face: still no jump between them
    boxes[[30, 130]] = 0.0
    g = build_motion_graph(kp, vis, boxes, cuts, CFG)
    pairs = _transitions(g)
    assert pairs and not any({20, 120, 30, 130} & {i, j} for i, j in pairs)


def _reference_transitions(kp, vis, boxes, cuts, cfg):  # type: ignore[no-untyped-def]
    """The rule written out frame by frame, keypoint by keypoint (slow, obvious)."""
    t_n, k_n = vis.shape
    shot = np.cumsum(np.isin(np.arange(t_n), cuts[cuts > 0]))
    p = kp.astype(np.float64)

    def vel(t: int, k: int) -> np.ndarray | None:
        if t > 0 and shot[t - 1] == shot[t]:
            a, b = t - 1, t
        elif t + 1 < t_n and shot[t + 1] == shot[t]:
            a, b = t, t + 1
        else:
            return None
        return p[b, k] - p[a, k] if vis[a, k] and vis[b, k] else None

    v = [[vel(t, k) for k in range(k_n)] for t in range(t_n)]
    thr: dict[tuple[int, int], tuple[float, float]] = {}
    for t in range(t_n):
        for k in range(k_n):
            dps, dvs = [], []
            for n in range(t - cfg.window, t + cfg.window + 1):
                if n == t or not 0 <= n < t_n or shot[n] != shot[t]:
                    continue
                if vis[t, k] and vis[n, k]:
                    dps.append(np.linalg.norm(p[t, k] - p[n, k]))
                if v[t][k] is not None and v[n][k] is not None:
                    dvs.append(np.linalg.norm(v[t][k] - v[n][k]))
            if dps and dvs:
                thr[t, k] = (max(dps), max(dvs))
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    out = set()
    for i in range(t_n):
        for j in range(t_n):
            if abs(i - j) <= cfg.window:
                continue
            if np.linalg.norm(centre[i] - centre[j]) > cfg.face_center_tol * size[i]:
                continue
            if max(size[i] / size[j], size[j] / size[i]) > cfg.face_size_tol:
                continue
            common = close = 0
            for k in range(k_n):
                if (i, k) in thr and vis[j, k] and v[j][k] is not None:
                    common += 1
                    tp, tv = thr[i, k]
                    close += (
                        np.linalg.norm(p[i, k] - p[j, k]) <= tp and np.linalg.norm(v[i][k] - v[j][k]) <= tv
                    )
            if common >= cfg.min_common and close >= cfg.fraction * common - 1e-9:
                out.add((i, j))
    return out


def test_missing_keypoints_match_reference_and_blank_frames_get_no_transitions() -> None:
    rng = np.random.default_rng(7)
    loop = np.cumsum(rng.normal(0, 2.0, (20, 8, 2)), axis=0) + 300
    kp = np.concatenate([loop] * 4) + rng.normal(0, 0.3, (80, 8, 2))
    vis = rng.random((80, 8)) > 0.15
    vis[[10, 11, 47]] = False  # frames with no pose at all
    kp[5, 2] = np.nan  # a non-finite keypoint counts as missing
    boxes = np.tile(BOX, (80, 1)) + rng.normal(0, 2.0, (80, 1))
    cuts = np.array([60])
    cfg = MotionGraphConfig(min_common=3)
    g = build_motion_graph(kp, vis, boxes, cuts, cfg)
    vis_ref = vis.copy()
    vis_ref[5, 2] = False
    expected = _reference_transitions(kp.astype(np.float32), vis_ref, boxes, cuts, cfg)
    kept = set(g.nodes.tolist())
    assert expected, "the synthetic footage must have transitions"
    assert _transitions(g) == {(i, j) for i, j in expected if i in kept and j in kept}
    assert not any({10, 11, 47} & {i, j} for i, j in _transitions(g))
    _assert_strongly_connected(g)


def test_all_invisible_footage_builds_empty_graph() -> None:
    kp = np.zeros((30, 5, 2))
    g = build_motion_graph(kp, np.zeros((30, 5), bool), np.tile(BOX, (30, 1)), np.zeros(0), CFG)
    assert g.nodes.size == 0 and g.dropped.size == 30 and g.indices.size == 0
    assert not g.gesture.any()


def test_max_transitions_keeps_closest() -> None:
    rng = np.random.default_rng(3)
    kp = 300 + rng.normal(0, 1.0, (60, 6, 2))  # jitter around one pose: everything looks alike
    vis = np.ones((60, 6), bool)
    g = build_motion_graph(kp, vis, np.tile(BOX, (60, 1)), np.zeros(0), MotionGraphConfig(max_transitions=3))
    counts = np.array(
        [np.count_nonzero(g.kinds[g.indptr[i] : g.indptr[i + 1]] == TRANSITION) for i in range(60)]
    )
    assert counts.max() == 3


def test_bad_shapes_are_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        build_motion_graph(np.zeros((5, 3)), np.ones((5, 3), bool), np.zeros((5, 4)), np.zeros(0), CFG)
    with pytest.raises(InvalidInputError):
        build_motion_graph(np.zeros((5, 3, 2)), np.ones((5, 3), bool), np.zeros((4, 4)), np.zeros(0), CFG)
    with pytest.raises(InvalidInputError):
        MotionGraphConfig(fraction=0.0)


def test_energy_labels_the_high_motion_span() -> None:
    rng = np.random.default_rng(5)
    t_n = 300
    kp = 300 + rng.normal(0, 0.05, (t_n, 10, 2))
    t = np.arange(100, 160)
    kp[100:160] += 20 * np.sin(t / 3.0)[:, None, None]  # a gesture
    kp[230:235] += 20 * np.sin(np.arange(5) / 1.0)[:, None, None]  # a twitch, too short to count
    vis = np.ones((t_n, 10), bool)
    vis[120:125, :] = False  # hands out of frame mid-gesture
    energy = motion_energy(kp, vis)
    assert energy.shape == (t_n,) and np.isfinite(energy).all()
    gesture = label_spans(energy, CFG)
    assert gesture[103:157].all()
    assert not gesture[:95].any() and not gesture[165:].any()


def test_still_footage_has_no_gesture_and_cut_is_not_motion() -> None:
    rng = np.random.default_rng(6)
    kp = 300 + rng.normal(0, 0.05, (200, 10, 2))
    kp[100:] += 400.0  # a jump cut, not a gesture
    vis = np.ones((200, 10), bool)
    assert not label_spans(motion_energy(kp, vis, cuts=np.array([100])), CFG).any()
    assert motion_energy(kp, vis)[100] > 50 * motion_energy(kp, vis, cuts=np.array([100]))[100]


def _upper_body(t_n: int, rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """(t_n, 23, 2) poses in pose.py's layout: shoulders 200 px apart, every point jittering like
    the pose model on a still person (a slowly wandering error of ``jitter`` px), all visible."""
    rest = rng.uniform(200, 400, (23, 2))
    rest[11], rest[12] = (400.0, 500.0), (200.0, 500.0)  # left, right shoulder
    wander = np.cumsum(rng.normal(0, jitter, (t_n, 23, 2)), axis=0) * 0.3
    kp = rest[None] + rng.normal(0, jitter, (t_n, 23, 2)) + wander - wander.mean(axis=0)
    return kp, np.ones((t_n, 23), bool)


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.2])
def test_still_person_is_all_idle_whatever_the_pose_jitter(jitter: float) -> None:
    rng = np.random.default_rng(11)
    kp, vis = _upper_body(400, rng, jitter)
    kp[150:250, 15:23] += 9 * np.sin(np.arange(100) / 4.0)[:, None, None]  # fidgeting hands, no gesture
    assert body_scale(kp, vis) == pytest.approx(200.0, rel=0.02)
    g = build_motion_graph(kp, vis, np.tile(BOX, (400, 1)), np.zeros(0), CFG)
    assert not g.gesture.any()
    # the footage's own quantiles alone call the fidgeting a gesture: the floor is what stops it
    assert label_spans(motion_energy(kp, vis), CFG)[160:240].all()


def test_big_arm_swings_are_gestures_where_they_are() -> None:
    rng = np.random.default_rng(12)
    kp, vis = _upper_body(500, rng, 0.4)
    swings = [(100, 160), (300, 380)]
    for a, b in swings:  # forearms and hands swing 60 px (0.3 shoulder widths) at ~1 Hz
        kp[a:b, 13:23] += 60 * np.sin(2 * np.pi * np.arange(b - a) / 25)[:, None, None] * np.array([1.0, 0.6])
    vis[320:325, 15:23] = False  # hands out of frame for a moment
    g = build_motion_graph(kp, vis, np.tile(BOX, (500, 1)), np.zeros(0), CFG)
    for a, b in swings:
        assert g.gesture[a + 5 : b - 5].all(), (a, b)
    idle = np.ones(500, bool)
    for a, b in swings:
        idle[a - 10 : b + 10] = False
    assert not g.gesture[idle].any()


def test_body_scale_falls_back_to_the_face_box() -> None:
    face = 2.5 * np.sqrt(100 * 120)  # BOX is 100 x 120
    kp = np.zeros((50, 10, 2))  # too few points for shoulders
    assert body_scale(kp, np.ones((50, 10), bool), np.tile(BOX, (50, 1))) == pytest.approx(face)
    kp23, vis23 = _upper_body(50, np.random.default_rng(0), 0.0)
    vis23[:45, 11] = False  # shoulders seen in 10% of the frames: not enough
    assert body_scale(kp23, vis23, np.tile(BOX, (50, 1))) == pytest.approx(face)
    assert body_scale(kp23, vis23) == 0.0


def _thumbs(t_n: int, cut: int | None, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    frames = []
    for t in range(t_n):
        scene = (xx + t) * 4 if cut is None or t < cut else 255 - yy * 6  # panning, then another shot
        frames.append(np.clip(scene + rng.normal(0, 3, (32, 32)), 0, 255))
    return np.array(frames, dtype=np.uint8)


def test_detect_cuts() -> None:
    rng = np.random.default_rng(8)
    assert detect_cuts(_thumbs(90, 40, rng)).tolist() == [40]
    assert detect_cuts(_thumbs(90, None, rng)).tolist() == []
    assert detect_cuts(np.zeros((10, 8, 8), np.uint8)).tolist() == []
    assert detect_cuts(np.zeros((1, 8, 8), np.uint8)).tolist() == []


def test_detect_cuts_finds_a_jump_cut_but_not_fast_motion() -> None:
    """Same background, the view jumps by 3 px at frame 50 (a jump cut); frames 100-130 pan as
    fast all along (motion). Both change 10-17 grey levels per frame, below a scene change's 30."""
    rng = np.random.default_rng(9)
    big = cv2.resize(rng.uniform(0, 255, (6, 15)), (240, 96), interpolation=cv2.INTER_CUBIC)  # smooth
    x = np.zeros(160)
    x[50:] += 3.0
    x[100:130] += np.cumsum(np.full(30, 3.0))
    x[130:] += 90.0
    frames = [
        np.clip(big[16:80, 20 + round(v) : 84 + round(v)] + rng.normal(0, 1, (64, 64)), 0, 255) for v in x
    ]
    thumbs = np.array(frames, dtype=np.uint8)
    assert detect_cuts(thumbs).tolist() == [50]
    assert detect_cuts(thumbs, spike=1e9).tolist() == []  # the scene-change rule alone misses it


def _assert_same(a: MotionGraph, b: MotionGraph) -> None:
    assert a.n_frames == b.n_frames and a.version == b.version
    for name in ("nodes", "indptr", "indices", "kinds", "gesture", "energy", "dropped", "cuts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_json_and_npz_round_trip(tmp_path: Path) -> None:
    g = build_motion_graph(*_three_shots(), CFG)
    assert g.n_transitions > 0 and np.count_nonzero(g.kinds == NATURAL) > 0
    _assert_same(g, MotionGraph.from_json(g.to_json()))
    g.save(tmp_path / "graph.npz")
    _assert_same(g, MotionGraph.load(tmp_path / "graph.npz"))


def test_malformed_documents_are_invalid_input(tmp_path: Path) -> None:
    g = build_motion_graph(*_three_shots(), CFG)
    for bad in ("{", '{"version": 1}', g.to_json().replace('"version":1', '"version":99')):
        with pytest.raises(InvalidInputError):
            MotionGraph.from_json(bad)
    doc = g.to_json().replace('"indices":[', '"indices":[100000,', 1)
    with pytest.raises(InvalidInputError):
        MotionGraph.from_json(doc)
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError):
        MotionGraph.load(tmp_path / "x.npz")


def test_sixty_seconds_of_33_keypoints_builds() -> None:
    rng = np.random.default_rng(9)
    t_n, k_n = 1500, 33
    loop = np.cumsum(rng.normal(0, 1.5, (250, k_n, 2)), axis=0) + 500
    kp = np.concatenate([loop] * 6) + rng.normal(0, 0.2, (t_n, k_n, 2))
    vis = rng.random((t_n, k_n)) > 0.05
    g = build_motion_graph(kp, vis, np.tile(BOX, (t_n, 1)), np.array([700]), CFG)
    assert g.nodes.size > 0.9 * t_n and g.n_transitions > t_n
    _assert_strongly_connected(g)
