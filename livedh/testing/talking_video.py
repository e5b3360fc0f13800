"""A synthetic talking-head video for tests and benchmarks, made on the spot with no downloads.

The face is the public-domain astronaut photo that scikit-image ships; its mouth is animated by
the ``photo`` lip-sync model from a generated, speech-like sound (vowel-ish harmonics in
syllables of varying loudness, with pauses), so the mouth opening follows the loudness exactly
as in a real talking clip, and FaceMesh finds the face in every frame.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


def speech_like_audio(seconds: float, *, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 mono in [-1, 1]: syllables (120-320 ms, harmonics of a 110-220 Hz voice, random
    loudness) separated by short gaps, and a longer pause every second or so."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = np.zeros(n, np.float32)
    t = 0.25
    while t < seconds - 0.1:
        length = float(rng.uniform(0.12, 0.32))
        start, stop = int(t * sample_rate), min(n, int((t + length) * sample_rate))
        k = np.arange(stop - start) / sample_rate
        f0 = float(rng.uniform(110, 220))
        formant = float(rng.uniform(500, 1500))
        tone = sum(
            np.sin(2 * np.pi * f0 * h * k) / h * np.exp(-(((f0 * h - formant) / 900) ** 2))
            for h in range(1, 12)
        )
        envelope = np.sin(np.pi * np.arange(stop - start) / max(stop - start, 1)) ** 0.5
        out[start:stop] += (float(rng.uniform(0.15, 0.6)) * envelope * tone).astype(np.float32)
        t += length + float(rng.uniform(0.04, 0.12))
        if rng.random() < 0.2:
            t += float(rng.uniform(0.3, 0.6))
    peak = float(np.abs(out).max()) or 1.0
    return np.clip(out / peak * 0.8, -1.0, 1.0)


def talking_frames(audio: np.ndarray, fps: int = 25) -> list[np.ndarray]:
    """512x512 RGB frames of the astronaut speaking ``audio`` (16 kHz), one per 1/fps s: the
    photo model's mouth opens with the audio's loudness, blinks and sways as it does live."""
    from livedh.avatar.photo import build_photo_avatar
    from livedh.lipsync.base import LipSyncRequest
    from livedh.lipsync.photo import PhotoLipSync

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "default"
        build_photo_avatar(folder)
        model = PhotoLipSync.from_dir(folder)
    hop = SAMPLE_RATE // fps
    frame_count = len(audio) // hop
    x = np.asarray(audio, np.float32)
    padded = np.pad(x, (model.audio_window, model.audio_window + model.audio_lookahead))
    frames = []
    for i in range(frame_count):
        end = (i + 1) * hop + model.audio_lookahead + model.audio_window
        window = padded[end - model.audio_window : end]
        frames.append(model.infer([LipSyncRequest(i, window)])[0])
    return frames


@dataclass(frozen=True)
class VideoSpec:
    """What ``write_talking_video`` makes. ``size`` is (width, height) of the canvas the face is
    placed on; ``face_scale`` scales the 512 px photo (0.1: a tiny face); ``faces``: how many
    copies of the person stand side by side (0: an empty, noisy scene)."""

    seconds: float = 4.0
    fps: int = 25
    size: tuple[int, int] = (512, 512)
    face_scale: float = 1.0
    faces: int = 1
    audio: bool = True
    #: irregular frame timestamps (a phone's variable frame rate): frame gaps of 1/fps +- 40%
    variable_frame_rate: bool = False
    seed: int = 0


def compose(frame: np.ndarray, spec: VideoSpec, rng: np.random.Generator) -> np.ndarray:
    import cv2

    width, height = spec.size
    canvas = np.full((height, width, 3), 90, np.uint8)
    canvas += rng.integers(0, 12, canvas.shape, dtype=np.uint8)  # sensor noise
    if spec.faces == 0:
        return canvas
    side = max(8, round(512 * spec.face_scale))
    face = cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA) if side != 512 else frame
    slot = width // spec.faces
    for k in range(spec.faces):
        x0 = max(0, min(width - side, k * slot + (slot - side) // 2))
        y0 = max(0, (height - side) // 3)
        h, w = min(side, height - y0), min(side, width - x0)
        canvas[y0 : y0 + h, x0 : x0 + w] = face[:h, :w]
    return canvas


def write_talking_video(path: Path, spec: VideoSpec | None = None) -> tuple[Path, np.ndarray]:
    """Writes an H.264 MP4 (with AAC audio unless ``spec.audio`` is False) of a talking face and
    returns its path and the 16 kHz audio it speaks."""
    import av

    spec = spec or VideoSpec()
    rng = np.random.default_rng(spec.seed)
    audio = speech_like_audio(spec.seconds, seed=spec.seed)
    frames = talking_frames(audio, spec.fps)
    path = Path(path)
    timebase = Fraction(1, 1000 * spec.fps)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width, video.height = spec.size
        video.pix_fmt = "yuv420p"
        video.time_base = video.codec_context.time_base = timebase
        video.options = {"preset": "ultrafast"}
        sound = container.add_stream("aac", rate=44100) if spec.audio else None
        pts, step = 0, 1000
        for frame in frames:
            image = av.VideoFrame.from_ndarray(compose(frame, spec, rng), format="rgb24")
            image.pts, image.time_base = pts, timebase
            pts += int(step * (1 + rng.uniform(-0.4, 0.4))) if spec.variable_frame_rate else step
            container.mux(video.encode(image))
        container.mux(video.encode())
        if sound is not None:
            pcm = (audio * 32767).astype(np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, 0
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
            for piece in resampler.resample(chunk) + resampler.resample(None):
                container.mux(sound.encode(piece))
            container.mux(sound.encode())
    return path, audio
