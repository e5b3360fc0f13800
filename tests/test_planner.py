"""The per-session motion planner (livedh/avatar/planner.py) on motion graphs built from synthetic
poses: only graph edges, footage never backwards, every jump blended, no visible period, speech
drives gestures, barge-in replans at once, actions play forward, all seeded."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from livedh.avatar.motion import ActionClip, FootagePick, MotionLibrary
from livedh.avatar.motion_graph import (
    NATURAL,
    TRANSITION,
    MotionGraph,
    MotionGraphConfig,
    build_motion_graph,
)
from livedh.avatar.planner import ACTION, QUIET, SPEAK, MotionPlanner, PlannerConfig, speech_levels
from livedh.errors import InvalidInputError

QUIET_LV = np.zeros(1, np.float32)
LOUD_LV = np.ones(25, np.float32)
#: plans the whole lookahead in every call (no plan_steps bound): for tests of what is planned
FULL = PlannerConfig(plan_steps=25)


def synthetic_graph(
    n: int = 500,
    gestures: Iterable[tuple[int, int]] = ((200, 300),),
    cuts: Iterable[int] = (),
    k: int = 10,
    far_from: int | None = None,
) -> MotionGraph:
    """An idle sway of period 50 frames (so frames 50 apart share a pose: transition edges), with
    a big arm swing (period 25) in the gesture spans, scene cuts where asked, and from ``far_from``
    on a pose like no other (no transition reaches it)."""
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float64)
    base = rng.uniform(150, 350, (k, 2))
    dirs = rng.uniform(-1, 1, (k, 2))
    kp = base[None] + 4.0 * np.sin(2 * np.pi * t / 50)[:, None, None] * dirs[None]
    arm = np.zeros(n)
    for a, b in gestures:
        arm[a:b] = 40.0 * np.sin(2 * np.pi * (t[a:b] - a) / 25)
    kp[:, :3, :] += arm[:, None, None] * np.array([1.0, 0.5])
    if far_from is not None:
        kp[far_from:] += 500.0
    boxes = np.tile([200.0, 100.0, 300.0, 220.0], (n, 1))
    cut_arr = np.array(list(cuts), dtype=np.int64)
    vis = np.ones((n, k), bool)
    return build_motion_graph(kp.astype(np.float32), vis, boxes, cut_arr, MotionGraphConfig())


@pytest.fixture(scope="module")
def graph() -> MotionGraph:
    g = synthetic_graph()
    assert g.nodes.size == 500 and g.n_transitions > 0
    assert g.gesture[220:280].all() and not g.gesture[:190].any()
    return g


@pytest.fixture(scope="module")
def library(graph: MotionGraph) -> MotionLibrary:
    actions = (ActionClip("wave", 220, 260), ActionClip("bye", 420, 450))
    return MotionLibrary(graph, np.zeros(graph.n_frames, bool), actions)


def walk(planner: MotionPlanner, levels: np.ndarray, frames: int) -> list[FootagePick]:
    return [planner.next(levels) for _ in range(frames)]


def edge_set(g: MotionGraph) -> set[tuple[int, int]]:
    return {(i, int(t)) for i in g.nodes.tolist() for t in g.successors(i)}


def check_walk(g: MotionGraph, picks: list[FootagePick], blend_frames: int = 6) -> int:
    """Every step is a graph edge; natural steps go forward by one; each jump is followed by its
    blend: blend_from plays on from the frame left (or holds), alpha ramps up. Returns the jumps."""
    edges = edge_set(g)
    jumps = 0
    for n, (a, b) in enumerate(itertools.pairwise(picks)):
        assert (a.index, b.index) in edges, f"step {n}: {a.index} -> {b.index} is not an edge"
        if b.index != a.index + 1:
            jumps += 1
            blend = picks[n + 1 : n + 1 + blend_frames]
            src, prev = a.index, a.index
            for t, p in enumerate(blend):
                if t and p.index != prev + 1:  # a later jump restarted the blend (action routes only)
                    break
                prev = p.index
                assert p.blend_from is not None
                assert p.blend_from in (src, src + 1), "the footage left must play on or hold"
                src = p.blend_from
                assert p.alpha == pytest.approx((t + 1) / (blend_frames + 1))
    assert all(p.blend_from is None or 0 < p.alpha < 1 for p in picks)
    return jumps


def run_of(picks: list[FootagePick], start: int, end: int) -> int:
    """Position where footage frames start..end-1 play in order, -1 if they do not."""
    idx = [p.index for p in picks]
    want = list(range(start, end))
    for n in range(len(idx) - len(want) + 1):
        if idx[n : n + len(want)] == want:
            return n
    return -1


# --- the walk -------------------------------------------------------------------------------------


def test_long_mixed_run_takes_only_graph_edges(library: MotionLibrary) -> None:
    p = MotionPlanner(library, seed=3)
    rng = np.random.default_rng(7)
    picks: list[FootagePick] = []
    for phase in range(40):
        kind = phase % 5
        if kind == 2:
            p.request_action(["wave", "bye"][phase % 2])
        if kind == 4:
            p.interrupt()
        levels = LOUD_LV * rng.uniform(0.3, 1.0) if kind in (1, 3) else QUIET_LV
        picks += walk(p, levels, int(rng.integers(5, 120)))
    assert check_walk(library.graph, picks) > 20


def test_graph_with_cuts_and_short_runs() -> None:
    g = synthetic_graph(400, gestures=((120, 200),), cuts=(100, 250, 260))
    lib = MotionLibrary(g, np.zeros(g.n_frames, bool), ())
    p = MotionPlanner(lib, seed=1)
    picks = walk(p, QUIET_LV, 1500) + walk(p, LOUD_LV, 1500)
    check_walk(g, picks)
    shown = {x.index for x in picks}
    assert shown <= set(g.nodes.tolist())
    # never played on across a scene cut
    steps = itertools.pairwise(picks)
    assert not any(b.index == a.index + 1 and b.index in (100, 250, 260) for a, b in steps)


def test_same_seed_same_picks_other_seed_other_picks(library: MotionLibrary) -> None:
    def run(seed: int) -> list[FootagePick]:
        p = MotionPlanner(library, seed=seed)
        out = walk(p, QUIET_LV, 300) + walk(p, LOUD_LV, 200)
        p.request_action("wave")
        return out + walk(p, QUIET_LV, 300)

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_idle_walk_has_no_visible_period(graph: MotionGraph) -> None:
    """10 minutes at 25 fps from a 20 s clip: no 5 s run of footage frames repeats exactly."""
    lib = MotionLibrary(graph, np.zeros(graph.n_frames, bool), ())
    p = MotionPlanner(lib, seed=11)
    picks = walk(p, QUIET_LV, 10 * 60 * 25)
    jumps = check_walk(graph, picks)
    idx = np.array([x.index for x in picks])
    runs = sliding_window_view(idx, 5 * 25)
    assert len(np.unique(runs, axis=0)) == len(runs)
    assert jumps > 10 * 60 * 25 // PlannerConfig().max_run  # it keeps moving through the footage
    assert not graph.gesture[idx].mean() > 0.02  # listening stays on idle footage


def sparse_graph(n: int = 250, every: int = 10, per: int = 3) -> MotionGraph:
    """Footage of ``n`` frames played on naturally, with ``per`` seeded transition edges from every
    ``every``-th frame (and from the last) to frames at multiples of 5: few ways to vary a walk."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        out = {i + 1: NATURAL} if i + 1 < n else {}
        if i % every == every - 1 or i == n - 1:
            for t in rng.choice(np.arange(0, n - 30, 5), per, replace=False).tolist():
                out.setdefault(t, TRANSITION)
        rows.append(sorted(out.items()))
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([t for r in rows for t, _ in r], np.int64)
    kinds = np.array([k for r in rows for _, k in r], np.uint8)
    energy = rng.uniform(0, 1, n).astype(np.float32)
    none = np.zeros(0, np.int64)
    return MotionGraph(n, np.arange(n), indptr, indices, kinds, np.zeros(n, bool), energy, none, none)


