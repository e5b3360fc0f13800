"""Photo lip-sync render speed at 512x512 on one thread, idle and speaking, and the time to build
the default avatar. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_render [--frames 750]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from livedh.avatar.photo import build_photo_avatar
from livedh.lipsync.photo import PhotoLipSync

SR = 16000


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonics plus noise, amplitude-modulated at a 4 Hz syllable rate, -20 dBFS-ish."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    carrier = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 12))
    carrier = carrier + 0.3 * rng.standard_normal(len(t))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 1.5
    return (0.2 * envelope * carrier / np.sqrt(np.mean(carrier**2))).astype(np.float32)


def time_frames(render: Callable[[int], np.ndarray], frames: int) -> tuple[np.ndarray, float]:
    """Wall ms per frame, and CPU seconds per wall second over the run."""
    ms = np.empty(frames)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(frames):
        t0 = time.perf_counter()
        render(i)
        ms[i] = (time.perf_counter() - t0) * 1000
    return ms, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def report(label: str, ms: np.ndarray, cores: float) -> None:
    print(
        f"{label:<24} mean {ms.mean():6.2f} ms  p50 {np.percentile(ms, 50):6.2f}  "
        f"p99 {np.percentile(ms, 99):6.2f}  max {ms.max():6.2f}  "
        f"-> {1000 / ms.mean():6.0f} fps/core  (cpu {cores:.2f} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=750, help="frames per case (25 fps: 30 s)")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the budget is one core: no OpenCV worker threads

    with tempfile.TemporaryDirectory() as tmp:
        builds = []
        for i in range(3):
            t0 = time.perf_counter()
            build_photo_avatar(Path(tmp) / f"default{i}")
            builds.append(time.perf_counter() - t0)
        print(
            f"{'build default avatar':<24} first {builds[0] * 1000:6.0f} ms (imports, model load)"
            f"  then {min(builds[1:]) * 1000:6.0f} ms"
        )
        model = PhotoLipSync.from_dir(Path(tmp) / "default0")

    hop = SR // model.fps
    window = model.audio_window
    silence = np.zeros(window, np.float32)
    audio = np.r_[np.zeros(window), speech_like(args.frames / model.fps + 1.0)].astype(np.float32)

    def speaking(i: int) -> np.ndarray:
        end = window + (i + 1) * hop + model.audio_lookahead
        return model.render(i, audio[end - window : end])

    model.render(0, silence)  # warm-up
    print(f"render {model.width}x{model.height}, 1 thread, {args.frames} frames per case")
    report("idle", *time_frames(lambda i: model.render(i, silence), args.frames))
    report("speaking", *time_frames(speaking, args.frames))
    report("batch of 8 (per frame)", *_batched(model, audio, args.frames))


def _batched(model: PhotoLipSync, audio: np.ndarray, frames: int) -> tuple[np.ndarray, float]:
    from livedh.lipsync.base import LipSyncRequest

    hop, window = SR // model.fps, model.audio_window

    def request(i: int) -> LipSyncRequest:
        end = window + (i + 1) * hop + model.audio_lookahead
        return LipSyncRequest(i, audio[end - window : end], seed=i % 8)

    batches = frames // 8
    ms, cores = time_frames(lambda b: model.infer([request(8 * b + k) for k in range(8)]), batches)
    return ms / 8, cores


if __name__ == "__main__":
    main()
