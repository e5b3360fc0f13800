"""Synthetic footage of a person who sways when idle and gestures now and then, with known poses,
for motion-graph tests and benchmarks (no downloads, no pose model).

The astronaut photo that scikit-image ships is shifted by a smooth sway (and a larger lean during
gestures), and a skin-coloured "hand" rises from the bottom edge in an arc during each gesture.
The upper-body keypoints (livedh/avatar/pose.py's layout) and the face landmarks are the same
shifts applied to fixed points, so they are exact: FaceMesh runs once, on the still photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livedh.avatar.pose import HAND_POINTS, LEFT_SHOULDER, NUM_KEYPOINTS, RIGHT_SHOULDER

# face landmarks standing in for Pose's face points: nose, eyes (inner, centre, outer), ears,
# mouth corners (pose.UPPER_BODY's order)
_FACE_POINTS = (1, 133, 468, 33, 362, 473, 263, 234, 454, 61, 291)


@dataclass(frozen=True)
class MotionFootage:
    """frames (T, size, size, 3) RGB uint8; landmarks (T, 478, 2); keypoints (T, 23, 2) pixels;
    visible (T, 23) bool; gesture (T,) bool: the hand is up; fps."""

    frames: np.ndarray
    landmarks: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    gesture: np.ndarray
    fps: int


def _gesture_phase(t: np.ndarray, period: float, length: float, offset: float) -> np.ndarray:
    """0 outside gestures, rising 0 -> 1 -> 0 (a sine arc) over each gesture of ``length`` s."""
    k = np.mod(t - offset, period)
    return np.where(k < length, np.sin(np.pi * np.clip(k / length, 0, 1)), 0.0)


def make_motion_footage(seconds: float, *, fps: int = 25, size: int = 256, seed: int = 0,
                        gesture_period: float = 6.0, gesture_length: float = 2.4) -> MotionFootage:
    """``seconds`` of footage: idle sway with a gesture of ``gesture_length`` s every
    ``gesture_period`` s (the first after 2 s); ``seed`` varies the sway's phases."""
    import skimage.data

    from livedh.avatar.landmarks import detect_landmarks

    rng = np.random.default_rng(seed)
    photo = cv2.resize(np.ascontiguousarray(skimage.data.astronaut()), (size, size),
                       interpolation=cv2.INTER_AREA)
    base = detect_landmarks(photo)
    if base is None:  # the photo is a test fixture: FaceMesh always finds this face
        raise RuntimeError("FaceMesh found no face in the astronaut photo")
    n = round(seconds * fps)
    t = np.arange(n) / fps
    ph = rng.uniform(0, 2 * np.pi, 3)
    lift = _gesture_phase(t, gesture_period, gesture_length, 2.0)
    s = size / 256  # amplitudes are set for a 256 px frame
    sway = 3.0 * np.sin(2 * np.pi * t / 4.1 + ph[0]) + 1.5 * np.sin(2 * np.pi * t / 2.3 + ph[1])
    dx = s * (sway + 6 * lift)
    dy = s * (1.5 * np.sin(2 * np.pi * t / 3.7 + ph[2]) - 3 * lift)
    hand = np.stack([0.28 * size + 0.12 * size * np.sin(np.pi * lift), size * (1.08 - 0.45 * lift)], axis=1)
    hand[:, 0] += dx
    points = np.zeros((NUM_KEYPOINTS, 2))
    points[: len(_FACE_POINTS)] = base[list(_FACE_POINTS)]
    points[LEFT_SHOULDER], points[RIGHT_SHOULDER] = (0.78 * size, 0.98 * size), (0.22 * size, 0.98 * size)
    points[13:15] = [(0.85 * size, 1.2 * size), (0.15 * size, 1.2 * size)]  # elbows: below the frame
    shift = np.stack([dx, dy], axis=1)
    keypoints = points[None] + shift[:, None]
    # the subject's left hand (odd points 15..21) rests out of view; the right one (16..22) is the disc
    keypoints[:, [p for p in HAND_POINTS if p % 2]] = np.add(shift, [0.75 * size, 1.3 * size])[:, None]
    fingers = np.array([[0.0, 0.0], [-0.04, -0.05], [0.0, -0.07], [0.04, -0.05]]) * size
    keypoints[:, [p for p in HAND_POINTS if not p % 2]] = hand[:, None] + fingers[None]
    inside = (keypoints >= 0).all(axis=2) & (keypoints <= size - 1).all(axis=2)
    frames = np.empty((n, size, size, 3), np.uint8)
    radius = max(2, round(0.07 * size))
    for i in range(n):
        m = np.array([[1, 0, dx[i]], [0, 1, dy[i]]], np.float32)
        frame = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cv2.circle(frame, (round(hand[i, 0] * 16), round(hand[i, 1] * 16)), radius * 16, (224, 172, 140), -1,
                   cv2.LINE_AA, shift=4)
        frames[i] = frame
    landmarks = (base[None] + shift[:, None]).astype(np.float32)
    return MotionFootage(frames, landmarks, keypoints.astype(np.float32), inside, lift > 0.05, fps)


def write_motion_avatar(avatar_dir: Path, footage: MotionFootage, *, name: str = "mover",
                        actions: dict[str, list[int]] | None = None, model: str = "wav2lip") -> Any:
    """A video avatar folder from ``footage`` with its ``motion/`` files and the manifest's
    ``motion`` entry. The graph follows the real build's rule (livedh/avatar/motion_build.py):
    cuts detected and appearance descriptors taken from the stored frames, poses the footage's
    exact keypoints, action clips joined at their ends; speech = the gesture frames. Returns the
    manifest."""
    from dataclasses import replace

    from livedh.avatar.format import frame_file, load_array, write_manifest
    from livedh.avatar.motion import GRAPH_FILE, POSES_FILE, save_speech
    from livedh.avatar.motion_build import cut_thumbs, small_grey
    from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph, join_spans
    from livedh.avatar.motion_labels import appearance_features, detect_cuts
    from livedh.avatar.video import write_video_avatar

    avatar_dir = Path(avatar_dir)
    manifest = write_video_avatar(avatar_dir, list(footage.frames), footage.fps, name,
                                  landmarks=footage.landmarks, model=model, progress=False)
    n = len(footage.frames)
    boxes = load_array(avatar_dir / "boxes.npy", (n, 4))
    # the stored (JPEG) frames, read as the build reads them, so descriptors match a real build's
    side = max(manifest.width, manifest.height)
    grey = np.stack([small_grey(avatar_dir / frame_file(i), side) for i in range(n)])
    cuts = detect_cuts(cut_thumbs(grey))
    looks = appearance_features(grey, footage.keypoints, footage.visible, frame_width=manifest.width)
    config = MotionGraphConfig()
    graph = build_motion_graph(footage.keypoints, footage.visible, boxes, cuts, config, appearance=looks)
    if actions:
        spans = [(int(a), int(b)) for a, b in actions.values()]
        graph = join_spans(graph, footage.keypoints, footage.visible, spans, face_boxes=boxes,
                           appearance=looks, config=config)  # fmt: skip
    (avatar_dir / GRAPH_FILE).parent.mkdir(parents=True, exist_ok=True)
    graph.save(avatar_dir / GRAPH_FILE)
    np.savez_compressed(avatar_dir / POSES_FILE, keypoints=footage.keypoints, visible=footage.visible,
                        appearance=looks.features.astype(np.float16), appearance_present=looks.present)
    save_speech(avatar_dir, footage.gesture)
    manifest = replace(manifest, motion={"version": 1, "actions": dict(actions or {}), "source_frames": n})
    write_manifest(avatar_dir, manifest)
    return manifest
