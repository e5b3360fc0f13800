"""Run-time cost of a living body: the motion planner's ``next()`` (livedh/avatar/planner.py) and the
transition blend (livedh/avatar/footage.py, DIS optical flow both ways, warp, cross-fade) on
512x512 frames, against the issue's budget: planner and blending together under 5 ms per frame on
one core, averaged over a stream. The stream alternates speech and listening over a motion graph
built from synthetic poses (bench_motion_graph.py's footage). Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_motion_runtime [--minutes 5] [--seconds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace
from typing import cast

import cv2
import numpy as np
from skimage import data

from bench.bench_motion_graph import synthetic_footage
from livedh.avatar.footage import FootageFrames, FootageParams
from livedh.avatar.motion import FootagePick, MotionLibrary
from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph
from livedh.avatar.planner import MotionPlanner, PlannerConfig
from livedh.avatar.video import VideoAvatar

FPS = 25
SIZE = 512


def stream_levels(frames: int, seed: int = 0) -> np.ndarray:
    """Loudness per frame: 6 s of speech (syllables, short gaps between words), 4 s of listening."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    speaking = (t % (10 * FPS)) < 6 * FPS
    syllables = np.clip(0.6 + 0.5 * np.sin(2 * np.pi * t / 6.0) + 0.2 * rng.standard_normal(frames), 0, 1)
    gaps = rng.random(frames // 8 + 1).repeat(8)[:frames] < 0.1  # now and then a 0.3 s gap
    return np.where(speaking & ~gaps, syllables, 0.0).astype(np.float32)


def bench_planner(
    library: MotionLibrary, frames: int, cfg: PlannerConfig
) -> tuple[list[FootagePick], float, float]:
    levels = stream_levels(frames + cfg.lookahead_frames)
    planner = MotionPlanner(library, cfg, seed=1)
    picks, times = [], []
    for i in range(frames):
        ahead = levels[i : i + cfg.lookahead_frames]
        t0 = time.perf_counter()
        picks.append(planner.next(ahead))
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return picks, float(ms.mean()), float(np.percentile(ms, 99))


class _Avatar:
    """512x512 footage: the astronaut photo moving a few pixels from frame to frame."""

    def __init__(self, count: int) -> None:
        photo = cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        self.frames = []
        for i in range(count):
            m = np.array([[1, 0, 6 * np.sin(i / 5)], [0, 1, 3 * np.cos(i / 7)]], np.float32)
            self.frames.append(cv2.warpAffine(photo, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE))
        self.frame_count = count
        self.manifest = SimpleNamespace(fps=FPS, width=SIZE, height=SIZE)

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i]

    def crop_box(self, i: int) -> tuple[int, int, int, int]:
        return (180, 120, 340, 280)

    def mask(self, i: int) -> np.ndarray | None:
        return None


def bench_blend(picks: list[FootagePick], params: FootageParams, repeat: int) -> tuple[float, float]:
    """Median ms per blended frame and per plain frame (a copy) of the stream's own picks."""
    avatar = _Avatar(64)
    ff = FootageFrames(cast(VideoAvatar, avatar), params)

    def small(p: FootagePick) -> FootagePick:
        return FootagePick(p.index % 64, None if p.blend_from is None else p.blend_from % 64, p.alpha)

    blended = [small(p) for p in picks if p.blend_from is not None][:repeat]
    plain = [small(p) for p in picks if p.blend_from is None][:repeat]
    out = []
    for group in (blended, plain):
        ff.base(group[0])  # warm-up
        times = []
        for p in group:
            t0 = time.perf_counter()
            ff.base(p)
            times.append(time.perf_counter() - t0)
        out.append(float(np.median(times)) * 1e3)  # median: the machine may be shared
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the planned stream")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic footage")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (1: one core)")
    ap.add_argument("--repeat", type=int, default=60, help="blends timed")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    one, five, _ = os.getloadavg()
    print(f"load avg {one:.1f}/{five:.1f} on {os.cpu_count()} cores; OpenCV threads {args.threads}")

    kp, vis, boxes, cuts = synthetic_footage(args.seconds, FPS)
    graph = build_motion_graph(kp, vis, boxes, cuts, MotionGraphConfig())
    library = MotionLibrary(graph, np.zeros(graph.n_frames, bool))
    print(
        f"graph: {graph.n_frames} frames, {graph.nodes.size} kept, {graph.n_transitions} transitions, "
        f"{graph.gesture.mean():.0%} gesture"
    )
    cfg = PlannerConfig()
    frames = int(args.minutes * 60 * FPS)
    picks, mean_ms, p99_ms = bench_planner(library, frames, cfg)
    share = sum(p.blend_from is not None for p in picks) / len(picks)
    print(f"planner next(): {mean_ms:.3f} ms/frame mean, {p99_ms:.3f} ms p99 over {frames} frames")
    print(f"blended frames: {share:.1%} of the stream ({cfg.blend_frames} per jump)")

    for name, params in (
        ("ultrafast @1/2", FootageParams(preset=cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, flow_scale=0.5)),
        ("fast @1/2", FootageParams(preset=cv2.DISOPTICAL_FLOW_PRESET_FAST, flow_scale=0.5)),
        ("ultrafast @1", FootageParams(preset=cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, flow_scale=1.0)),
        ("fast @1", FootageParams(preset=cv2.DISOPTICAL_FLOW_PRESET_FAST, flow_scale=1.0)),
    ):
        blend_ms, plain_ms = bench_blend(picks, params, args.repeat)
        avg = mean_ms + share * blend_ms + (1 - share) * plain_ms
        default = "  (default)" if params == FootageParams() else ""
        print(
            f"footage {name:15s} blend {blend_ms:6.2f} ms/frame, plain {plain_ms:.2f} ms/frame; "
            f"planner + footage over the stream {avg:.2f} ms/frame (budget 5){default}"
        )


if __name__ == "__main__":
    main()
