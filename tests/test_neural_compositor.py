"""Video avatars and the neural lip-sync compositor, with fake generators (no network weights):
crops land on the face, the loop ping-pongs, one generator call per batch, silence is free and
fades softly, the blend has no seam or colour step, boxes are smoothed, bad folders fail clearly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

from livedh.avatar import landmarks as lm
from livedh.avatar.compositor import BlendParams, Compositor, band_mask
from livedh.avatar.format import frame_file, load_manifest, mask_file
from livedh.avatar.video import (
    VideoAvatar,
    VideoBuildParams,
    face_crop,
    write_video_avatar,
)
from livedh.errors import InvalidInputError, LiveDHError, NotFoundError
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.generator import FaceGenerator
from livedh.lipsync.neural import NeuralLipSync, NeuralParams, ping_pong

N_FRAMES = 30
MARKER = np.array([0, 255, 0], np.uint8)


# --- fixtures and fakes ------------------------------------------------------------------------


def shifts(n: int) -> list[tuple[int, int]]:
    """Whole-pixel head motion per frame: a slow side-to-side sway and a downward drift."""
    return [(round(4 * np.sin(2 * np.pi * i / n)), i // 5) for i in range(n)]


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    h, w = image.shape[:2]
    return np.asarray(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    image = np.ascontiguousarray(data.astronaut())
    points = lm.detect_landmarks(image)
    assert points is not None
    return image, points


@pytest.fixture(scope="module")
def clip(astronaut: tuple[np.ndarray, np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    image, points = astronaut
    moves = shifts(N_FRAMES)
    frames = [shifted(image, dx, dy) for dx, dy in moves]
    return frames, np.stack([points + np.array(m, np.float32) for m in moves])


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory, clip: tuple[list[np.ndarray], np.ndarray]) -> Path:
    out = tmp_path_factory.mktemp("avatars") / "clip"
    frames, points = clip
    write_video_avatar(out, frames, 25, "clip", points, progress=False)
    return out


@pytest.fixture(scope="module")
def avatar(avatar_dir: Path) -> VideoAvatar:
    return VideoAvatar.load(avatar_dir)


@pytest.fixture
def copy(avatar_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "clip"
    shutil.copytree(avatar_dir, dst)
    return dst


class FakeGenerator(FaceGenerator):
    """Returns the input crop (optionally tinted), with a MARKER square painted in the middle of
    the mouth band; records every call."""

    size = 96
    audio_window = 3200
    audio_lookahead = 1280
    mouth_band = (0.5, 1.0)

    def __init__(self, tint: tuple[int, int, int] = (0, 0, 0), marker: bool = True) -> None:
        self.tint = np.array(tint, np.int16)
        self.marker = marker
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.closed = 0

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.calls.append((crops.copy(), references.copy(), audio.copy()))
        out = np.clip(crops.astype(np.int16) + self.tint, 0, 255).astype(np.uint8)
        if self.marker:
            s = self.size
            out[:, int(0.68 * s) : int(0.82 * s), int(0.35 * s) : int(0.65 * s)] = MARKER
        return out

    def close(self) -> None:
        self.closed += 1


def speech(n: int, seed: int = 0, level_db: float = -20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8)) + 0.2 * rng.standard_normal(n)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (level_db / 20)).astype(np.float32)


def windows(model: NeuralLipSync, audio: np.ndarray, frames: int) -> list[np.ndarray]:
    """The window a session passes for each frame: audio_window samples ending audio_lookahead
    after the frame's end, zeros outside the audio."""
    hop = 16000 // model.fps
    out = []
    for i in range(frames):
        end = (i + 1) * hop + model.audio_lookahead
        start = end - model.audio_window
        w = np.zeros(model.audio_window, np.float32)
        s0, e0 = max(start, 0), min(end, len(audio))
        if e0 > s0:
            w[s0 - start : e0 - start] = audio[s0:e0]
        out.append(w)
    return out


def changed(a: np.ndarray, b: np.ndarray, threshold: int = 40) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b).max(axis=2) > threshold


# --- the avatar folder -------------------------------------------------------------------------


