"""Motion graph build time (livedh/avatar/motion_graph.py) on synthetic poses: 60 s of 25 fps
footage with 33 keypoints (MediaPipe Pose), against the issue's budget of 30 s. Prints figures;
asserts nothing.

    .venv/bin/python -m bench.bench_motion_graph [--seconds 60] [--fps 25] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph, detect_cuts


def synthetic_footage(
    seconds: float, fps: int, keypoints: int = 33, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A person swaying around a rest pose with gestures now and then, some keypoints missing
    (hands out of frame), the face box drifting a little, and one jump cut half way."""
    rng = np.random.default_rng(seed)
    t_n = int(seconds * fps)
    t = np.arange(t_n) / fps
    rest = rng.uniform(100, 900, (keypoints, 2))
    sway = 6 * np.sin(2 * np.pi * 0.3 * t)[:, None, None] + rng.normal(0, 0.5, (t_n, keypoints, 2))
    gesture = (
        (np.sin(2 * np.pi * t / 7.0) > 0.6)[:, None, None] * 40 * np.sin(2 * np.pi * 1.2 * t)[:, None, None]
    )
    kp = rest[None] + sway + gesture * rng.uniform(0, 1, (1, keypoints, 1))
    visible = rng.random((t_n, keypoints)) > 0.05
    visible[:, 15:23] &= (np.sin(2 * np.pi * t / 11.0) < 0.8)[:, None]  # hands leave the frame
    box = np.array([400.0, 150.0, 600.0, 400.0])
    boxes = box[None] + (3 * np.sin(2 * np.pi * 0.1 * t))[:, None]
    return kp, visible, boxes, np.array([t_n // 2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    kp, visible, boxes, cuts = synthetic_footage(args.seconds, args.fps)
    cfg = MotionGraphConfig()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        graph = build_motion_graph(kp, visible, boxes, cuts, cfg)
        times.append(time.perf_counter() - t0)
    thumbs = np.random.default_rng(1).integers(0, 255, (kp.shape[0], 48, 48), dtype=np.uint8)
    t0 = time.perf_counter()
    detect_cuts(thumbs)
    t_cuts = time.perf_counter() - t0
    t_n = kp.shape[0]
    print(
        f"motion graph: {args.seconds:.0f} s x {args.fps} fps = {t_n} frames x {kp.shape[1]} keypoints  "
        f"build {min(times):.2f} s (best of {args.repeat}; budget 30 s, ratio {min(times) / 30:.3f})  "
        f"detect_cuts {1000 * t_cuts:.0f} ms",
        flush=True,
    )
    print(
        f"  kept {graph.nodes.size}/{t_n} frames, {graph.n_transitions} transitions "
        f"({graph.n_transitions / max(graph.nodes.size, 1):.1f} per frame), "
        f"gesture {100 * graph.gesture.mean():.0f}% of frames",
        flush=True,
    )


if __name__ == "__main__":
    main()
