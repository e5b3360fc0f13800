"""Upper-body pose keypoints per footage frame: a thin wrapper over mediapipe Pose.

The motion graph compares frames by body pose, so every footage frame gets the upper-body subset
of Pose's 33 landmarks as ``(K, 2)`` float32 frame pixels plus a ``(K,)`` visibility mask.
Legacy ``mediapipe.solutions.pose`` with ``model_complexity=1`` is used because its two models
(pose detector + "full" landmarker) ship inside the wheel: no download, works offline. The lite
and heavy models (complexity 0 and 2) and the tasks API need model files the wheel lacks.

A keypoint is visible when the model's visibility score is at least ``min_visibility`` and it
lies inside the frame: Pose extrapolates limbs beyond the frame edge with high confidence, and a
hand that left the frame must not count as seen there. Invisible keypoints keep the model's
estimate (useful as a hint, never as a measurement); a frame with no person gives zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from livedh.avatar.landmarks import as_rgb_uint8, import_mediapipe
from livedh.errors import ModelFileError

#: Pose landmark indices kept, in this order (names are the subject's sides). Hips and legs are
#: left out: talking-head footage rarely shows them and they would only add noise.
UPPER_BODY = (
    0,  # nose
    1, 2, 3,  # left eye inner, centre, outer
    4, 5, 6,  # right eye inner, centre, outer
    7, 8,  # left ear, right ear
    9, 10,  # mouth left, mouth right
    11, 12,  # left shoulder, right shoulder
    13, 14,  # left elbow, right elbow
    15, 16,  # left wrist, right wrist
    17, 18,  # left pinky, right pinky
    19, 20,  # left index, right index
    21, 22,  # left thumb, right thumb
)  # fmt: skip
NUM_KEYPOINTS = len(UPPER_BODY)

# Positions in the keypoint arrays (not Pose indices), for callers that need named points.
NOSE = 0
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_ELBOW, RIGHT_ELBOW = 13, 14
LEFT_WRIST, RIGHT_WRIST = 15, 16
HAND_POINTS = (15, 16, 17, 18, 19, 20, 21, 22)

#: the wheel's files that model_complexity=1 loads, relative to the mediapipe package
POSE_MODEL_FILES = (
    "modules/pose_detection/pose_detection.tflite",
    "modules/pose_landmark/pose_landmark_full.tflite",
)


@dataclass(frozen=True)
class PoseResult:
    """One frame's upper-body pose: ``keypoints`` (K, 2) float32 pixels, ``visible`` (K,) bool."""

    keypoints: np.ndarray
    visible: np.ndarray

    @classmethod
    def empty(cls) -> PoseResult:
        return cls(np.zeros((NUM_KEYPOINTS, 2), np.float32), np.zeros(NUM_KEYPOINTS, dtype=bool))


def _import_mediapipe() -> Any:
    mp = import_mediapipe()
    package = Path(mp.__file__).parent
    for rel in POSE_MODEL_FILES:
        if not (package / rel).is_file():
            # relative name only: messages never reveal server paths
            raise ModelFileError(f"mediapipe's pose model {rel} is missing from the installed wheel")
    return mp


class PoseTracker:
    """Feeds frames of one video in order and returns each frame's upper-body pose.

    Video mode (the default) tracks the person between frames, which smooths the keypoints and
    skips the detector while tracking holds; use one tracker per video and a new one after a
    seek. ``static_image_mode=True`` treats every frame as an unrelated photo. Not thread-safe.
    """

    def __init__(
        self,
        *,
        static_image_mode: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_visibility: float = 0.5,
    ) -> None:
        mp = _import_mediapipe()
        self._min_visibility = min_visibility
        try:
            self._pose: Any = mp.solutions.pose.Pose(
                static_image_mode=static_image_mode,
                model_complexity=1,  # the only complexity whose model ships in the wheel
                smooth_landmarks=True,
                enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
        except (RuntimeError, OSError) as e:
            raise ModelFileError(f"mediapipe Pose could not load its model: {type(e).__name__}") from e

    def process(self, frame: np.ndarray) -> PoseResult:
        """RGB uint8 frame (gray/RGBA accepted) -> its upper-body pose; never raises for a frame
        without a person."""
        rgb = as_rgb_uint8(frame)
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return PoseResult.empty()
        h, w = rgb.shape[:2]
        points = result.pose_landmarks.landmark
        raw = np.array(
            [(points[i].x * w, points[i].y * h, points[i].visibility) for i in UPPER_BODY],
            dtype=np.float64,
        )
        finite = np.isfinite(raw).all(axis=1)
        raw[~finite] = 0.0
        x, y, score = raw[:, 0], raw[:, 1], raw[:, 2]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        visible = finite & inside & (score >= self._min_visibility)
        return PoseResult(raw[:, :2].astype(np.float32), visible)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> PoseTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def extract_poses(
    frames: Iterable[np.ndarray], progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks the upper body through a video's frames (in order).

    Returns ``(keypoints (T, K, 2) float32 pixels, visible (T, K) bool)``; ``progress`` is called
    with the number of frames done after each frame.
    """
    keypoints: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    with PoseTracker() as tracker:
        for frame in frames:
            pose = tracker.process(frame)
            keypoints.append(pose.keypoints)
            visible.append(pose.visible)
            if progress is not None:
                progress(len(keypoints))
    if not keypoints:
        return np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros((0, NUM_KEYPOINTS), bool)
    return np.stack(keypoints), np.stack(visible)