def test_builder_writes_the_documented_layout(avatar_dir: Path) -> None:
    manifest = load_manifest(avatar_dir)
    assert (manifest.kind, manifest.model, manifest.frame_count, manifest.fps) == ("video", "wav2lip", 30, 25)
    assert (manifest.width, manifest.height) == (512, 512) and manifest.builder == "video/1"
    for i in range(N_FRAMES):
        assert (avatar_dir / frame_file(i)).is_file() and (avatar_dir / mask_file(i)).is_file()
    assert not (avatar_dir / frame_file(N_FRAMES)).exists()
    for name in ("landmarks.npy", "boxes.npy", "preview.jpg", "summary.json"):
        assert (avatar_dir / name).is_file()
    summary = json.loads((avatar_dir / "summary.json").read_text())
    assert summary["frames_without_face"] == [] and summary["landmarks"] == "given"
    # no build leftovers next to it
    assert [p.name for p in avatar_dir.parent.iterdir()] == ["clip"]


def test_mouth_box_covers_the_mouth_in_every_frame(
    avatar: VideoAvatar, clip: tuple[list[np.ndarray], np.ndarray]
) -> None:
    x0, y0, x1, y1 = avatar.manifest.mouth_box
    for points in clip[1]:
        lips = points[list(lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER)]
        assert (lips >= (x0, y0)).all() and (lips < (x1, y1)).all()
    oval = clip[1][0][list(lm.FACE_OVAL)]
    assert (x1 - x0) < 0.8 * np.ptp(oval[:, 0])  # a mouth's box, not the face's


@pytest.mark.parametrize("preload", [True, False])
def test_loaded_frames_are_what_was_written(
    avatar_dir: Path, clip: tuple[list[np.ndarray], np.ndarray], preload: bool
) -> None:
    loaded = VideoAvatar.load(avatar_dir, preload=preload)
    frames, points = clip
    assert loaded.frame_count == N_FRAMES and loaded.has_masks
    for i in (0, 13, N_FRAMES - 1):
        frame = loaded.frame(i)
        assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(np.int16) - frames[i]).mean() < 3  # JPEG, quality 95
        mask = loaded.mask(i)
        assert mask is not None and mask.shape == (512, 512) and mask.dtype == np.uint8
    assert np.array_equal(loaded.landmarks, points)
    assert loaded.boxes.shape == (N_FRAMES, 4) and loaded.boxes.dtype == np.float32
    with pytest.raises(IndexError):
        loaded.frame(N_FRAMES)
    if preload:
        with pytest.raises(ValueError):  # shared by every session: read-only
            loaded.frame(0)[0, 0] = 0
    eager = VideoAvatar.load(avatar_dir, preload=True)
    assert np.array_equal(loaded.frame(7), eager.frame(7))


def test_boxes_are_square_inside_the_frame_and_follow_the_face(
    avatar: VideoAvatar, clip: tuple[list[np.ndarray], np.ndarray]
) -> None:
    b = avatar.boxes
    centres = np.stack([b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1) / 2
    for i, points in enumerate(clip[1]):
        x0, y0, x1, y1 = avatar.boxes[i]
        assert abs((x1 - x0) - (y1 - y0)) < 1e-3
        assert 0 <= x0 and 0 <= y0 and x1 <= avatar.width and y1 <= avatar.height
        # the whole mouth and chin inside, the mouth in the lower half Wav2Lip regenerates
        lips = points[list(lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER)]
        assert (lips >= (x0, y0)).all() and (lips < (x1, y1)).all()
        assert y0 < points[lm.CHIN, 1] < y1
        assert lips[:, 1].min() > (y0 + y1) / 2
        # it moves with the head: the unsmoothed crop's centre, up to the sway's peaks that the
        # smoothing rounds off (the clip's ends are mirrored, as the loop plays them: not checked)
        if 5 <= i < N_FRAMES - 5:
            raw = face_crop(points, "wav2lip")[:2]
            assert np.abs(centres[i] - raw).max() < 1.2


def test_boxes_are_smoothed_over_time(
    tmp_path: Path, astronaut: tuple[np.ndarray, np.ndarray]
) -> None:
    image, points = astronaut
    n = 60
    rng = np.random.default_rng(3)
    drift = np.stack([np.linspace(0, 12, n), np.linspace(0, -6, n)], axis=1)  # true motion
    truth = points[None] + drift[:, None]
    # FaceMesh-like jitter: the whole face wobbles by ~2 px, each point by ~1 px more
    jitter = rng.normal(0, 2.0, (n, 1, 2)) + rng.normal(0, 1.0, (n, lm.NUM_LANDMARKS, 2))
    noisy = (truth + jitter).astype(np.float32)
    write_video_avatar(
        tmp_path / "j", [image] * n, 25, "j", noisy, params=VideoBuildParams(masks=False), progress=False
    )
    boxes = VideoAvatar.load(tmp_path / "j").boxes.astype(np.float64)

    def track(b: np.ndarray) -> np.ndarray:  # centre x, centre y, side
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0]], 1)

    raw = np.array([face_crop(p, "wav2lip") for p in noisy])
    ideal = np.array([face_crop(p, "wav2lip") for p in truth])
    got = track(boxes)
    inner = slice(5, n - 5)
    # steadier from frame to frame, and closer to the true motion, than the raw boxes
    assert np.std(np.diff(got[:, :2], axis=0)) < 0.35 * np.std(np.diff(raw[:, :2], axis=0))
    assert np.abs(got[inner] - ideal[inner]).mean() < 0.5 * np.abs(raw[inner] - ideal[inner]).mean()
    # and no lag: the drift is followed, not trailed
    assert abs(np.mean(got[inner, 0] - ideal[inner, 0])) < 0.5


