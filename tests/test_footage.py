"""The footage stage (livedh/avatar/footage.py) and its use by the neural lip-sync model: plain picks
are writable copies, a transition blend warps both frames to the in-between position (not a double
exposure), and the face box and mask are interpolated, so the mouth is cut and pasted there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import cv2
import numpy as np
import pytest
from skimage import data

from livedh.avatar.footage import FootageFrames, lerp_box
from livedh.avatar.motion import FootagePick
from livedh.avatar.video import VideoAvatar
from livedh.errors import InvalidInputError
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.generator import FaceGenerator
from livedh.lipsync.neural import NeuralLipSync

SIZE = 256
#: horizontal shift of each fake frame: frame 1 is frame 0 moved 8 px right
SHIFTS = [0, 8, 16, 3]


def shifted(image: np.ndarray, dx: float) -> np.ndarray:
    m = np.array([[1, 0, dx], [0, 1, 0]], np.float32)
    moved = cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(moved)


class FakeAvatar:
    """What FootageFrames and NeuralLipSync read of a VideoAvatar, over a textured photo that
    shifts sideways from frame to frame (its face box shifts with it)."""

    def __init__(self, masks: bool = True) -> None:
        photo = cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        self.image = np.ascontiguousarray(photo)
        self.frames = [shifted(self.image, dx) for dx in SHIFTS]
        for f in self.frames:
            f.flags.writeable = False
        self.boxes = [(80 + dx, 20, 176 + dx, 116) for dx in SHIFTS]
        self.masks = [np.full((SIZE, SIZE), 40 * i, np.uint8) for i in range(len(SHIFTS))] if masks else None
        self.manifest = SimpleNamespace(fps=25, width=SIZE, height=SIZE, mouth_box=(100, 80, 160, 110))
        self.frame_count = len(SHIFTS)
        self.motion = None

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i]

    def crop_box(self, i: int) -> tuple[int, int, int, int]:
        return self.boxes[i]

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks[i]


def footage(masks: bool = True) -> tuple[FakeAvatar, FootageFrames]:
    avatar = FakeAvatar(masks)
    return avatar, FootageFrames(cast(VideoAvatar, avatar))


def centre_error(a: np.ndarray, b: np.ndarray) -> float:
    m = 24  # away from the replicated borders
    return float(np.abs(a[m:-m, m:-m].astype(np.int16) - b[m:-m, m:-m]).mean())


def test_plain_pick_is_a_writable_copy_with_its_box_and_mask() -> None:
    avatar, ff = footage()
    base = ff.base(FootagePick(2))
    assert np.array_equal(base.image, avatar.frames[2]) and base.image.flags.writeable
    assert not np.shares_memory(base.image, avatar.frames[2])
    assert base.box == avatar.boxes[2] and base.mask is avatar.masks[2]  # type: ignore[index]
    assert ff.base(FootagePick(2, blend_from=1, alpha=1.0)).box == avatar.boxes[2]


def test_blend_warps_to_the_in_between_position() -> None:
    avatar, ff = footage()
    for alpha in (0.25, 0.5, 0.75):
        base = ff.base(FootagePick(1, blend_from=0, alpha=alpha))
        truth = shifted(avatar.image, 8 * alpha)
        fade = cv2.addWeighted(avatar.frames[0], 1 - alpha, avatar.frames[1], alpha, 0.0)
        assert base.image.dtype == np.uint8 and base.image.shape == (SIZE, SIZE, 3)
        # a plain cross-fade is a double exposure; the warped blend is (nearly) the moved image
        assert centre_error(base.image, truth) < 0.4 * centre_error(fade, truth)


def test_blend_interpolates_box_and_mask() -> None:
    _, ff = footage()
    base = ff.base(FootagePick(2, blend_from=0, alpha=0.25))
    assert base.box == (84, 20, 180, 116)  # 16 px apart: a quarter of the way
    assert base.mask is not None and int(base.mask[5, 5]) == 20  # masks 0 and 80
    assert footage(masks=False)[1].base(FootagePick(2, blend_from=0, alpha=0.5)).mask is None


def test_lerp_box_rounds_to_whole_pixels() -> None:
    assert lerp_box((0, 0, 10, 10), (3, 5, 13, 15), 0.5) == (2, 2, 12, 12)
    assert lerp_box((0, 0, 10, 10), (3, 5, 13, 15), 0.0) == (0, 0, 10, 10)


def test_picks_outside_the_footage_are_refused() -> None:
    _, ff = footage()
    for pick in (FootagePick(4), FootagePick(-1), FootagePick(1, blend_from=9, alpha=0.5)):
        with pytest.raises(InvalidInputError):
            ff.base(pick)


class RecordingGenerator(FaceGenerator):
    size = 32
    audio_window = 640
    audio_lookahead = 0

    def __init__(self) -> None:
        self.crops: list[np.ndarray] = []

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.crops.extend(crops.copy())
        return np.zeros_like(crops)  # black mouth: shows where it was pasted


def loud(n: int) -> np.ndarray:
    return (0.3 * np.sin(np.arange(n) * 0.3)).astype(np.float32)


def test_neural_model_cuts_and_pastes_a_blended_frame_at_the_interpolated_box() -> None:
    avatar = FakeAvatar(masks=False)
    gen = RecordingGenerator()
    model = NeuralLipSync(cast(VideoAvatar, avatar), gen)
    assert model.motion is None
    pick = FootagePick(2, blend_from=0, alpha=0.25)
    base = model.footage.base(pick)
    assert base.box == (84, 20, 180, 116)
    out = model.infer([LipSyncRequest(0, loud(640), footage=pick)])[0]
    assert len(gen.crops) == 1
    assert np.array_equal(gen.crops[0], model.compositor.cut(base.image, base.box))
    changed = np.abs(out.astype(np.int16) - base.image).max(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert xs.min() >= base.box[0] and xs.max() < base.box[2] and ys.max() < base.box[3]
    assert base.box not in avatar.boxes  # no footage frame's own box


def test_neural_model_without_a_pick_plays_the_plain_loop() -> None:
    avatar = FakeAvatar()
    model = NeuralLipSync(cast(VideoAvatar, avatar), RecordingGenerator())
    silent = np.zeros(640, np.float32)
    frames = model.infer([LipSyncRequest(i, silent) for i in range(7)])
    expected = [0, 1, 2, 3, 2, 1, 0]
    assert all(np.array_equal(f, avatar.frames[k]) for f, k in zip(frames, expected, strict=True))
    picked = model.infer([LipSyncRequest(0, silent, footage=FootagePick(3))])[0]
    assert np.array_equal(picked, avatar.frames[3])


def test_model_exposes_the_avatars_motion_library() -> None:
    avatar = FakeAvatar()
    marker: Any = object()
    avatar.motion = marker
    assert NeuralLipSync(cast(VideoAvatar, avatar), RecordingGenerator()).motion is marker
