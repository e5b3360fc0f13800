"""The rendering half of bench/bench_motion.py: lips unharmed, and the cost in sessions.

Lips: the lip-gap/voice correlation of the output (FaceMesh's inner-lip gap over face height,
each frame on its own, against the audio level: livedh/lipsync/training/report.py's measure),
with the motion graph and with the plain ping-pong loop, same avatar, same audio; measured on the
rendered frames and on the same frames after the stream's own H.264 encoder
(livedh/transport/encoding.py, its default bitrate) and PyAV's decoder, which is what a viewer
sees and the figure compared. A
random-weight Wav2Lip draws noise-like mouths that FaceMesh does not read as a lip gap, and no
trained weights may be downloaded here, so the mouth generator is a stand-in drawn to the
audio's loudness (DrawnMouth): what is measured is whether the planner's footage (moving face
boxes, blended frames) keeps the generated mouth on the lips, which does not depend on how
good the network is.

Cost: Wav2Lip-96 with random weights through the shared batching engine, N sessions rendering
speech back to back, motion graph off and on; sessions at 25 fps = frames/s / 25.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from livedh.avatar.motion import FootagePick
from livedh.lipsync.generator import FaceGenerator
from livedh.lipsync.generators import centred_lookahead
from livedh.lipsync.mel import MelFrontEnd, frame_audio_windows

if TYPE_CHECKING:
    from bench.bench_motion import Source

FPS = 25
SR = 16000
#: audio samples Wav2Lip's mel front end takes per frame (livedh/lipsync/mel.py)
WAV2LIP_WINDOW = MelFrontEnd().window_samples


class DrawnMouth(FaceGenerator):
    """Draws lips whose opening follows the loudness of the frame's own 40 ms: a deterministic
    stand-in for a trained network (Wav2Lip's crop size, window and mouth band)."""

    size = 96
    audio_window = WAV2LIP_WINDOW
    audio_lookahead = centred_lookahead(WAV2LIP_WINDOW, FPS)
    mouth_band = (0.5, 1.0)

    def __init__(self, centre: tuple[float, float], width: float) -> None:
        self.centre, self.width = centre, width

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(crops.copy())
        s = self.size
        hop = SR // FPS
        own = audio[:, -self.audio_lookahead - hop : -self.audio_lookahead]
        db = 20 * np.log10(np.sqrt(np.mean(own.astype(np.float64) ** 2, axis=1)) + 1e-9)
        opening = np.clip((db + 50) / 30, 0, 1)
        c = (round(self.centre[0] * s * 16), round(self.centre[1] * s * 16))
        half = self.width * s / 2
        for crop, o in zip(out, opening, strict=True):
            lips = (round(half * 1.1 * 16), round((0.035 + 0.08 * o) * s * 16))
            cv2.ellipse(crop, c, lips, 0, 0, 360, (170, 80, 80), -1, cv2.LINE_AA, shift=4)
            inner = (round(half * 0.85 * 16), max(16, round(0.075 * o * s * 16)))
            cv2.ellipse(crop, c, inner, 0, 0, 360, (45, 15, 20), -1, cv2.LINE_AA, shift=4)
        return out


def _mouth_in_crop(src: Source) -> tuple[tuple[float, float], float]:
    """Where the lips sit in the avatar's crops (mean over frames), as fractions of the crop."""
    av = src.avatar
    rel = []
    for i in range(0, av.frame_count, 5):
        x0, y0, x1, y1 = av.crop_box(i)
        pts = av.landmarks[i]
        mid = (pts[13] + pts[14]) / 2
        rel.append([(mid[0] - x0) / (x1 - x0), (mid[1] - y0) / (y1 - y0),
                    np.linalg.norm(pts[308] - pts[78]) / (x1 - x0)])
    cx, cy, w = np.mean(rel, axis=0)
    return (float(cx), float(cy)), float(w)


def _render(model: object, windows: np.ndarray, picks: Sequence[FootagePick] | None) -> np.ndarray:
    from livedh.lipsync.base import LipSyncRequest
    from livedh.lipsync.neural import NeuralLipSync

    assert isinstance(model, NeuralLipSync)
    frames = []
    for start in range(0, len(windows), 8):
        batch = [
            LipSyncRequest(i, windows[i], footage=None if picks is None else picks[i])
            for i in range(start, min(start + 8, len(windows)))
        ]
        frames += model.infer(batch)
    return np.stack(frames)


def through_codec(frames: np.ndarray, fps: int = FPS) -> np.ndarray:
    """``frames`` (T, h, w, 3) RGB after the stream's H.264 encoder (default bitrate, keyframe
    interval) and PyAV's h264 decoder: what a WebRTC viewer decodes, without packet loss."""
    import av

    from livedh.transport.encoding import H264Encoder

    t_n, h, w = frames.shape[:3]
    encoder = H264Encoder(w, h, fps)
    decoder = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        for packet in encoder.encode(np.ascontiguousarray(frame), "rgb24", i, keyframe=i == 0):
            out += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    out += [f.to_ndarray(format="rgb24") for f in decoder.decode(None)]  # flush
    if len(out) != t_n:
        raise RuntimeError(f"codec round trip: {len(out)} frames decoded of {t_n}")
    return np.stack(out)


def lips(src: Source, voice: np.ndarray, seconds: float, seed: int) -> None:
    from bench.bench_motion import plan, speech_schedule
    from livedh.avatar.planner import speech_levels
    from livedh.lipsync.neural import NeuralLipSync
    from livedh.lipsync.training.report import audio_level_db, correlation, mouth_openings

    audio, turn = speech_schedule(seconds / 60, voice, seed + 1)
    n = len(turn)
    centre, width = _mouth_in_crop(src)
    model = NeuralLipSync(src.avatar, DrawnMouth(centre, width))
    windows = frame_audio_windows(audio, n, FPS, model.audio_window, model.audio_lookahead)
    picks = plan(src.library, speech_levels(audio, SR // FPS)[:n], seed)
    level = audio_level_db(audio, n, FPS)
    print(f"\n## lips unharmed, {src.label}: {seconds:g} s, speaking {100 * turn.mean():.0f}%; lip gap "
          "(FaceMesh) ~ audio level correlation, mouth drawn to the loudness (see bench/motion_render.py); "
          "rendered frames, and decoded after the stream's H.264 encoder (700 kbit/s)")
    print(f"{'':<16} {'rendered':>9} {'decoded':>9} {'faces found (decoded)':>22}")
    results: dict[str, dict[str, float]] = {"rendered": {}, "decoded": {}}
    for name, p in (("motion graph", picks), ("ping-pong loop", None)):
        frames = _render(model, windows, p)
        results["rendered"][name] = correlation(mouth_openings(frames), level)
        opening = mouth_openings(through_codec(frames))
        results["decoded"][name] = correlation(opening, level)
        found = int(np.isfinite(opening).sum())
        print(f"{name:<16} {results['rendered'][name]:>+9.3f} {results['decoded'][name]:>+9.3f} "
              f"{found:>16}/{n}")
    ratios = {k: r["motion graph"] / r["ping-pong loop"] if r["ping-pong loop"] else float("nan")
              for k, r in results.items()}  # fmt: skip
    print(f"ratio graph / loop, decoded: {ratios['decoded']:.2f}x (target >= 0.9x); rendered: "
          f"{ratios['rendered']:.2f}x")


def _wav2lip_model(src: Source) -> object:
    import torch

    from livedh.lipsync.generators import Wav2LipGenerator
    from livedh.lipsync.nets import calibrate_batchnorm
    from livedh.lipsync.nets.wav2lip import build_wav2lip
    from livedh.lipsync.neural import NeuralLipSync
    from livedh.lipsync.runtime import RuntimeConfig, make_runtime

    torch.manual_seed(0)
    network = build_wav2lip("96")
    calibrate_batchnorm(network, 96, (1, 80, 16))
    runtime = make_runtime(RuntimeConfig(kind="torch", device="cpu"), module=network)
    return NeuralLipSync(src.avatar, Wav2LipGenerator(runtime, size=96))


async def _sessions(src: Source, n: int, frames: int, windows: np.ndarray, levels: np.ndarray,
                    motion: bool) -> float:
    from livedh.avatar.planner import MotionPlanner
    from livedh.lipsync.base import LipSyncModel, LipSyncRequest
    from livedh.lipsync.engine import LipSyncEngine

    model = _wav2lip_model(src)  # the engine closes its model
    assert isinstance(model, LipSyncModel)
    engine = LipSyncEngine(model, max_batch=n, max_wait=0.02)

    async def session(seed: int) -> None:
        planner = MotionPlanner(src.library, seed=seed) if motion else None
        ahead = planner.config.lookahead_frames if planner else 1
        for i in range(frames):
            pick = planner.next(levels[i : i + ahead]) if planner else None
            await engine.render(LipSyncRequest(i, windows[i], seed, footage=pick))

    start = time.perf_counter()
    await asyncio.gather(*(session(s) for s in range(n)))
    wall = time.perf_counter() - start
    await engine.aclose()
    return n * frames / wall


def motion_stage(src: Source, picks: Sequence[FootagePick]) -> None:
    """Per-frame CPU of the planner's pick plus the base frame (blend or copy), one thread."""
    from livedh.avatar.footage import FootageFrames

    frames = FootageFrames(src.avatar)
    ms, blended = [], []
    for p in picks:
        t0 = time.perf_counter()
        frames.base(p)
        ms.append((time.perf_counter() - t0) * 1000)
        blended.append(p.blend_from is not None)
    a, b = np.array(ms), np.array(blended)
    print(f"base frame: mean {a.mean():.2f} ms, p99 {np.percentile(a, 99):.2f} ms; blended frames "
          f"({100 * b.mean():.0f}%) mean {a[b].mean() if b.any() else 0:.2f} ms, p99 "
          f"{np.percentile(a[b], 99) if b.any() else 0:.2f} ms ({src.avatar.width}x{src.avatar.height})")


def cost(src: Source, voice: np.ndarray, seconds: float, seed: int) -> None:
    import torch

    from bench.bench_motion import plan, speech_schedule
    from livedh.avatar.planner import speech_levels

    torch.set_num_threads(2)
    frames = round(seconds * FPS)
    audio = np.resize(voice, frames * (SR // FPS) + SR).astype(np.float32)
    windows = frame_audio_windows(audio, frames, FPS, DrawnMouth.audio_window, DrawnMouth.audio_lookahead)
    levels = np.r_[speech_levels(audio, SR // FPS), np.zeros(100, np.float32)].astype(np.float32)
    print(f"\n## cost, {src.label} ({src.avatar.width}x{src.avatar.height}): Wav2Lip-96 random weights, "
          f"torch CPU 2 threads, engine batching, sessions speaking back to back ({frames} frames each, "
          "best of 2)")
    stream, _ = speech_schedule(1.0, voice, seed)
    motion_stage(src, plan(src.library, speech_levels(stream, SR // FPS), seed))
    asyncio.run(_sessions(src, 1, 8, windows, levels, False))  # warm-up
    print(f"{'sessions':>8} {'off fps':>8} {'on fps':>8} {'on/off':>7} {'off @25fps':>11} {'on @25fps':>10}")
    for n in (1, 2, 4):
        # off and on alternate, best of two each: other processes on the machine come and go
        runs = [asyncio.run(_sessions(src, n, frames, windows, levels, bool(k % 2))) for k in range(4)]
        off, on = max(runs[0::2]), max(runs[1::2])
        print(f"{n:>8} {off:>8.1f} {on:>8.1f} {on / off:>6.2f}x {off / FPS:>11.2f} {on / FPS:>10.2f}")