def test_builder_finds_landmarks_with_facemesh_and_fills_faceless_frames(
    tmp_path: Path, astronaut: tuple[np.ndarray, np.ndarray]
) -> None:
    image, _ = astronaut
    moves = [(2 * i, 0) for i in range(8)]
    frames = [shifted(image, dx, dy) for dx, dy in moves]
    frames[4] = np.full_like(image, 128)  # a cut to a blank frame: no face
    manifest = write_video_avatar(tmp_path / "fm", frames, 25, "fm", progress=False)
    loaded = VideoAvatar.load(tmp_path / "fm")
    summary = json.loads((tmp_path / "fm" / "summary.json").read_text())
    assert summary["frames_without_face"] == [4] and summary["landmarks"] == "FaceMesh"
    pts = loaded.landmarks
    # the face moved 2 px per frame; the faceless frame lies halfway between its neighbours
    nose = pts[:, lm.SUBNASALE]
    assert np.abs(np.diff(nose[[0, 1, 2, 3, 5, 6, 7], 0])[[0, 1, 2, 4, 5]] - 2).max() < 1.5
    assert np.allclose(pts[4], (pts[3] + pts[5]) / 2, atol=1e-3)
    x0, _, x1, _ = manifest.mouth_box
    assert x0 <= nose[:, 0].min() and nose[:, 0].max() < x1

    with pytest.raises(InvalidInputError, match="no face found"):
        write_video_avatar(tmp_path / "none", [np.full_like(image, 128)] * 3, 25, "none", progress=False)
    assert not (tmp_path / "none").exists()


def test_builder_rejects_bad_input(tmp_path: Path, clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    frames, points = clip
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(frames=frames[:3], landmarks=points[:3], model="photo"), "neural model"),
        (dict(frames=[], landmarks=None), "at least one frame"),
        (dict(frames=[frames[0], frames[1][:256]], landmarks=points[:2]), "frame 1 is 512x256"),
        (dict(frames=frames[:3], landmarks=points[:2]), "landmarks must be"),
        (dict(frames=frames[:3], landmarks=points[:3], name="../up"), "name"),
        (dict(frames=frames[:3], landmarks=points[:3], fps=0), "fps"),
    ]
    for kwargs, message in cases:
        args = {"fps": 25, "name": "bad", "model": "wav2lip", **kwargs}
        with pytest.raises(InvalidInputError, match=message):
            write_video_avatar(tmp_path / "bad", progress=False, **args)
        assert not (tmp_path / "bad").exists()


def _corrupt_missing_frame(d: Path) -> str:
    (d / frame_file(7)).unlink()
    return "000007.jpg is missing"


def _corrupt_unreadable_frame(d: Path) -> str:
    (d / frame_file(0)).write_bytes(b"not a jpeg")
    return "000000.jpg: not a readable image"


def _corrupt_frame_size(d: Path) -> str:
    cv2.imwrite(str(d / frame_file(0)), np.zeros((100, 120, 3), np.uint8))
    return "000000.jpg: 120x100 does not match"


