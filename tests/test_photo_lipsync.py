"""The photo lip-sync renderer: mouth follows the audio, idle life, no jumps, batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livedh.avatar import landmarks as lm
from livedh.avatar.format import AvatarManifest, load_photo_avatar
from livedh.avatar.photo import build_photo_avatar
from livedh.errors import InvalidInputError
from livedh.lipsync.audio_features import MouthDriveParams, mouth_drive, rms_envelope
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.photo import PhotoLipSync, PhotoParams

SR = 16000


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("avatars") / "default"
    build_photo_avatar(out)
    return out


@pytest.fixture(scope="module")
def model(avatar_dir: Path) -> PhotoLipSync:
    return PhotoLipSync.from_dir(avatar_dir)


@pytest.fixture(scope="module")
def manifest(avatar_dir: Path) -> AvatarManifest:
    return load_photo_avatar(avatar_dir).manifest


def tone(level_db: float, n: int = 1920, f0: float = 140.0) -> np.ndarray:
    """A voiced, vowel-like harmonic series at ``level_db`` dBFS RMS."""
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (level_db / 20)).astype(np.float32)


def synthetic_speech(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Harmonics plus noise, amplitude-modulated in 200-330 ms syllables (3-5 Hz) with pauses;
    returns (audio, the modulation envelope per sample)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.zeros(n)
    t = 0.0
    while t < seconds - 0.35:
        if rng.random() < 0.15:  # a pause between words
            t += rng.uniform(0.15, 0.4)
            continue
        dur = rng.uniform(0.2, 0.33)
        i0, i1 = int(t * SR), int((t + dur) * SR)
        u = np.linspace(0, 1, i1 - i0, endpoint=False)
        env[i0:i1] = rng.uniform(0.3, 1.0) * np.sin(np.pi * u) ** 1.5
        t += dur
    tt = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * tt)) / SR
    carrier = sum(np.sin(k * phase) / k for k in range(1, 12)) + 0.3 * rng.standard_normal(n)
    carrier /= np.sqrt(np.mean(carrier**2))
    return (0.25 * env * carrier).astype(np.float32), env


def window(model: PhotoLipSync, audio: np.ndarray, i: int) -> np.ndarray:
    """The window a session passes for frame i: audio_window samples ending audio_lookahead
    samples after the frame's end; zeros before and after the audio."""
    hop = SR // model.fps
    end = (i + 1) * hop + model.audio_lookahead
    start = end - model.audio_window
    out = np.zeros(model.audio_window, np.float32)
    s0, e0 = max(start, 0), min(end, len(audio))
    if e0 > s0:
        out[s0 - start : e0 - start] = audio[s0:e0]
    return out


def silence(model: PhotoLipSync) -> np.ndarray:
    return np.zeros(model.audio_window, np.float32)


def region_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).mean())


def eye_boxes(avatar_dir: Path) -> list[tuple[int, int, int, int]]:
    points = load_photo_avatar(avatar_dir).landmarks
    boxes = []
    for contour in (lm.RIGHT_EYE_UPPER + lm.RIGHT_EYE_LOWER, lm.LEFT_EYE_UPPER + lm.LEFT_EYE_LOWER):
        (x0, y0), (x1, y1) = points[list(contour)].min(axis=0), points[list(contour)].max(axis=0)
        boxes.append((int(x0) - 3, int(y0) - 3, int(x1) + 4, int(y1) + 4))
    return boxes


def outside_head(frame: np.ndarray) -> np.ndarray:
    """Pixels far from the astronaut's head: the flag, the shuttle, the suit."""
    return np.concatenate([frame[:, :100].ravel(), frame[:, 360:].ravel(), frame[300:].ravel()])


def test_frames_are_rgb_512(model: PhotoLipSync) -> None:
    frame = model.render(0, silence(model))
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert (model.width, model.height, model.fps) == (512, 512, 25)


