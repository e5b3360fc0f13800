"""Builds photo avatars: one still image plus its face landmarks, animated by the "photo" model.

The default avatar comes from a public-domain photo that scikit-image ships, with landmarks from
the FaceMesh model inside the mediapipe wheel, so a fresh machine needs no download.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from livedh.avatar.format import (
    AvatarManifest,
    building,
    load_manifest,
    save_array,
    save_image,
    write_manifest,
)
from livedh.avatar.landmarks import FaceMeshDetector, as_rgb_uint8, face_height, mouth_box
from livedh.errors import InvalidInputError, NotFoundError

log = logging.getLogger(__name__)

#: bump when the build changes, so ``ensure_default_avatar`` rebuilds stale folders
PHOTO_BUILDER = "photo/1"
DEFAULT_NAME = "default"
#: photo avatars are square frames of this side (the renderer's output size)
SIZE = 512
# a user photo is cropped to a square of this many face heights around the face (the default
# photo's framing: head and shoulders), or the largest square that fits
_CROP_FACE_HEIGHTS = 4.5

_ASTRONAUT_SOURCE = (
    "scikit-image skimage.data.astronaut(): Eileen Collins, NASA astronaut portrait (1995)"
)
_ASTRONAUT_LICENSE = (
    "public domain (NASA; https://commons.wikimedia.org/wiki/File:Eileen_Collins.jpg)"
)


def default_image() -> np.ndarray:
    """The default avatar's photo: 512x512 RGB uint8."""
    from skimage import data  # imported on use: pulls in much of scikit-image

    return np.ascontiguousarray(data.astronaut())


def build_photo_avatar(
    out_dir: Path,
    image: np.ndarray | None = None,
    name: str = DEFAULT_NAME,
    *,
    fps: int = 25,
    source: str | None = None,
    license: str | None = None,
) -> AvatarManifest:
    """Builds the photo avatar folder ``out_dir`` (replacing it atomically) and returns its
    manifest. ``image`` (RGB uint8) defaults to the public-domain astronaut photo; other sizes
    are cropped to a square around the face and resized to 512x512.

    Raises InvalidInputError("no face found in the image") when FaceMesh finds no face.
    """
    if image is None:
        rgb = default_image()
        source = source or _ASTRONAUT_SOURCE
        license = license or _ASTRONAUT_LICENSE
    else:
        rgb = as_rgb_uint8(image)
    with FaceMeshDetector() as detector:
        landmarks = _detect(detector, rgb)
        if rgb.shape[:2] != (SIZE, SIZE):
            rgb = _crop_square(rgb, landmarks)
            # detect again on the final pixels rather than transform: FaceMesh is more accurate
            # at the resolution the renderer uses
            landmarks = _detect(detector, rgb)

    manifest = AvatarManifest(
        name=name,
        kind="photo",
        model="photo",
        fps=fps,
        width=SIZE,
        height=SIZE,
        mouth_box=mouth_box(landmarks, SIZE, SIZE),
        source=source or "user photo",
        license=license or "unknown (provided by the user)",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        frame_count=1,
        builder=PHOTO_BUILDER,
    )
    # validate before writing: a bad name must fail here, not when the avatar is next loaded
    AvatarManifest.from_json(manifest.to_json(), where=f"avatar {name!r}")
    with building(Path(out_dir)) as tmp:
        save_image(tmp / "image.png", rgb)
        save_array(tmp / "landmarks.npy", landmarks.astype(np.float32))
        write_manifest(tmp, manifest)  # last: a folder without a manifest is never trusted
    log.info("built photo avatar %s in %s", name, out_dir)
    return manifest


def ensure_default_avatar(avatars_dir: Path) -> Path:
    """Returns ``avatars_dir/default``, building it on first use (about a second) and rebuilding
    it when it is broken or was built by an older photo builder. A ``default`` avatar someone
    built with another builder (their own video, say) is left alone."""
    path = Path(avatars_dir) / DEFAULT_NAME
    try:
        manifest = load_manifest(path)
        if manifest.builder == PHOTO_BUILDER or not manifest.builder.startswith("photo/"):
            return path
        log.info("rebuilding %s: built by %s, now %s", path, manifest.builder, PHOTO_BUILDER)
    except NotFoundError:
        log.info("building the default avatar in %s", path)
    except InvalidInputError as e:
        log.warning("rebuilding the default avatar: %s", e)
    try:
        build_photo_avatar(path)
    except OSError:
        # another process may have renamed its build into place first; use it if it is sound
        if load_manifest(path).builder != PHOTO_BUILDER:
            raise
    return path


def _detect(detector: FaceMeshDetector, rgb: np.ndarray) -> np.ndarray:
    landmarks = detector.detect(rgb)
    if landmarks is None:
        raise InvalidInputError("no face found in the image")
    return landmarks


def _crop_square(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = int(min(h, w, max(SIZE / 4, _CROP_FACE_HEIGHTS * face_height(landmarks))))
    cx, cy = landmarks.mean(axis=0)
    # the face a little above the centre, as in a head-and-shoulders portrait
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - 0.4 * side, 0, h - side))
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > SIZE else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (SIZE, SIZE), interpolation=interp))