def _corrupt_landmarks(d: Path) -> str:
    np.save(d / "landmarks.npy", np.zeros((N_FRAMES, 468, 2), np.float32))
    return "landmarks.npy: expected shape"


def _corrupt_boxes(d: Path) -> str:
    boxes = np.load(d / "boxes.npy")
    boxes[3] = [400, 400, 700, 700]
    np.save(d / "boxes.npy", boxes)
    return "boxes.npy: box 3"


def _missing_boxes(d: Path) -> str:
    (d / "boxes.npy").unlink()
    return "boxes.npy is missing"


def _missing_mask(d: Path) -> str:
    (d / mask_file(3)).unlink()
    return "000003.png is missing"


def _too_few_frames(d: Path) -> str:
    manifest = json.loads((d / "avatar.json").read_text())
    (d / "avatar.json").write_text(json.dumps({**manifest, "frame_count": N_FRAMES + 1}))
    return f"{N_FRAMES:06d}.jpg is missing"


def _photo_kind(d: Path) -> str:
    manifest = json.loads((d / "avatar.json").read_text())
    (d / "avatar.json").write_text(json.dumps({**manifest, "kind": "photo"}))
    cv2.imwrite(str(d / "image.png"), np.zeros((512, 512, 3), np.uint8))
    np.save(d / "landmarks.npy", np.zeros((478, 2), np.float32))
    return "kind is 'photo', not 'video'"


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_missing_frame,
        _corrupt_unreadable_frame,
        _corrupt_frame_size,
        _corrupt_landmarks,
        _corrupt_boxes,
        _missing_boxes,
        _missing_mask,
        _too_few_frames,
        _photo_kind,
    ],
)
def test_corrupt_avatar_folders_raise_errors_naming_the_file(
    copy: Path, corrupt: Callable[[Path], str]
) -> None:
    message = corrupt(copy)
    for preload in (True, False):
        with pytest.raises(InvalidInputError, match=message):
            VideoAvatar.load(copy, preload=preload)


def test_lazy_avatar_reports_a_corrupt_frame_when_it_reaches_it(copy: Path) -> None:
    (copy / frame_file(9)).write_bytes(b"\xff\xd8 truncated")
    lazy = VideoAvatar.load(copy, preload=False)  # only frame 0 is decoded at load
    lazy.frame(8)
    with pytest.raises(InvalidInputError, match=r"000009\.jpg: not a readable image"):
        lazy.frame(9)


