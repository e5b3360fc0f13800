"""How well the trained model does on the held-out end of the clip, rendered as the server does.

Every held-out frame is rendered the runtime's way: its crop, the ``UltralightGenerator`` on a
``TorchRuntime`` fed the audio window the engine would give it, and the ``Compositor`` pasting the
mouth band back (with the avatar's mask). The reference face is a crop from the training part,
never the frame itself, so the real mouth cannot leak into the result. (The runtime's silence
skip is not applied: every frame is generated, so silent frames count too.)

Measured against the real frames:

- ``mouth_l1`` (levels, 0-255) and ``mouth_psnr_db``: in each frame's mouth box (lips plus jaw
  drop, from the frame's landmarks), averaged over frames;
- ``sync_score_*``: the trained SyncNet's mean P(in sync) over the 5-frame windows of the
  generated frames, of the real ones, and of the real ones with audio from elsewhere in the clip
  (what "out of sync" scores);
- ``mouth_audio_correlation_*``: Pearson correlation between the mouth opening FaceMesh measures
  (inner-lip gap over face height) and the audio level (dB RMS over the 2 frames around each
  frame), on the generated and on the real frames: a model that lip-syncs well gets close to the
  real footage's figure.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from livedh.avatar import landmarks as lm
from livedh.avatar.compositor import Compositor
from livedh.lipsync.audio_features import rms_envelope
from livedh.lipsync.generators import UltralightGenerator
from livedh.lipsync.mel import frame_audio_windows
from livedh.lipsync.nets.ultralight import Ultralight
from livedh.lipsync.runtime import TorchRuntime
from livedh.lipsync.training import syncnet as sn
from livedh.lipsync.training.data import SAMPLE_RATE, WINDOW, TrainingData

#: inner-lip landmark pairs (upper, lower) whose gaps make the mouth opening
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
#: PSNR of identical regions (MSE 0) is reported as this, so the report stays finite
MAX_PSNR = 100.0
_BATCH = 16


def render_holdout(
    data: TrainingData, generator: Ultralight, device: torch.device, seed: int = 0
) -> np.ndarray:
    """uint8 (H, height, width, 3): the held-out frames rendered as the server renders them."""
    model = copy.deepcopy(generator).eval()  # the runtime moves (and on CUDA halves) its module
    gen = UltralightGenerator(TorchRuntime(model, device="cuda" if device.type == "cuda" else "cpu"),
                              fps=data.fps)
    compositor = Compositor(gen.size, gen.mouth_band)
    avatar = data.avatar
    held = data.holdout_indices()
    windows = frame_audio_windows(data.audio, data.frame_count, data.fps, gen.audio_window,
                                  gen.audio_lookahead)
    references = np.random.default_rng(seed).integers(0, data.train_frames, size=len(held))
    out = np.empty((len(held), avatar.height, avatar.width, 3), np.uint8)
    try:
        for start in range(0, len(held), _BATCH):
            chunk = held[start : start + _BATCH]
            crops = data.crops[chunk]
            generated = gen.generate(crops, data.crops[references[start : start + _BATCH]], windows[chunk])
            for j, i in enumerate(chunk):
                frame = avatar.frame(int(i)).copy()
                compositor.paste(frame, avatar.crop_box(int(i)), generated[j], crops[j],
                                 region_mask=avatar.mask(int(i)))
                out[start + j] = frame
    finally:
        gen.close()
    return out


def mouth_errors(data: TrainingData, rendered: np.ndarray) -> tuple[float, float]:
    """Mean L1 (levels) and mean PSNR (dB) of the mouth boxes, rendered vs real frames."""
    avatar = data.avatar
    l1, psnr = [], []
    for j, i in enumerate(data.holdout_indices()):
        x0, y0, x1, y1 = lm.mouth_box(avatar.landmarks[i], avatar.width, avatar.height)
        real = avatar.frame(int(i))[y0:y1, x0:x1].astype(np.float32)
        diff = rendered[j, y0:y1, x0:x1].astype(np.float32) - real
        l1.append(float(np.abs(diff).mean()))
        mse = float(np.mean(diff * diff))
        psnr.append(MAX_PSNR if mse <= 0 else min(MAX_PSNR, 10 * math.log10(255.0**2 / mse)))
    return float(np.mean(l1)), float(np.mean(psnr))


def sync_scores(
    data: TrainingData, rendered: np.ndarray, syncnet: sn.SyncNet, device: torch.device, seed: int = 0
) -> dict[str, float]:
    """Mean P(in sync) over the held-out 5-frame windows: generated, real, real with other audio."""
    from livedh.lipsync.training.trainer import to_bgr

    compositor = Compositor(data.crops.shape[1], UltralightGenerator.mouth_band)
    held = data.holdout_indices()
    generated = np.stack(
        [compositor.cut(rendered[j], data.avatar.crop_box(int(i))) for j, i in enumerate(held)]
    )
    starts = np.arange(len(held) - WINDOW + 1)
    frames = starts[:, None] + np.arange(WINDOW)
    middle = held[starts + WINDOW // 2]
    # "out of sync": audio from random training windows (the held-out part is too short to shift)
    rng = np.random.default_rng(seed)
    other = rng.integers(WINDOW // 2, data.train_frames - WINDOW // 2, size=len(starts))
    mels = torch.from_numpy(data.mels).to(device)

    def score(crops: np.ndarray, audio_frames: np.ndarray) -> float:
        faces = sn.sync_faces(to_bgr(torch.from_numpy(crops[frames]).to(device)))
        return float(sn.sync_score(syncnet, faces, mels[torch.from_numpy(audio_frames).to(device)]).mean())

    real = data.crops[held]
    return {
        "sync_score_generated": score(generated, middle),
        "sync_score_real": score(real, middle),
        "sync_score_real_shifted": score(real, other),
    }


def mouth_openings(frames: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face height per frame (FaceMesh, each frame on its own); NaN where no
    face is found."""
    out = np.full(len(frames), np.nan)
    with lm.FaceMeshDetector(static_image_mode=True) as detector:
        for k, frame in enumerate(frames):
            points = detector.detect(frame, search=False)
            if points is None:
                continue
            gaps = [np.linalg.norm(points[a] - points[b]) for a, b in INNER_LIP_PAIRS]
            out[k] = float(np.mean(gaps)) / max(lm.face_height(points), 1e-6)
    return out