def test_silence_leaves_the_mouth_closed(
    avatar_dir: Path, model: PhotoLipSync, manifest: AvatarManifest
) -> None:
    # background noise under the floor moves nothing
    noise = np.random.default_rng(0).standard_normal(model.audio_window) * 10 ** (-70 / 20)
    for i in (0, 17, 90):
        quiet = model.render(i, noise.astype(np.float32))
        assert np.array_equal(quiet, model.render(i, silence(model)))
    # and with head sway and blinks off, a silent frame is the photo itself: its closed mouth
    still = PhotoLipSync.from_dir(
        avatar_dir, PhotoParams(head_shift_px=0, head_tilt_deg=0, blink_interval_s=(1e6, 1e6))
    )
    photo = load_photo_avatar(avatar_dir).image
    assert np.array_equal(still.render(5, silence(model)), photo)
    assert region_diff(still.render(5, tone(-20)), photo, manifest.mouth_box) > 10


def test_loud_window_opens_the_mouth_only(model: PhotoLipSync, manifest: AvatarManifest) -> None:
    idle = model.render(12, silence(model))
    loud = model.render(12, tone(-15))
    mouth = region_diff(loud, idle, manifest.mouth_box)
    assert mouth > 15
    assert np.array_equal(outside_head(loud), outside_head(idle))
    # louder opens wider, up to full
    openings = [
        region_diff(model.render(12, tone(db)), idle, manifest.mouth_box) for db in (-40, -30, -20)
    ]
    assert openings[0] < openings[1] < openings[2] <= mouth * 1.05
    # the open mouth is a dark cavity below the teeth, not the lips smeared down
    x0, y0, x1, y1 = manifest.mouth_box

    def dark(frame: np.ndarray) -> int:
        return int((frame[y0:y1, x0:x1].mean(axis=2) < 50).sum())

    assert dark(loud) > 10 * dark(idle) + 50


def test_speaking_leaves_the_upper_face_and_head_motion_alone(
    avatar_dir: Path, model: PhotoLipSync
) -> None:
    for i in (3, 40, 77):
        idle, loud = model.render(i, silence(model)), model.render(i, tone(-15))
        for box in eye_boxes(avatar_dir):
            assert region_diff(idle, loud, box) == 0.0


def motion_in_mouth(
    model: PhotoLipSync, audio: np.ndarray, box: tuple[int, int, int, int], order: np.ndarray
) -> np.ndarray:
    """Per frame: how far frame i's mouth is from its silent version when given window order[i]."""
    return np.array(
        [
            region_diff(
                model.render(i, window(model, audio, j)), model.render(i, silence(model)), box
            )
            for i, j in enumerate(order)
        ]
    )


def test_mouth_motion_follows_the_speech_envelope(
    model: PhotoLipSync, manifest: AvatarManifest
) -> None:
    audio, env = synthetic_speech(4.0, seed=1)
    hop = SR // model.fps
    n = len(audio) // hop
    half = model.audio_window // 2
    centres = ((np.arange(n) + 0.5) * hop).astype(int)
    envelope = np.array([np.sqrt(np.mean(env[max(c - half, 0) : c + half] ** 2)) for c in centres])

    motion = motion_in_mouth(model, audio, manifest.mouth_box, np.arange(n))
    assert motion.std() > 3  # the mouth moves
    assert np.corrcoef(motion, envelope)[0, 1] > 0.7
    # the same measure rejects a mouth that moves without following the audio (shuffled windows)
    shuffled = np.random.default_rng(0).permutation(n)
    unrelated = motion_in_mouth(model, audio, manifest.mouth_box, shuffled)
    assert abs(np.corrcoef(unrelated, envelope)[0, 1]) < 0.4


def test_idle_blinks_within_six_seconds(avatar_dir: Path, model: PhotoLipSync) -> None:
    boxes = eye_boxes(avatar_dir)

    def dark_pixels(seed: int) -> np.ndarray:
        counts = []
        for i in range(150):  # 6 s at 25 fps
            frame = model.render(i, silence(model), seed).mean(axis=2)
            counts.append(sum(int((frame[y0:y1, x0:x1] < 90).sum()) for x0, y0, x1, y1 in boxes))
        return np.array(counts)

    for seed in (0, 1):
        dark = dark_pixels(seed)
        closed = dark < 0.35 * np.median(dark)  # lids over the irises
        assert closed.any(), f"no blink in 6 s (seed {seed})"
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0])))[::2]
        assert runs.max() <= 4  # a blink, ~150 ms, not eyes shut
    # sessions with different seeds do not blink in lockstep
    first = [next(i for i in range(150) if model.blink(i / 25, s) > 0.5) for s in range(6)]
    assert len(set(first)) > 1


