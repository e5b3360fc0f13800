"""A per-session motion planner: which footage frame each output frame shows (TANGO-style).

The planner walks the avatar's motion graph (motion_graph.py) one output frame at a time and
keeps a short plan (``lookahead_frames``, about 1 s) of the frames it will show next. Footage
only ever plays forward: a step is a natural edge ``i -> i+1`` or a transition edge ``i -> j``,
and every transition is blended over ``blend_frames`` frames (:class:`FootagePick` carries both
frames and the weight; footage.py does the optical-flow blend).

Each planned frame has a *mode*: speaking (the loudness around it is high) or quiet (listening,
pauses). At every frame where a jump is allowed (``min_gap`` frames after the last one), each
successor is scored by how well the run of footage that follows it matches the modes of the
upcoming frames: its motion energy (graph.energy on the footage's own quantile scale) high under
speech, the louder the higher, and low in pauses and listening; its labels (gesture or speaking
footage for speech, idle footage for quiet), which weigh less; and where the footage can lead on
after the horizon (a value iteration over the graph, once per planner). Prefix sums along
natural runs make scoring a few numpy operations. Minus a penalty for footage shown recently,
a growing one for repeating footage shown before, prohibitive from ``repeat_window`` frames
(planner_runs.py: no visible period), a penalty for jumping, a growing penalty for playing on too long, plus
seeded noise. When the loudness the planner is given changes the mode of an already planned
frame (speech starts, a barge-in silences it), the plan is dropped from that frame and replanned
at once: the frame shown next, and the rest over the next frames (``plan_steps`` decisions per
frame, so no frame costs more than a few ms). Everything is seeded; no wall clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from livedh.avatar.motion import ActionClip, FootagePick, MotionLibrary
from livedh.avatar.motion_graph import NATURAL
from livedh.avatar.planner_blend import BlendCosts
from livedh.avatar.planner_routes import Routes, footage_activity, future_activity
from livedh.avatar.planner_runs import MatchMemory, cornered_frames, forced_frames
from livedh.errors import InvalidInputError

QUIET, SPEAK, ACTION = 0, 1, 2
#: subtracted from the score of a successor as the run it repeats grows from _SOFT_FROM of
#: PlannerConfig.repeat_window to all of it (beyond: not taken where another successor is below it),
#: so the walk turns away before every way on repeats (the margin keeps 10 min idle walks on sparse
#: graphs below 125 frames for every seed measured)
_REPEAT_PENALTY = 10.0
_SOFT_FROM = 0.7


@dataclass(frozen=True)
class PlannerConfig:
    #: frames planned ahead (25 = 1 s at 25 fps); also the horizon successors are scored over
    lookahead_frames: int = 25
    #: frames every transition is blended over when the footage's pose is not known
    blend_frames: int = 6
    #: with the pose known (MotionLibrary.keypoints): each transition is blended over the length in
    #: this range under which its output is smoothest (planner_blend.py), jumps whose predicted
    #: largest step exceeds the source's own 99th percentile are not taken where another way is,
    #: and ``smooth_weight`` times that share is subtracted from a jump's score
    blend_range: tuple[int, int] = (4, 8)
    smooth_weight: float = 1.0
    #: fewest frames between two jumps (at least the longest blend: a blend completes)
    min_gap: int = 15
    #: after this many frames without a jump, playing on is penalised fully (``run_penalty``)
    max_run: int = 150
    run_penalty: float = 1.0
    jump_penalty: float = 0.5
    #: penalty for footage shown recently, decaying with age over ``revisit_memory`` frames (with
    #: ``calm_weight`` high, it must be too, or a sparse graph's calmest loop repeats)
    revisit_penalty: float = 1.0
    revisit_memory: int = 250
    #: weight of the seeded uniform noise added to every score
    noise: float = 0.2
    #: a frame is speaking when its loudness reaches this (0..1, see :func:`speech_levels`), and
    #: so is a silence shorter than ``pause_frames`` between two such frames (no pause)
    speak_threshold: float = 0.5
    pause_frames: int = 12
    #: weights of what the footage run after a candidate offers the modes ahead: its motion energy
    #: (graph.energy, mapped to 0..1 between the footage's own ``energy_quantiles``) wanted high
    #: under speech, scaled by its loudness, and wanted low in pauses and listening (``calm_weight``);
    #: and its labels (gesture or source speech for speech, neither for quiet), which can be coarse
    energy_weight: float = 2.0
    calm_weight: float = 5.0
    label_weight: float = 0.5
    energy_quantiles: tuple[float, float] = (0.05, 0.9)
    #: weight of where the footage can go after the horizon: the calmest (or busiest) walk on from
    #: the horizon's last frame, discounted by ``future_discount`` per frame (see future_activity),
    #: so the walk does not settle on calm footage that only leads on to busy footage
    future_weight: float = 0.5
    future_discount: float = 0.96
    #: no run of this many output frames repeats footage shown within ``repeat_memory`` output
    #: frames where another successor can be taken, and the walk turns away from long repeats before
    #: it is cornered (planner_runs.py; 0: no such check): no visible period even where the calmest
    #: footage is a small part of it
    repeat_window: int = 100
    repeat_memory: int = 15000
    #: scored decisions (frames where a jump may be taken) per :meth:`MotionPlanner.next` at most;
    #: frames with no choice are free; at least 2, so the plan refills. Bounds the cost of a replan
    #: (each decision ~0.3 ms): a dropped plan's first frames are planned at once, the rest over
    #: the next few frames
    plan_steps: int = 3

    def __post_init__(self) -> None:
        if self.lookahead_frames < 1 or not 1 <= self.blend_frames <= 16:
            raise InvalidInputError("planner: lookahead_frames >= 1 and 1 <= blend_frames <= 16")
        if not 1 <= self.blend_range[0] <= self.blend_range[1] <= 16 or self.smooth_weight < 0:
            raise InvalidInputError(
                "planner: 1 <= blend_range[0] <= blend_range[1] <= 16, smooth_weight >= 0"
            )
        if self.min_gap < max(self.blend_frames, self.blend_range[1]) or self.max_run <= self.min_gap:
            raise InvalidInputError("planner: blend_frames, blend_range[1] <= min_gap < max_run")
        if self.revisit_memory < 1 or self.pause_frames < 0 or not 0.0 < self.speak_threshold <= 1.0:
            raise InvalidInputError(
                "planner: revisit_memory >= 1, pause_frames >= 0, 0 < speak_threshold <= 1"
            )
        if self.repeat_window < 0 or self.repeat_memory < 1 or self.plan_steps < 2:
            raise InvalidInputError("planner: repeat_window >= 0, repeat_memory >= 1, plan_steps >= 2")
        lo, hi = self.energy_quantiles
        weights = (self.energy_weight, self.calm_weight, self.label_weight, self.future_weight)
        if not 0.0 <= lo < hi <= 1.0 or min(weights) < 0 or not 0.0 <= self.future_discount < 1.0:
            raise InvalidInputError(
                "planner: 0 <= energy_quantiles[0] < [1] <= 1, weights >= 0, 0 <= future_discount < 1"
            )


@dataclass(frozen=True)
class _State:
    """Where the walk is after a frame: the node shown, frames since the last jump, and the blend in
    progress (``blend_src``: the frame of the left footage shown under the fade; ``blend_t``:
    blend frames shown, ``>= blend_k`` when none; ``blend_k``: the blend's length)."""

    node: int
    since_jump: int
    blend_src: int
    blend_t: int
    blend_k: int


@dataclass(frozen=True)
class _Item:
    pick: FootagePick
    state: _State
    mode: int
    #: ``seen`` of the frame before this item was planned, restored when the item is dropped
    prev_seen: float


def speech_levels(samples: np.ndarray, samples_per_frame: int) -> np.ndarray:
    """Per-frame loudness 0..1 of int16 or float ([-1, 1]) mono PCM: the RMS level of each
    ``samples_per_frame`` block in dBFS, mapped linearly from -50 dB (0) to -30 dB (1). A last
    partial block counts as a frame."""
    if samples_per_frame < 1:
        raise InvalidInputError("samples_per_frame must be >= 1")
    a = np.asarray(samples)
    x = a.astype(np.float32) / 32768.0 if a.dtype == np.int16 else a.astype(np.float32)
    x = x.reshape(-1)
    n = -(-x.size // samples_per_frame)
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(n * samples_per_frame, np.float32)
    padded[: x.size] = np.nan_to_num(x)
    blocks = padded.reshape(n, samples_per_frame)
    counts = np.full(n, samples_per_frame, np.float32)
    counts[-1] = x.size - (n - 1) * samples_per_frame
    rms = np.sqrt((blocks * blocks).sum(axis=1) / counts)
    db = 20.0 * np.log10(np.maximum(rms, 1e-6))
    return np.clip((db + 50.0) / 20.0, 0.0, 1.0).astype(np.float32)


def playable_action(library: MotionLibrary, name: str) -> ActionClip:
    """Action ``name`` of ``library``: InvalidInputError if there is none (the message lists them)
    or its clip's start is not in the motion graph. Cheap, for checking a request where it arrives."""
    clip = library.action(name)
    nodes = library.graph.nodes
    at = int(np.searchsorted(nodes, clip.start))
    if at == nodes.size or nodes[at] != clip.start:
        raise InvalidInputError(f"action {name!r} cannot be played: its start is not in the motion graph")
    return clip


class MotionPlanner:
    """Chooses the footage frame of every output frame of one session (see the module docstring).

    Not thread-safe: one thread at a time calls it, one frame at a time (a session's steps run
    in a worker thread, session/motion.py). Building one takes ~0.1-0.2 s (the blend of every
    transition is predicted up front); after that :meth:`next` is bounded by ``plan_steps``.
    """

    def __init__(self, library: MotionLibrary, config: PlannerConfig | None = None, *, seed: int = 0) -> None:
        self.library = library
        self.config = cfg = config or PlannerConfig()
        self._rng = np.random.default_rng(seed)
        g = library.graph
        n = self._n = g.n_frames
        self._indptr, self._indices = g.indptr, g.indices
        src = np.repeat(np.arange(n), np.diff(g.indptr))
        self._jump = g.kinds != NATURAL  # per edge
        self._nat = np.zeros(n + 1, dtype=bool)  # frame f has its natural edge f -> f+1
        self._nat[src[~self._jump]] = True
        # frames up to the end of each natural run: first frame at or after f without a natural edge
        ends = np.where(self._nat[:n], n, np.arange(n))
        self._run_len = np.minimum.accumulate(ends[::-1])[::-1] - np.arange(n) + 1
        self._costs: BlendCosts | None = None
        if library.keypoints is not None and library.visible is not None:
            kp, vis = library.keypoints, library.visible
            self._costs = library.derived(("blend_costs", cfg.blend_range),
                                          lambda: BlendCosts(g, kp, vis, cfg.blend_range))
        longest = cfg.blend_frames if self._costs is None else cfg.blend_range[1]
        self._route_len = longest
        # a jump must land on a run long enough for its blend to play out (unless nothing else goes)
        self._edge_ok = ~self._jump | (self._run_len[g.indices] > longest)
        # per frame: its run ends soon (within 2 * min_gap) with no smooth jump from a frame after
        # it (planner_blend.py): the walk should jump now rather than be cornered
        shares = None if self._costs is None else self._costs.shares
        self._cornered = cornered_frames(self._edge_ok & self._jump, shares, g.indptr, self._run_len,
                                         2 * cfg.min_gap)
        speech = np.asarray(library.speech, dtype=bool)
        good = [~g.gesture & ~speech, g.gesture | speech]  # per mode: QUIET, SPEAK
        self._cum = [np.concatenate([[0], np.cumsum(m)]).astype(np.float64) for m in good]
        self._act = footage_activity(g.energy, g.nodes, cfg.energy_quantiles)
        self._cum_act = np.concatenate([[0.0], np.cumsum(self._act)])
        self._mean_act = float(self._act[g.nodes].mean()) if g.nodes.size else 0.0
        self._future = [  # per mode: QUIET, SPEAK
            future_activity(self._act, g, self._run_len, min_gap=cfg.min_gap, discount=cfg.future_discount,
                            highest=mode == SPEAK)
            for mode in (QUIET, SPEAK)
        ]  # fmt: skip
        # shortest routes to actions (built here, off the session's loop, not on the first request)
        self._routes = Routes(g, self._nat, self._run_len, longest) if library.actions else None
        self._seen = np.full(n, -np.inf)
        self._emitted = 0
        self._queue: deque[_Item] = deque()
        self._past: deque[float] = deque([0.0] * cfg.pause_frames, maxlen=max(1, cfg.pause_frames))
        self._runs = MatchMemory(cfg.repeat_memory, 2 * cfg.repeat_window)
        self._forced = forced_frames(self._edge_ok, g.indptr, self._nat)
        self._pending: ActionClip | None = None
        self._start = self._choose_start(good[QUIET])
        self._drive = np.zeros(0)  # loudness of each speaking frame of the horizon (0 when quiet)
        self._state = _State(-1, cfg.min_gap, -1, cfg.blend_frames, cfg.blend_frames)

    # --- public -------------------------------------------------------------------------------

    @property
    def actions(self) -> list[str]:
        return self.library.action_names

    @property
    def plan(self) -> list[FootagePick]:
        """The frames planned after the one last returned (for tests and reports)."""
        return [item.pick for item in self._queue]

    @property
    def plan_modes(self) -> list[int]:
        """The mode each planned frame was planned for (QUIET, SPEAK or ACTION)."""
        return [item.mode for item in self._queue]

    def next(self, levels: np.ndarray) -> FootagePick:
        """The footage for the next output frame. ``levels``: loudness 0..1 of this frame at [0] and
        of the buffered frames after it (see :func:`speech_levels`); frames after those given are
        taken to be as loud as the last few given."""
        lv = np.nan_to_num(np.asarray(levels, dtype=np.float32).reshape(-1))
        if lv.size == 0:
            raise InvalidInputError("levels must hold at least this frame's loudness")
        if self._start < 0:  # no graph at all: the plain forward-backward loop, as without one
            k = self._emitted % max(1, 2 * (self._n - 1))
            self._emitted += 1
            return FootagePick(k if k < self._n else 2 * (self._n - 1) - k)
        modes, window = self._modes(np.clip(lv, 0.0, 1.0))
        self._drive = np.where(modes == SPEAK, window, 0.0)
        self._reconcile(modes)
        self._extend(modes)
        item = self._queue.popleft()
        self._state = item.state
        self._runs.emit(item.pick.index)
        self._emitted += 1
        self._past.append(float(np.clip(lv[0], 0.0, 1.0)))
        return item.pick

    def request_action(self, name: str) -> None:
        """Plays action ``name`` as soon as the walk can get to it: InvalidInputError if the avatar
        has no such action (the message lists them) or its clip is not in the motion graph."""
        clip = playable_action(self.library, name)
        self._drop(0)
        self._pending = clip

    def interrupt(self) -> None:
        """Drops the plan and any pending action; the next :meth:`next` replans (a blend in progress
        still completes, so the picture does not jump)."""
        self._drop(0)
        self._pending = None

    # --- planning -----------------------------------------------------------------------------

    def _choose_start(self, idle: np.ndarray) -> int:
        nodes = self.library.graph.nodes
        if nodes.size == 0:
            return -1
        calm = nodes[idle[nodes] & (self._run_len[nodes] > self.config.min_gap)]
        pool = calm if calm.size else nodes
        act = self._act[pool]
        pool = pool[act <= np.median(act)]  # the calmer half: a session starts out listening
        return int(pool[self._rng.integers(pool.size)])

    def _modes(self, lv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mode and loudness of the next ``2 * lookahead`` frames (position 0 = the frame about to be shown):
        speaking where loud, and in silences shorter than ``pause_frames`` between loud frames
        (a gap between words is no pause; a barge-in, with no loud frame after it, is quiet at
        once). Frames past the levels given are loud when the last few given are: speech that is
        still being synthesized goes on, a buffer that ends in silence stays silent."""
        cfg, p = self.config, self.config.pause_frames
        span = 2 * cfg.lookahead_frames
        known = lv[:span]
        window = np.full(p + span, known[-(p // 2 + 1) :].max(), np.float32)
        window[:p] = np.fromiter(self._past, np.float32, count=p) if p else window[:0]
        window[p : p + known.size] = known
        loud = window >= cfg.speak_threshold
        pos = np.arange(window.size)
        before = np.maximum.accumulate(np.where(loud, pos, -(10**6)))
        after = np.minimum.accumulate(np.where(loud, pos, 10**6)[::-1])[::-1]
        return (loud | (after - before <= p))[p:].astype(np.int64), window[p:]

    def _reconcile(self, modes: np.ndarray) -> None:
        for k, item in enumerate(self._queue):
            if item.mode != ACTION and item.mode != modes[k]:
                self._drop(k)
                return

    def _drop(self, k: int) -> None:
        """Drops the planned frames from queue position ``k`` on, restoring what they marked seen."""
        while len(self._queue) > k:
            item = self._queue.pop()
            self._seen[item.pick.index] = item.prev_seen

    def _extend(self, modes: np.ndarray) -> None:
        """Plans on up to ``lookahead_frames``, at most ``plan_steps`` scored decisions (at least
        the frame about to be shown)."""
        h, budget = self.config.lookahead_frames, self.config.plan_steps
        while len(self._queue) < h:
            state = self._queue[-1].state if self._queue else self._state
            if self._pending is not None:
                self._route(state, self._pending)
                self._pending = None
                continue
            if not self._forced_on(state):
                if not budget and self._queue:
                    return
                budget -= 1
            p = len(self._queue)
            node, jump, k = self._step(state, modes[p : p + h], self._drive[p : p + h])
            self._push(state, node, jump, int(modes[p]), k)

    def _push(self, state: _State, node: int, jump: bool, mode: int, k: int) -> _State:
        """Plans ``node`` after ``state``; a jump is blended over ``k`` frames."""
        if jump and state.node >= 0:
            since, src, t = 0, state.node, 0
        else:
            since, src, t, k = state.since_jump + 1, state.blend_src, state.blend_t, state.blend_k
        if t < k:  # the left footage plays on under the fade (held where its run ends)
            src = src + 1 if self._nat[src] else src
            pick = FootagePick(node, src, (t + 1) / (k + 1))
            t += 1
        else:
            pick = FootagePick(node)
        new = _State(node, since, src, t, k)
        self._queue.append(_Item(pick, new, mode, float(self._seen[node])))
        self._seen[node] = self._emitted + len(self._queue) - 1
        return new

    def _step(self, state: _State, horizon: np.ndarray, drive: np.ndarray) -> tuple[int, bool, int]:
        """The successor of ``state.node`` to show next, whether it is a jump, and its blend length."""
        cur, cfg = state.node, self.config
        if cur < 0:
            return self._start, False, cfg.blend_frames
        if self._forced_on(state):
            return cur + 1, False, cfg.blend_frames
        last = bool(self._nat[cur] and self._cornered[cur])
        lo, hi = self._indptr[cur], self._indptr[cur + 1]
        length, share = self._blend_of(cur)
        usable = self._edge_ok[lo:hi]
        # a jump that cannot be blended within the source's own motion waits; where the run offers
        # no smooth one after this frame, playing on is no way either
        smooth = usable & (share <= 1.0) & (self._jump[lo:hi] | (not last))
        if smooth.any():
            usable = smooth
        elif not usable.any():  # only short runs to jump to: take one anyway
            usable = np.ones(hi - lo, dtype=bool)
        else:  # nothing smooth: the least rough
            usable &= share <= share[usable].min()
        targets = self._indices[lo:hi][usable]
        jumps = self._jump[lo:hi][usable]
        scores = self._score(targets, horizon, drive) - self._repeat_cost(targets, jumps)
        scores -= (cfg.jump_penalty + cfg.smooth_weight * share[usable]) * jumps
        tired = (state.since_jump - cfg.min_gap) / (cfg.max_run - cfg.min_gap)
        scores -= (cfg.run_penalty * min(1.0, max(0.0, tired))) * ~jumps
        best = int(np.argmax(scores))
        return int(targets[best]), bool(jumps[best]), int(length[usable][best])

    def _forced_on(self, state: _State) -> bool:
        """Whether the frame after ``state`` plays on with no decision: within ``min_gap`` of the
        last jump, unless cornered (the run ends with no smooth jump, ``_cornered``) with
        the blend done. The start is no decision either."""
        cur = state.node
        if cur < 0:
            return True
        if not self._nat[cur] or state.since_jump >= self.config.min_gap:
            return False
        return not (self._cornered[cur] and state.blend_t >= state.blend_k)

    def _share(self, i: int, j: int) -> float:
        """Smoothness share of the edge ``i -> j`` (0 for a natural one, inf for none)."""
        lo, hi = self._indptr[i], self._indptr[i + 1]
        pos = int(np.searchsorted(self._indices[lo:hi], j))
        if pos == hi - lo or self._indices[lo + pos] != j:
            return float("inf")
        return float(self._blend_of(i)[1][pos])

    def _rough(self, i: int) -> set[int]:
        """Targets of the jumps from ``i`` that cannot be blended within the source's own motion."""
        lo, hi = self._indptr[i], self._indptr[i + 1]
        return set(self._indices[lo:hi][self._blend_of(i)[1] > 1.0].tolist())

    def _blend_of(self, cur: int) -> tuple[np.ndarray, np.ndarray]:
        """Blend length and predicted smoothness share of each edge leaving ``cur`` (planner_blend.py;
        the fixed ``blend_frames`` and share 0 without the footage's pose)."""
        if self._costs is not None:
            return self._costs.of(cur)
        size = int(self._indptr[cur + 1] - self._indptr[cur])
        return np.full(size, self.config.blend_frames), np.zeros(size)

    def _repeat_cost(self, targets: np.ndarray, jumps: np.ndarray) -> np.ndarray:
        """Score cost of the run of output each target (and the frames it forces on) repeats
        (MatchMemory): growing from ``_SOFT_FROM * repeat_window`` so the walk turns away before it
        is cornered; from ``repeat_window`` on, prohibitive (a longer repeat more so: cornered, the
        shortest wins)."""
        w = self.config.repeat_window
        if not w:
            return np.zeros(targets.size)
        gap = self.config.min_gap
        after = np.where(jumps, np.minimum(targets + gap, self._n - 1), targets)
        forced = np.minimum(np.where(jumps, gap, 0) + self._forced[after], self._run_len[targets] - 1)
        length = self._runs.repeat_lengths([item.pick.index for item in self._queue], targets, forced)
        soft = _REPEAT_PENALTY * np.clip((length / w - _SOFT_FROM) / (1.0 - _SOFT_FROM), 0.0, 1.0)
        return soft + np.where(length >= w, 1e6 * (1.0 + length), 0.0)

    def _score(self, c: np.ndarray, horizon: np.ndarray, drive: np.ndarray) -> np.ndarray:
        """Match of the footage run following each candidate with the horizon's modes and loudness
        (per frame: labels and motion energy, see PlannerConfig), minus the revisit penalty, plus
        noise."""
        cfg, n = self.config, self._n
        h = horizon.size
        run = self._run_len[c]
        match = np.zeros(c.size)
        edges = np.flatnonzero(np.diff(horizon)) + 1
        for a, b in zip(np.concatenate([[0], edges]), np.concatenate([edges, [h]]), strict=True):
            mode = int(horizon[a])
            length = np.clip(np.minimum(b, run) - a, 0, None)
            s = np.minimum(c + a, n)
            e = np.minimum(s + length, n)
            rest = b - a - length  # beyond a run: unknown, taken as the footage's average
            cum = self._cum[mode]
            match += cfg.label_weight * (cum[e] - cum[s] + 0.5 * rest)
            act = self._cum_act[e] - self._cum_act[s] + self._mean_act * rest
            weight = cfg.energy_weight * float(drive[a:b].mean()) if mode == SPEAK else -cfg.calm_weight
            match += weight * act
        # then where the run can lead, as wanted by the horizon's last mode
        future = np.where(run > h, self._future[mode][np.minimum(c + h, n - 1)], self._mean_act)
        match += cfg.future_weight * h * weight * future
        now = self._emitted + len(self._queue)
        probe = c[:, None] + np.minimum([0, h // 2, h - 1], run[:, None] - 1)
        recent = np.exp((self._seen[probe] - now) / cfg.revisit_memory).mean(axis=1)
        return match / h - cfg.revisit_penalty * recent + cfg.noise * self._rng.random(c.size)

    # --- actions ------------------------------------------------------------------------------

    def _route(self, state: _State, clip: ActionClip) -> None:
        """Plans the way to ``clip``'s first frame, then the clip itself, as ACTION frames."""
        path = self._path_to(state, clip.start)
        if path is None:
            return
        f = clip.start
        while f + 1 < clip.end and self._nat[f]:
            f += 1
            path.append(f)
        prev = state.node
        for node in path:
            jump = not (prev >= 0 and node == prev + 1 and self._nat[prev])
            k = self.config.blend_frames
            if jump and prev >= 0:
                lo = self._indptr[prev]
                slot = lo + int(np.searchsorted(self._indices[lo : self._indptr[prev + 1]], node))
                k = int(self._blend_of(prev)[0][slot - lo])
            state = self._push(state, node, jump, ACTION, k)
            prev = node

    def _path_to(self, state: _State, start: int) -> list[int] | None:
        """Frames after ``state.node`` up to and including ``start``: on along the run, and one jump
        from a node of it when a smooth one is soon enough; else the shortest way on which every
        blend completes before the next jump and rough jumps are avoided (planner_routes.py). No
        jump before the blend in progress completes."""
        cur = state.node
        if cur < 0:
            return [start]
        if cur == start:
            return []
        ahead = min(int(self._run_len[cur]) - 1, self.config.lookahead_frames)
        if cur < start <= cur + ahead:
            return list(range(cur + 1, start + 1))
        wait = min(max(0, state.blend_k - state.blend_t), ahead)
        for d in range(wait, ahead + 1):  # one smooth jump from the run, the soonest
            if self._share(cur + d, start) <= 1.0:
                return [*range(cur + 1, cur + d + 1), start]
        if self._routes is None:
            self._routes = Routes(self.library.graph, self._nat, self._run_len, self._route_len)  # no actions
        path = self._routes.shortest(cur + wait, start, self._rough)
        return None if path is None else [*range(cur + 1, cur + wait + 1), *path]