def _repeated_runs(picks: list[FootagePick], run: int = 5 * 25) -> int:
    runs = sliding_window_view(np.array([x.index for x in picks]), run)
    return len(runs) - len(np.unique(runs, axis=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_idle_walk_on_a_sparse_graph_repeats_no_5s_run(seed: int) -> None:
    """Few transitions (~75 over 250 frames): a 10 minute idle walk still shows no 5 s run twice,
    for every seed; without the repeat check the same walk repeats most runs."""
    g = sparse_graph()
    assert g.n_transitions < 100
    lib = MotionLibrary(g, np.zeros(g.n_frames, bool), ())
    picks = walk(MotionPlanner(lib, seed=seed), QUIET_LV, 10 * 60 * 25)
    check_walk(g, picks)
    assert _repeated_runs(picks) == 0
    if seed == 0:
        loose = walk(MotionPlanner(lib, PlannerConfig(repeat_window=0), seed=seed), QUIET_LV, 10 * 60 * 25)
        assert _repeated_runs(loose) > 1000


def test_speaking_shows_more_gesture_than_listening(graph: MotionGraph) -> None:
    lib = MotionLibrary(graph, np.zeros(graph.n_frames, bool), ())
    quiet = [x.index for x in walk(MotionPlanner(lib, seed=2), QUIET_LV, 2000)]
    loud = [x.index for x in walk(MotionPlanner(lib, seed=2), LOUD_LV, 2000)]
    assert graph.gesture[loud].mean() > 0.8 and graph.gesture[quiet].mean() < 0.05


def test_source_speech_counts_as_speaking_footage() -> None:
    g = dataclasses.replace(synthetic_graph(400, gestures=()), gesture=np.zeros(400, bool))
    speech = np.zeros(g.n_frames, bool)
    speech[100:220] = True
    lib = MotionLibrary(g, speech, ())
    # the labels are what is tested, not how hard the walk avoids its 120 speaking frames once shown
    cfg = PlannerConfig(revisit_penalty=0.7)
    quiet = [x.index for x in walk(MotionPlanner(lib, cfg, seed=4), QUIET_LV, 1500)]
    loud = [x.index for x in walk(MotionPlanner(lib, cfg, seed=4), LOUD_LV, 1500)]
    # labels weigh less than motion energy now (PlannerConfig.label_weight), and this sway's energy
    # does not follow them: still mostly the source's speaking footage
    assert speech[loud].mean() > 0.7 and speech[quiet].mean() < 0.05


def test_speaking_picks_energetic_footage_and_listening_calm_without_labels() -> None:
    """With no gesture or speech labels at all, the footage's own motion energy decides: speech
    gets the arm swings, listening the sway, whatever the footage's scale."""
    for scale in (1.0, 7.0):
        g = synthetic_graph(600, gestures=((150, 250), (400, 480)))
        g = dataclasses.replace(g, gesture=np.zeros(600, bool), energy=(g.energy * scale).astype(np.float32))
        lib = MotionLibrary(g, np.zeros(g.n_frames, bool), ())
        quiet = [x.index for x in walk(MotionPlanner(lib, seed=5), QUIET_LV, 1500)]
        loud = [x.index for x in walk(MotionPlanner(lib, seed=5), LOUD_LV, 1500)]
        e_quiet, e_loud = g.energy[quiet].mean(), g.energy[loud].mean()
        assert e_loud > 3.0 * e_quiet
        assert e_quiet < np.quantile(g.energy, 0.5) < e_loud


def test_pauses_in_speech_are_calm_and_short_gaps_are_not(library: MotionLibrary) -> None:
    p = MotionPlanner(library, FULL, seed=0)
    p.next(np.concatenate([np.ones(10), np.zeros(5), np.ones(10)]).astype(np.float32))
    assert set(p.plan_modes[:24]) == {SPEAK}  # a 5-frame gap between words is no pause
    p.interrupt()
    p.next(np.concatenate([np.ones(5), np.zeros(40)]).astype(np.float32))
    assert p.plan_modes == [SPEAK] * 4 + [QUIET] * 20  # a buffer ending in silence: a pause


# --- replanning -----------------------------------------------------------------------------------


def test_barge_in_replans_within_one_frame(graph: MotionGraph, library: MotionLibrary) -> None:
    p = MotionPlanner(library, FULL, seed=9)
    walk(p, LOUD_LV, 150)
    assert p.plan_modes == [SPEAK] * 24 and graph.gesture[[x.index for x in p.plan]].mean() > 0.5
    picks = walk(p, QUIET_LV, 1)  # speech stopped: the very next frame's plan is for listening
    assert p.plan_modes == [QUIET] * 24
    picks += walk(p, QUIET_LV, 60)
    idx = [x.index for x in picks]
    assert not graph.gesture[idx[-20:]].any()  # back on idle footage ...
    check_walk(graph, picks)  # ... through blended transitions, not a cut


def test_speech_start_replans_within_one_frame(library: MotionLibrary) -> None:
    p = MotionPlanner(library, FULL, seed=9)
    walk(p, QUIET_LV, 100)
    assert p.plan_modes == [QUIET] * 24
    p.next(LOUD_LV)
    assert p.plan_modes == [SPEAK] * 24


def test_speech_arriving_in_the_buffer_replans_only_the_tail(library: MotionLibrary) -> None:
    p = MotionPlanner(library, FULL, seed=9)
    walk(p, QUIET_LV, 100)
    before = p.plan
    levels = np.zeros(25, np.float32)
    levels[20:] = 1.0  # speech starts 20 frames from now
    p.next(levels)
    after = p.plan
    assert after[:12] == before[1:13]  # what still fits stays planned
    assert p.plan_modes[-1] == SPEAK


def test_plan_looks_about_a_second_ahead(library: MotionLibrary) -> None:
    p = MotionPlanner(library, PlannerConfig(lookahead_frames=25, plan_steps=25), seed=0)
    p.next(LOUD_LV)
    assert len(p.plan) == 24


@pytest.mark.parametrize("steps", [2, 3])
def test_a_replan_is_bounded_and_refills_over_the_next_frames(library: MotionLibrary, steps: int) -> None:
    """plan_steps bounds the scored decisions of one call (the cost of a replan); the frame shown
    is always planned for the new mode, the rest of the plan follows within a few frames."""
    p = MotionPlanner(library, PlannerConfig(plan_steps=steps), seed=9)
    scored: list[int] = []
    score = p._score
    p._score = lambda *args: (scored.append(1), score(*args))[1]  # type: ignore[method-assign]
    picks = walk(p, QUIET_LV, 100)
    assert p.plan_modes == [QUIET] * 24
    sizes = []
    for _ in range(30):
        scored.clear()
        picks.append(p.next(LOUD_LV))
        assert len(scored) <= steps
        assert p.plan_modes == [SPEAK] * len(p.plan)  # nothing planned for the old mode is left
        sizes.append(len(p.plan))
    assert sizes[0] < 24 and sizes[-1] == 24  # bounded at first, refilled since
    check_walk(library.graph, picks + walk(p, QUIET_LV, 60))


# --- actions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [0, 37, 260])
def test_action_plays_its_clip_forward_then_returns(library: MotionLibrary, warmup: int) -> None:
    p = MotionPlanner(library, seed=1)
    picks = walk(p, QUIET_LV, warmup)
    p.request_action("wave")
    assert set(p.plan_modes) <= {ACTION}
    after = walk(p, LOUD_LV, 400)
    at = run_of(after, 220, 260)
    assert 0 <= at < 100
    assert after[at + 40 :]  # the walk goes on after the clip
    assert p.plan_modes and ACTION not in p.plan_modes
    check_walk(library.graph, picks + after)


def test_unknown_action_is_a_400_listing_the_actions(library: MotionLibrary) -> None:
    p = MotionPlanner(library)
    assert p.actions == ["wave", "bye"]
    with pytest.raises(InvalidInputError, match="wave, bye") as e:
        p.request_action("dance")
    assert e.value.http_status == 400


def test_interrupt_drops_a_pending_action(library: MotionLibrary) -> None:
    p = MotionPlanner(library, seed=1)
    walk(p, QUIET_LV, 10)
    p.request_action("bye")
    p.interrupt()
    for _ in range(200):  # (the idle walk may still pass through the clip's calm footage on its own)
        p.next(QUIET_LV)
        assert ACTION not in p.plan_modes


def test_action_outside_the_graph_is_refused() -> None:
    g = synthetic_graph(300, gestures=(), cuts=(295,), far_from=295)  # a dead end: dropped
    assert 297 in g.dropped
    p = MotionPlanner(MotionLibrary(g, np.zeros(300, bool), (ActionClip("tail", 296, 299),)))
    with pytest.raises(InvalidInputError, match="not in the motion graph"):
        p.request_action("tail")


# --- the rest -------------------------------------------------------------------------------------


def test_no_graph_falls_back_to_the_plain_loop() -> None:
    z = np.zeros(0, np.int64)
    g = MotionGraph(4, z, np.zeros(5, np.int64), z, np.zeros(0, np.uint8), np.zeros(4, bool),
                    np.zeros(4, np.float32), np.arange(4), z)  # fmt: skip
    p = MotionPlanner(MotionLibrary(g, np.zeros(4, bool)))
    assert [p.next(QUIET_LV).index for _ in range(8)] == [0, 1, 2, 3, 2, 1, 0, 1]


def test_bad_config_and_levels_are_refused(library: MotionLibrary) -> None:
    with pytest.raises(InvalidInputError):
        PlannerConfig(blend_frames=8, min_gap=4)
    with pytest.raises(InvalidInputError):
        MotionPlanner(library).next(np.zeros(0, np.float32))


def test_speech_levels() -> None:
    spf = 640
    t = np.arange(4 * spf) / 16000
    tone = np.sin(2 * np.pi * 220 * t)  # RMS -3 dBFS
    x = np.concatenate([tone[:spf], 0 * tone[:spf], tone[:spf] * 10 ** (-37 / 20), tone[:100]])
    got = speech_levels(x.astype(np.float32), spf)
    assert got.dtype == np.float32 and got.shape == (4,)
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == pytest.approx(0.5, abs=0.02) and got[3] > 0.9
    as_int16 = speech_levels((x * 32767).astype(np.int16), spf)
    assert np.allclose(as_int16, got, atol=0.01)
    assert speech_levels(np.zeros(0, np.int16), spf).shape == (0,)


# --- smooth transitions (planner_blend.py) ----------------------------------------------------------


@pytest.fixture(scope="module")
def posed() -> MotionLibrary:
    """A sway of period 50 frames with a 'hand' (2 of 10 keypoints: the 20% the graph's rule lets
    miss) swinging with period 100: frames 100 apart match whole, frames 50 apart only but for the
    hand, which a blend would have to sweep across."""
    n, k = 600, 10
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float64)
    base = rng.uniform(150, 350, (k, 2))
    dirs = rng.uniform(-1, 1, (k, 2))
    kp = base[None] + 4.0 * np.sin(2 * np.pi * t / 50)[:, None, None] * dirs[None]
    kp[:, 8:] += 30.0 * np.sin(2 * np.pi * t / 100)[:, None, None] * np.array([1.0, 0.3])
    kp = kp.astype(np.float32)
    vis = np.ones((n, k), bool)
    vis[::7, 9] = False  # a point missed now and then: steps count the points seen in both frames
    boxes = np.tile([200.0, 100.0, 300.0, 220.0], (n, 1))
    g = build_motion_graph(kp, vis, boxes, np.zeros(0, np.int64), MotionGraphConfig())
    actions = (ActionClip("wave", 130, 170), ActionClip("bye", 420, 460))
    return MotionLibrary(g, np.zeros(n, bool), actions, keypoints=kp, visible=vis)


def mean_steps(kp: np.ndarray, vis: np.ndarray, part: slice) -> np.ndarray:
    both = vis[1:, part] & vis[:-1, part]
    d = np.linalg.norm(kp[1:, part] - kp[:-1, part], axis=2)
    return (d * both).sum(axis=1) / both.sum(axis=1)


def output_poses(lib: MotionLibrary, picks: list[FootagePick]) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of output frames as a blend shows them (interpolated by alpha), as the bench does."""
    assert lib.keypoints is not None and lib.visible is not None
    idx = np.array([p.index for p in picks])
    frm = np.array([p.index if p.blend_from is None else p.blend_from for p in picks])
    a = np.array([p.alpha if p.blend_from is not None else 1.0 for p in picks])[:, None, None]
    return a * lib.keypoints[idx] + (1 - a) * lib.keypoints[frm], lib.visible[idx] & lib.visible[frm]


def blend_spans(picks: list[FootagePick]) -> list[tuple[int, int]]:
    """(position of the frame before, blend length) of each jump, checking that every blend plays
    out whole before the next jump: alpha (t+1)/(k+1) over k frames, both footages playing on."""
    spans = []
    n = 1
    while n < len(picks):
        p = picks[n]
        if p.blend_from is None:
            n += 1
            continue
        k = round(1 / p.alpha) - 1
        assert p.alpha == pytest.approx(1 / (k + 1)), f"frame {n}: a blend starts at alpha {p.alpha}"
        for t in range(k):
            q = picks[n + t] if n + t < len(picks) else None
            if q is None:
                break
            assert q.blend_from is not None and q.alpha == pytest.approx((t + 1) / (k + 1)), (
                f"frame {n + t}: the blend from frame {n} is cut short"
            )
            assert t == 0 or q.index == picks[n + t - 1].index + 1
        spans.append((n - 1, k))
        n += k
    return spans


def test_blend_costs_predict_the_blended_output(posed: MotionLibrary) -> None:
    from livedh.avatar.planner_blend import BlendCosts

    assert posed.keypoints is not None and posed.visible is not None
    g, kp, vis = posed.graph, posed.keypoints, posed.visible
    costs = BlendCosts(g, kp, vis, (4, 8))
    p99 = [np.percentile(mean_steps(kp, vis, part), 99) for part in (slice(None), slice(0, 13))]
    shares = []
    for i in (60, 75, 333):
        lengths, share = costs.of(i)
        for slot, j in enumerate(g.successors(i).tolist()):
            if j == i + 1:
                assert share[slot] == 0
                continue
            k = int(lengths[slot])
            assert 4 <= k <= 8
            picks = [FootagePick(i), *(FootagePick(j + t, i + 1 + t, (t + 1) / (k + 1)) for t in range(k)),
                     FootagePick(j + k)]  # fmt: skip
            okp, ovis = output_poses(posed, picks)
            worst = max(mean_steps(okp, ovis, part).max() / ref for part, ref in
                        zip((slice(None), slice(0, 13)), p99, strict=True))  # fmt: skip
            assert share[slot] == pytest.approx(worst, rel=1e-6)
            shares.append(worst)
    assert min(shares) < 1.0 < max(shares)  # the footage has both: the planner has a choice


def test_walk_takes_no_rough_jump(posed: MotionLibrary) -> None:
    from livedh.avatar.planner_blend import BlendCosts

    assert posed.keypoints is not None and posed.visible is not None
    costs = BlendCosts(posed.graph, posed.keypoints, posed.visible, (4, 8))
    p = MotionPlanner(posed, seed=2)
    rng = np.random.default_rng(5)
    picks: list[FootagePick] = []
    for phase in range(60):
        picks += walk(p, LOUD_LV * rng.uniform(0.5, 1.0) if phase % 2 else QUIET_LV, int(rng.integers(3, 90)))
    spans = blend_spans(picks)
    assert len(spans) > 30
    for before, k in spans:
        i, j = picks[before].index, picks[before + 1].index
        slot = int(np.searchsorted(posed.graph.successors(i), j))
        length, share = costs.of(i)
        assert (int(length[slot]), float(share[slot]) <= 1.0) == (k, True), f"jump {i} -> {j}"
    steps = mean_steps(*output_poses(posed, picks), slice(None))  # steps[t]: output frame t -> t+1
    worst = max(steps[before : before + k + 1].max() for before, k in spans if before + k + 1 <= steps.size)
    assert worst <= np.percentile(mean_steps(posed.keypoints, posed.visible, slice(None)), 99) + 1e-6


@pytest.mark.parametrize("posed_lib", [True, False])
def test_actions_let_every_blend_complete(
    posed: MotionLibrary, library: MotionLibrary, posed_lib: bool
) -> None:
    lib = posed if posed_lib else library
    p = MotionPlanner(lib, seed=4)
    rng = np.random.default_rng(6)
    picks: list[FootagePick] = []
    for phase in range(60):
        if phase % 2:  # also in the middle of blends and of routes to another action
            p.request_action(lib.action_names[phase % 3 % 2])
        picks += walk(p, QUIET_LV, int(rng.integers(1, 40)))
    lengths = {k for _, k in blend_spans(picks)}  # (checks that each blend plays out whole)
    assert len(blend_spans(picks)) > 20
    assert lengths <= set(range(4, 9)) if posed_lib else lengths == {6}
    edges = edge_set(lib.graph)
    assert all((a.index, b.index) in edges for a, b in itertools.pairwise(picks))