def audio_level_db(audio: np.ndarray, frame_count: int, fps: int) -> np.ndarray:
    """dB RMS of the audio over the two frame periods centred on each frame."""
    hop = SAMPLE_RATE // fps
    front = hop - hop // 2  # the window ending at (k + 1) * hop is then centred on frame k - 1
    padded = np.pad(np.asarray(audio, np.float32), (front, 2 * hop + frame_count * hop))
    rms = rms_envelope(padded, hop, 2 * hop)[1 : frame_count + 1]
    return 20 * np.log10(rms + 1e-5)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the entries where both are finite; 0 when it is undefined (fewer
    than 3 entries, or one side constant: a mouth that never moves follows nothing)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return 0.0
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def evaluate_holdout(
    data: TrainingData, generator: Ultralight, syncnet: sn.SyncNet, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """The report's measurements (see the module docstring) as a JSON-ready dict."""
    rendered = render_holdout(data, generator, device, seed)
    l1, psnr = mouth_errors(data, rendered)
    held = data.holdout_indices()
    real = np.stack([data.avatar.frame(int(i)) for i in held])
    level = audio_level_db(data.audio, data.frame_count, data.fps)[held]
    open_generated, open_real = mouth_openings(rendered), mouth_openings(real)
    return {
        "avatar": data.name,
        "holdout_frames": len(held),
        "holdout_seconds": round(len(held) / data.fps, 2),
        "mouth_l1": round(l1, 3),
        "mouth_psnr_db": round(psnr, 2),
        **{k: round(v, 4) for k, v in sync_scores(data, rendered, syncnet, device, seed).items()},
        "mouth_audio_correlation_generated": round(correlation(open_generated, level), 4),
        "mouth_audio_correlation_real": round(correlation(open_real, level), 4),
        "faces_found_generated": int(np.isfinite(open_generated).sum()),
        "faces_found_real": int(np.isfinite(open_real).sum()),
    }


def format_report(report: dict[str, Any]) -> str:
    """A few readable lines of a report (the JSON file has everything)."""
    lines: list[str] = []
    if "holdout_frames" in report:
        held = report["holdout_frames"]
        lines += [
            f"held out: the last {held} frames ({report['holdout_seconds']} s) of avatar "
            f"{report['avatar']!r}",
            f"  mouth region vs real: L1 {report['mouth_l1']:.2f} levels, "
            f"PSNR {report['mouth_psnr_db']:.2f} dB",
            f"  SyncNet P(in sync): generated {report['sync_score_generated']:.3f}, real "
            f"{report['sync_score_real']:.3f}, real with other audio {report['sync_score_real_shifted']:.3f}",
            f"  mouth opening ~ audio level correlation: generated "
            f"{report['mouth_audio_correlation_generated']:+.3f}, real "
            f"{report['mouth_audio_correlation_real']:+.3f} (faces found {report['faces_found_generated']}"
            f"/{held} and {report['faces_found_real']}/{held})",
        ]
    training = report.get("training")
    if training:
        seconds = training["seconds"]
        lines.append(
            f"training: {training['device']}, {training['syncnet_steps']} SyncNet + {training['steps']} "
            f"generator steps of {training['frames_per_step']} frames ({training['epochs']} epochs), "
            f"{seconds['syncnet'] + seconds['generator']:.0f} s, "
            f"{training['generator_samples_per_s']:.1f} frames/s"
        )
    return "\n".join(lines)