def test_missing_avatar_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        VideoAvatar.load(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(NotFoundError, match=r"avatar\.json"):
        VideoAvatar.load(tmp_path / "half")


# --- the model ---------------------------------------------------------------------------------


def test_ping_pong_loop() -> None:
    assert [ping_pong(i, 4) for i in range(14)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
    assert [ping_pong(i, 1) for i in range(3)] == [0, 0, 0]
    assert [ping_pong(i, 2) for i in range(4)] == [0, 1, 0, 1]
    # every step moves to a neighbouring frame: no jump anywhere, loop point included
    steps = np.diff([ping_pong(i, N_FRAMES) for i in range(-100, 200)])
    assert set(np.abs(steps).tolist()) == {1}


def test_model_takes_its_audio_window_from_the_generator_and_loops_the_footage(
    avatar: VideoAvatar,
) -> None:
    gen = FakeGenerator()
    gen.audio_window, gen.audio_lookahead = 1600, 640
    model = NeuralLipSync(avatar, gen)
    assert (model.audio_window, model.audio_lookahead) == (1600, 640)
    assert (model.fps, model.width, model.height) == (25, 512, 512)
    assert model.mouth_box == avatar.manifest.mouth_box
    assert [model.footage_index(i) for i in (0, 28, 29, 30, 31, 57, 58, 59)] == [0, 28, 29, 28, 27, 1, 0, 1]
    silent = np.zeros(1600, np.float32)
    frames = model.infer([LipSyncRequest(i, silent) for i in range(70)])
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, avatar.frame(ping_pong(i, N_FRAMES)))
    model.close()
    model.close()
    assert gen.closed == 1


def test_generated_mouth_lands_in_each_frames_face_box(avatar: VideoAvatar) -> None:
    gen = FakeGenerator()
    model = NeuralLipSync(avatar, gen)
    voice = speech(model.audio_window)
    indices = [0, 7, 15, 29, 40]  # 40 plays footage frame 18 backwards
    frames = model.infer([LipSyncRequest(i, voice) for i in indices])
    assert model.mouth_box is not None
    mx0, my0, mx1, my1 = model.mouth_box
    for i, frame in zip(indices, frames, strict=True):
        k = ping_pong(i, N_FRAMES)
        diff = changed(frame, avatar.frame(k))
        ys, xs = np.nonzero(diff)
        assert len(ys) > 200, "the marker is missing"
        x0, y0, x1, y1 = avatar.crop_box(k)
        # everything that changed is inside this frame's face box, in its lower half ...
        assert x0 <= xs.min() and xs.max() < x1 and (y0 + y1) / 2 <= ys.min() and ys.max() < y1
        # ... where the mouth is: the marker's middle is in the clip's mouth box
        assert mx0 <= xs.mean() < mx1 and my0 <= ys.mean() < my1
        marker = frame[diff].astype(np.int16)
        assert np.abs(marker - MARKER).mean() < 40
    # frames 7 and 29 differ by the head's shift; the marker follows it
    a, b = (
        np.nonzero(changed(f, avatar.frame(ping_pong(i, N_FRAMES))))
        for i, f in ((7, frames[1]), (29, frames[3]))
    )
    moves = shifts(N_FRAMES)
    assert abs((b[1].mean() - a[1].mean()) - (moves[29][0] - moves[7][0])) < 1.5
    assert abs((b[0].mean() - a[0].mean()) - (moves[29][1] - moves[7][1])) < 1.5


def test_one_generator_call_per_batch_and_silence_skips_the_network(avatar: VideoAvatar) -> None:
    gen = FakeGenerator()
    model = NeuralLipSync(avatar, gen)
    silent = np.zeros(model.audio_window, np.float32)
    hum = (np.random.default_rng(1).standard_normal(model.audio_window) * 10 ** (-70 / 20)).astype(np.float32)
    talking = {1: speech(model.audio_window, 1), 2: speech(model.audio_window, 2),
               5: speech(model.audio_window, 5), 8: speech(model.audio_window, 8)}  # fmt: skip
    batch = [
        LipSyncRequest(10 + j, talking.get(j, hum if j % 2 else silent), seed=j) for j in range(10)
    ]
    frames = model.infer(batch)
    assert len(gen.calls) == 1
    crops, refs, audio = gen.calls[0]
    assert crops.shape == (4, 96, 96, 3) and crops.dtype == np.uint8
    assert np.array_equal(refs, crops)  # the reference is the frame's own face
    assert audio.shape == (4, model.audio_window) and audio.dtype == np.float32
    assert all(np.array_equal(audio[n], talking[j]) for n, j in enumerate(sorted(talking)))
    for j, frame in enumerate(frames):
        footage = avatar.frame(ping_pong(10 + j, N_FRAMES))
        # silence and noise under the floor give exactly the footage; speech does not
        assert np.array_equal(frame, footage) == (j not in talking)
        assert frame.flags.writeable and frame is not footage

    model.infer([LipSyncRequest(i, silent) for i in range(8)])
    assert len(gen.calls) == 1  # an all-silent batch never reaches the network


def test_speech_fades_the_generated_mouth_in_and_out(avatar: VideoAvatar) -> None:
    gen = FakeGenerator()
    model = NeuralLipSync(avatar, gen)
    hop = 640
    audio = np.zeros(40 * hop, np.float32)
    audio[10 * hop : 25 * hop] = speech(15 * hop)
    wins = windows(model, audio, 40)
    weights = np.array([model.speech_weight(w) for w in wins])
    assert weights[:7].max() == 0.0 and weights[-6:].max() == 0.0  # silence: network off
    assert np.allclose(weights[14:22], 1.0)  # speech: fully on
    rise, fall = weights[7:15], weights[21:34]
    assert (np.diff(rise) >= 0).all() and (np.diff(fall) <= 0).all()
    # the fade takes several frames, none of them a jump
    assert ((0 < rise) & (rise < 1)).sum() >= 2 and ((0 < fall) & (fall < 1)).sum() >= 2
    assert np.abs(np.diff(weights)).max() < 0.5

    # and so does the picture: the marker's strength follows the weight
    frames = model.infer([LipSyncRequest(i, w) for i, w in enumerate(wins)])
    strength = []
    for i, frame in enumerate(frames):
        footage = avatar.frame(ping_pong(i, N_FRAMES))
        x0, y0, x1, y1 = avatar.crop_box(ping_pong(i, N_FRAMES))
        region = (slice(y0 + int(0.72 * (y1 - y0)), y0 + int(0.78 * (y1 - y0))),
                  slice(x0 + int(0.45 * (x1 - x0)), x0 + int(0.55 * (x1 - x0))))  # fmt: skip
        green = frame[region][..., 1].astype(np.float32) - footage[region][..., 1]
        strength.append(green.mean() / (255.0 - footage[region][..., 1].mean()))
    assert np.allclose(strength, weights, atol=0.08)


def test_bad_audio_and_bad_generator_output_raise(avatar: VideoAvatar) -> None:
    model = NeuralLipSync(avatar, FakeGenerator())
    with pytest.raises(InvalidInputError, match="audio window"):
        model.infer([LipSyncRequest(0, np.zeros(100, np.float32))])

    class Broken(FakeGenerator):
        def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
            return np.zeros((len(crops), 64, 64, 3), np.uint8)

    broken = NeuralLipSync(avatar, Broken())
    with pytest.raises(LiveDHError, match=r"Broken\.generate returned"):
        broken.infer([LipSyncRequest(0, speech(broken.audio_window))])


def test_from_dir_builds_the_model(avatar_dir: Path) -> None:
    model = NeuralLipSync.from_dir(avatar_dir, FakeGenerator(), preload=False)
    assert model.avatar.frame_count == N_FRAMES and not model.avatar.preload
    out = model.infer([LipSyncRequest(3, speech(model.audio_window))])
    assert changed(out[0], model.avatar.frame(3)).sum() > 200


# --- the blend ---------------------------------------------------------------------------------


def _face(avatar: VideoAvatar) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Frame 0 in levels 40..218, so the fake colour casts below never clip: a clipped cast
    cannot be undone and would blur what the tests measure."""
    return (40 + 0.7 * avatar.frame(0)).astype(np.uint8), avatar.crop_box(0)


def _blend(
    frame: np.ndarray,
    box: tuple[int, int, int, int],
    generated_from_crop: Callable[[np.ndarray], np.ndarray],
    params: BlendParams,
    region_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(blended frame, the band mask at frame size)."""
    comp = Compositor(96, (0.5, 1.0), params)
    crop = comp.cut(frame, box)
    generated = generated_from_crop(crop)
    out = frame.copy()
    comp.paste(out, box, generated, crop, region_mask=region_mask)
    x0, y0, x1, y1 = box
    alpha = np.zeros(frame.shape[:2], np.float32)
    alpha[y0:y1, x0:x1] = cv2.resize(comp.mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out, alpha


def _cast(crop: np.ndarray) -> np.ndarray:
    """A network's colour cast: colder, and brighter to the right (a lighting gradient)."""
    ramp = np.linspace(-8, 8, crop.shape[1])[None, :, None]
    out = crop.astype(np.float32) + np.array([-20, -6, 12]) + ramp
    return np.clip(out, 0, 255).astype(np.uint8)


def _seam(out: np.ndarray, frame: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """(largest gradient of the blend's change where the mask fades, mean colour step between the
    blended region and the footage). The change is low-passed first: a 96 px crop blown up to the
    box loses fine detail everywhere, a seam is a step along a line."""
    d = out.astype(np.float32) - frame
    smooth = cv2.GaussianBlur(d, (0, 0), 2.0)
    grad = np.maximum(
        np.abs(np.diff(smooth, axis=0))[:, :-1], np.abs(np.diff(smooth, axis=1))[:-1]
    ).max(axis=2)
    edge = ((alpha > 0.0) & (alpha < 1.0))[:-1, :-1]
    core = alpha > 0.99
    return float(grad[edge].max()), float(np.abs(d[core].mean(axis=0)).max())


def test_blend_has_no_seam_and_no_colour_step(avatar: VideoAvatar) -> None:
    frame, box = _face(avatar)
    out, alpha = _blend(frame, box, _cast, BlendParams())
    gradient, step = _seam(out, frame, alpha)
    assert gradient < 1.5 and step < 2.0
    # only the crop's band changed
    x0, y0, x1, y1 = box
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside]) and np.array_equal(out[alpha == 0], frame[alpha == 0])

    # the measures do see the defects the blend removes: a hard-edged, uncorrected paste ...
    hard, hard_alpha = _blend(frame, box, _cast, BlendParams(feather=0.0, colour_match=False))
    hard_gradient, hard_step = _seam(hard, frame, cv2.GaussianBlur(hard_alpha, (7, 7), 0))
    assert hard_gradient > 4.0 and hard_step > 15
    # ... and a feathered one without colour matching keeps the cast
    soft, soft_alpha = _blend(frame, box, _cast, BlendParams(colour_match=False))
    assert _seam(soft, frame, soft_alpha)[1] > 15


def test_colour_matching_keeps_the_generated_mouth(avatar: VideoAvatar) -> None:
    frame, box = _face(avatar)

    def mouth(crop: np.ndarray) -> np.ndarray:
        out = _cast(crop)
        out[66:80, 34:62] = (40, 10, 15)  # an open mouth: dark, unlike anything at the seam
        return out

    out, _ = _blend(frame, box, mouth, BlendParams())
    x0, y0, x1, _ = box
    s = (x1 - x0) / 96
    cy, cx = y0 + int(73 * s), x0 + int(48 * s)
    inner = out[cy - 3 : cy + 3, cx - 6 : cx + 6].astype(np.float32).mean(axis=(0, 1))
    # the cast is removed from the mouth as well, its darkness is kept
    assert np.abs(inner - (40 + 20, 10 + 6, 15 - 12)).max() < 12
    assert frame[cy - 3 : cy + 3, cx - 6 : cx + 6].mean() - inner.mean() > 80


def test_avatar_masks_limit_the_blend(avatar: VideoAvatar) -> None:
    frame, box = _face(avatar)
    mask = avatar.mask(0)
    assert mask is not None

    def paint(crop: np.ndarray) -> np.ndarray:
        return np.full_like(crop, 255)  # changes every pixel it is allowed to

    params = BlendParams(colour_match=False)
    with_mask, alpha = _blend(frame, box, paint, params, region_mask=mask)
    without, _ = _blend(frame, box, paint, params)
    # the band reaches past the jaw line; the mask stops it there ...
    beyond = (mask == 0) & (alpha > 0.1)
    assert beyond.sum() > 100
    assert np.array_equal(with_mask[beyond], frame[beyond])
    assert (np.abs(without.astype(np.int16) - frame).max(axis=2)[beyond] > 2).all()
    # ... and fades it in: no pixel changes more than mask x band allow
    allowed = alpha * (mask / 255.0) * (255 - frame.min(axis=2)) + 2
    assert (np.abs(with_mask.astype(np.int16) - frame).max(axis=2) <= allowed).all()
    face = (mask == 255) & (alpha > 0.99)
    assert face.sum() > 500 and changed(with_mask, frame)[face].all()

    # the model blends through the avatar's own masks
    class White(FakeGenerator):
        def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
            return np.full_like(crops, 255)

    model = NeuralLipSync(avatar, White(), NeuralParams(blend=params))
    for i in (0, 11):
        out = model.infer([LipSyncRequest(i, speech(model.audio_window))])[0]
        frame_mask = avatar.mask(i)
        assert frame_mask is not None
        moved = np.abs(out.astype(np.int16) - avatar.frame(i)).max(axis=2) > 0
        assert moved.sum() > 500 and not moved[frame_mask == 0].any()


def test_band_mask_fades_at_every_edge() -> None:
    m = band_mask(96, (0.5, 1.0), 0.1)
    assert m.shape == (96, 96) and m.dtype == np.float32
    assert m[:48].max() == 0.0  # nothing above the band
    assert m[72, 48] == 1.0
    # borders of the band and of the crop are (almost) transparent
    assert m[48, 48] < 0.05 and m[95, 48] < 0.05 and m[72, 0] < 0.05 and m[72, 95] < 0.05
    assert np.array_equal(band_mask(96, (0.5, 1.0), 0.0)[48:, :], np.ones((48, 96), np.float32))
    with pytest.raises(InvalidInputError):
        band_mask(96, (0.6, 0.4), 0.1)