def test_idle_frames_move_but_the_background_does_not(model: PhotoLipSync) -> None:
    frames = [model.render(i, silence(model)) for i in (0, 50, 100)]
    x0, y0, x1, y1 = 170, 60, 290, 200  # the face
    assert region_diff(frames[0], frames[1], (x0, y0, x1, y1)) > 1.0
    assert region_diff(frames[1], frames[2], (x0, y0, x1, y1)) > 1.0
    assert np.array_equal(outside_head(frames[0]), outside_head(frames[1]))


def test_no_jump_between_consecutive_frames(model: PhotoLipSync, manifest: AvatarManifest) -> None:
    # 1 s silence, 1.5 s of an abruptly starting and ending loud vowel, 1 s silence
    audio = np.zeros(int(3.5 * SR), np.float32)
    audio[SR : SR + int(1.5 * SR)] = tone(-14, n=int(1.5 * SR))
    n = len(audio) // (SR // model.fps)
    frames = [model.render(i, window(model, audio, i)).astype(np.int16) for i in range(n)]
    full_open = region_diff(
        model.render(40, tone(-14)), model.render(40, silence(model)), manifest.mouth_box
    )
    steps = [region_diff(frames[i], frames[i - 1], manifest.mouth_box) for i in range(1, n)]
    # the mouth opens and closes over several frames, never in one
    assert max(steps) < 0.7 * full_open
    assert sum(s > 0.2 * full_open for s in steps) >= 4
    whole = [float(np.abs(frames[i] - frames[i - 1]).mean()) for i in range(1, n)]
    assert max(whole) < 1.0


def test_batch_renders_each_request_in_order(model: PhotoLipSync) -> None:
    requests = [
        LipSyncRequest(frame_index=30, audio=silence(model), seed=1),
        LipSyncRequest(frame_index=31, audio=tone(-15), seed=2),
        LipSyncRequest(frame_index=7, audio=tone(-30), seed=3),
        LipSyncRequest(frame_index=30, audio=silence(model), seed=4),
    ]
    frames = model.infer(requests)
    assert len(frames) == len(requests)
    for request, frame in zip(requests, frames, strict=True):
        assert np.array_equal(frame, model.render(request.frame_index, request.audio, request.seed))
    assert not np.array_equal(frames[0], frames[3])  # same time, other session: other sway
    assert not np.array_equal(frames[0], frames[1])


def test_bad_audio_is_refused(model: PhotoLipSync) -> None:
    with pytest.raises(InvalidInputError):
        model.render(0, np.zeros((2, 960), np.float32))


def test_mouth_drive_features() -> None:
    params = MouthDriveParams()
    assert mouth_drive(np.zeros(1920, np.float32), SR, params).opening == 0.0
    assert mouth_drive(tone(params.floor_db - 5), SR, params).opening == 0.0
    levels = [mouth_drive(tone(db), SR, params).opening for db in (-45, -35, -25, -10)]
    assert levels == sorted(levels) and levels[0] > 0 and levels[-1] == 1.0
    dark = mouth_drive(tone(-20, f0=110), SR, params)
    t = np.arange(1920) / SR
    bright = (np.sin(2 * np.pi * 2500 * t) * 0.1).astype(np.float32)
    assert mouth_drive(bright, SR, params).width > dark.width
    # half a window of sound opens the mouth partway: the ramp that keeps onsets smooth
    onset = tone(-14)
    onset[:960] = 0
    assert 0.2 < mouth_drive(onset, SR, params).opening < 0.8


def test_rms_envelope() -> None:
    x = np.r_[np.zeros(640), np.full(640, 0.5), np.zeros(640)].astype(np.float32)
    env = rms_envelope(x, hop=640, window=640)
    assert np.allclose(env, [0.0, 0.5, 0.0])
