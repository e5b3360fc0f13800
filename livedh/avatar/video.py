"""Video avatars: a clip of the person (looped by the renderer), per-frame face landmarks, face
crop boxes smoothed over time, and optional per-frame blend masks. Layout: docs/avatars.md.

``VideoAvatar.load`` reads and validates one; ``write_video_avatar`` builds one from frames (the
part of ``avatar build`` that comes after decoding the user's video).

Crop boxes are square and follow the crop the model's network was trained on:

* ``wav2lip``: the face detector's box of Wav2Lip (S3FD): brows to chin, cheek to cheek, plus
  Wav2Lip's default 10 px (about 5% of a face) of padding under the chin so the jaw is inside;
  squared around its centre. The mouth lands in the crop's lower half, which the network
  regenerates (``FaceGenerator.mouth_band``).
* ``ultralight``: Ultralight-Digital-Human's crop: from the eye corners down, a square as wide as
  the face, so it reaches a little below the chin.

Boxes are smoothed with a centred Gaussian over time: FaceMesh jitters 1-3 px from frame to frame,
and a crop that jitters makes the generated mouth swim. A centred filter has no lag, and its ends
are mirrored exactly as the renderer's ping-pong loop plays them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from livedh.avatar import landmarks as lm
from livedh.avatar.format import (
    FRAMES_DIR,
    MANIFEST,
    MASKS_DIR,
    AvatarManifest,
    building,
    frame_file,
    load_array,
    load_manifest,
    mask_file,
    save_array,
    save_gray,
    save_image,
    save_json,
    write_manifest,
)
from livedh.errors import InvalidInputError

if TYPE_CHECKING:
    from livedh.avatar.motion import MotionLibrary

log = logging.getLogger(__name__)

#: bump when the build changes, so a newer builder rebuilds what it owns
VIDEO_BUILDER = "video/1"
#: models that render video avatars, i.e. that have a crop recipe
NEURAL_MODELS = ("wav2lip", "ultralight")
# a crop smaller than this cannot hold a face a generator can work on
_MIN_BOX = 16
_RIGHT_EYE_CORNER, _LEFT_EYE_CORNER = 33, 263


@dataclass(frozen=True)
class VideoBuildParams:
    #: temporal smoothing of the crop boxes: Gaussian sigma in frames (0: none). Two frames
    #: remove FaceMesh's jitter while following real head motion
    smooth_sigma: float = 2.0
    #: write ``masks/``: the lower face, feathered. Without them the compositor blends the
    #: generator's whole mouth band, faded at the crop's edges
    masks: bool = True
    #: how far the mask reaches below the chin (room for the generated jaw's drop), in face heights
    mask_chin_drop: float = 0.12
    #: Gaussian feather of the mask's edge, in face heights
    mask_feather: float = 0.04


class VideoAvatar:
    """A loaded video avatar.

    Frames are RGB uint8 ``(height, width, 3)``; in memory (``preload=True``) they are read-only
    arrays shared by every caller, otherwise each call decodes the JPEG. ``landmarks``
    ``(N, 478, 2)`` and ``boxes`` ``(N, 4)`` are float32 frame pixels; ``crop_box(i)`` is box i
    rounded to whole pixels, inside the frame.
    """

    def __init__(
        self,
        path: Path,
        manifest: AvatarManifest,
        landmarks: np.ndarray,
        boxes: np.ndarray,
        *,
        has_masks: bool,
        preload: bool = True,
        motion: MotionLibrary | None = None,
    ) -> None:
        self.path = Path(path)
        self.manifest = manifest
        #: the motion graph, source speech and action clips; None: the footage is looped
        self.motion = motion
        self.landmarks = landmarks
        self.boxes = boxes
        self.has_masks = has_masks
        self.preload = preload
        w, h = manifest.width, manifest.height
        rounded = np.round(boxes).astype(np.int64)
        rounded[:, 0::2] = np.clip(rounded[:, 0::2], 0, w)
        rounded[:, 1::2] = np.clip(rounded[:, 1::2], 0, h)
        self._crop_boxes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in rounded]
        self._frames: list[np.ndarray] | None = None
        self._masks: list[np.ndarray] | None = None
        if preload:
            self._frames = [self._read(i, mask=False) for i in range(self.frame_count)]
            if has_masks:
                self._masks = [self._read(i, mask=True) for i in range(self.frame_count)]
        else:
            # lazy: still fail at load, not mid-stream, on the commonest corruptions
            self._read(0, mask=False)
            if has_masks:
                self._read(0, mask=True)

    @classmethod
    def load(cls, path: Path, *, preload: bool = True) -> VideoAvatar:
        """Loads and validates a video avatar folder. ``preload`` decodes every frame (and mask)
        now: 512x512 frames cost 0.75 MiB each, so a few hundred fit in memory and rendering
        decodes nothing. Every missing, corrupt or mis-shaped file raises InvalidInputError
        naming it; a missing folder or manifest raises NotFoundError."""
        path = Path(path)
        manifest = load_manifest(path)
        if manifest.kind != "video":
            raise InvalidInputError(f"{path / MANIFEST}: kind is {manifest.kind!r}, not 'video'")
        n = manifest.frame_count
        for i in range(n):
            if not (path / frame_file(i)).is_file():
                raise InvalidInputError(
                    f"{path / frame_file(i)} is missing: the manifest says {n} frames"
                )
        has_masks = (path / MASKS_DIR).is_dir()
        for i in range(n) if has_masks else ():
            if not (path / mask_file(i)).is_file():
                raise InvalidInputError(
                    f"{path / mask_file(i)} is missing: masks/ must have one mask per frame"
                )
        landmarks = load_array(path / "landmarks.npy", (n, lm.NUM_LANDMARKS, 2))
        boxes = load_array(path / "boxes.npy", (n, 4)).astype(np.float32)
        _check_boxes(boxes, manifest.width, manifest.height, path / "boxes.npy")
        return cls(
            path,
            manifest,
            landmarks.astype(np.float32),
            boxes,
            has_masks=has_masks,
            preload=preload,
            motion=_load_motion(path, manifest),
        )

    @property
    def frame_count(self) -> int:
        return self.manifest.frame_count

    @property
    def width(self) -> int:
        return self.manifest.width

    @property
    def height(self) -> int:
        return self.manifest.height

    def frame(self, index: int) -> np.ndarray:
        """Footage frame ``index`` (0 <= index < frame_count), RGB uint8. Do not modify it."""
        index = self._check_index(index)
        if self._frames is not None:
            return self._frames[index]
        return self._read(index, mask=False)

    def mask(self, index: int) -> np.ndarray | None:
        """Blend mask of frame ``index``: uint8 ``(height, width)``, 255 where the rendered face
        shows; None when the avatar has no masks."""
        if not self.has_masks:
            return None
        index = self._check_index(index)
        if self._masks is not None:
            return self._masks[index]
        return self._read(index, mask=True)

    def crop_box(self, index: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` integer face crop of frame ``index`` (x1, y1 exclusive)."""
        return self._crop_boxes[index]

    def _check_index(self, index: int) -> int:
        if not 0 <= index < self.frame_count:
            raise IndexError(f"frame {index} outside 0..{self.frame_count - 1}")
        return index

    def _read(self, index: int, *, mask: bool) -> np.ndarray:
        file = self.path / (mask_file(index) if mask else frame_file(index))
        flags = cv2.IMREAD_GRAYSCALE if mask else cv2.IMREAD_COLOR
        image = cv2.imread(str(file), flags)
        if image is None:
            raise InvalidInputError(f"{file}: not a readable image")
        want = (self.manifest.height, self.manifest.width)
        if image.shape[:2] != want:
            raise InvalidInputError(
                f"{file}: {image.shape[1]}x{image.shape[0]} does not match the manifest's "
                f"{want[1]}x{want[0]}"
            )
        if not mask:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        image = np.ascontiguousarray(image)
        image.flags.writeable = False  # shared by every session: a write would be a bug
        return image


def _load_motion(path: Path, manifest: AvatarManifest) -> MotionLibrary | None:
    """The avatar's motion library, or None when it has none (format 1, or built without one) or
    when its files come from another version of the builder (`livedh avatar graph` rebuilds them)."""
    from livedh.avatar.motion import MOTION_VERSION, MotionLibrary  # scipy: only when needed

    entry = manifest.motion
    if entry is None:
        return None
    if entry.get("version") != MOTION_VERSION:
        log.warning(
            "avatar %s: motion graph version %s is not %d, so the footage is looped; rebuild it with "
            "`livedh avatar graph %s`", manifest.name, entry.get("version"), MOTION_VERSION, manifest.name,
        )  # fmt: skip
        return None
    return MotionLibrary.load(path, entry, manifest.frame_count)


def _check_boxes(boxes: np.ndarray, width: int, height: int, where: Path) -> None:
    tol = 0.5  # boxes are floats; rounding may reach half a pixel past the edge
    x0, y0, x1, y1 = boxes.T
    bad = (
        (x0 < -tol)
        | (y0 < -tol)
        | (x1 > width + tol)
        | (y1 > height + tol)
        | (x1 - x0 < _MIN_BOX)
        | (y1 - y0 < _MIN_BOX)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"{where}: box {i} {boxes[i].tolist()} is smaller than {_MIN_BOX} px or outside the "
            f"{width}x{height} frame"
        )


# --- geometry --------------------------------------------------------------------------------


def face_crop(landmarks: np.ndarray, model: str) -> tuple[float, float, float]:
    """``(centre x, centre y, side)`` of the square face crop ``model``'s network expects, from
    one frame's ``(478, 2)`` landmarks (unsmoothed, not clipped to the frame)."""
    fh = lm.face_height(landmarks)
    oval = landmarks[list(lm.FACE_OVAL)]
    left, right = float(oval[:, 0].min()), float(oval[:, 0].max())
    cx = (left + right) / 2
    if model == "wav2lip":
        # S3FD's box starts around the brows, a tenth of the face below FaceMesh's forehead
        # point; Wav2Lip pads 10 px under the chin
        top = float(landmarks[lm.FOREHEAD_TOP, 1]) + 0.10 * fh
        bottom = float(landmarks[lm.CHIN, 1]) + 0.05 * fh
        return cx, (top + bottom) / 2, max(right - left, bottom - top)
    if model == "ultralight":
        top = float(landmarks[[_RIGHT_EYE_CORNER, _LEFT_EYE_CORNER], 1].mean())
        side = right - left
        return cx, top + side / 2, side
    raise InvalidInputError(f"no face crop for model {model!r}; choose one of {NEURAL_MODELS}")


def smooth_track(values: np.ndarray, sigma: float) -> np.ndarray:
    """Centred Gaussian smoothing of ``(N, k)`` values along time. The ends are mirrored (frame
    N-2 follows N-1), which is how the ping-pong loop plays them, so the loop point is smooth."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if sigma <= 0 or n < 2:
        return values.copy()
    radius = max(1, math.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="reflect")
    return np.stack(
        [np.convolve(padded[:, j], kernel, mode="valid") for j in range(values.shape[1])], axis=1
    )


def square_boxes(track: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 3)`` (cx, cy, side) -> ``(N, 4)`` float32 square boxes inside the frame: a box that
    would cross an edge is shifted inside (kept square, so the crop is not distorted), and one
    larger than the frame shrinks to fit."""
    cx, cy, side = np.asarray(track, dtype=np.float64).T
    side = np.minimum(side, min(width, height))
    x0 = np.clip(cx - side / 2, 0, width - side)
    y0 = np.clip(cy - side / 2, 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)


def lower_face_mask(
    landmarks: np.ndarray,
    width: int,
    height: int,
    *,
    chin_drop: float = 0.12,
    feather: float = 0.04,
) -> np.ndarray:
    """uint8 ``(height, width)`` blend mask: 255 over the lower face (from just above the nose
    tip down the jaw line), stretched ``chin_drop`` face heights below the chin so an opened
    jaw stays inside, edges feathered by a Gaussian of ``feather`` face heights."""
    fh = lm.face_height(landmarks)
    top = float(landmarks[lm.SUBNASALE, 1]) - 0.08 * fh
    chin_y = float(landmarks[lm.CHIN, 1])
    oval = landmarks[list(lm.FACE_OVAL)].astype(np.float64)
    below = oval[:, 1] >= top
    # the oval is a loop from the forehead: rotate it so the points below `top` are contiguous
    start = int(np.flatnonzero(below & ~np.roll(below, 1))[0]) if not below.all() else 0
    arc = np.roll(oval, -start, axis=0)[: int(below.sum())].copy()
    # stretch down, most at the chin, not at all at the top line
    arc[:, 1] += chin_drop * fh * np.clip((arc[:, 1] - top) / max(chin_y - top, 1.0), 0.0, 1.0)
    sigma = max(feather * fh, 0.5)
    pad = math.ceil(3 * sigma) + 1
    (x0, y0), (x1, y1) = arc.min(axis=0), arc.max(axis=0)
    rx0, ry0 = max(0, int(x0) - pad), max(0, int(y0) - pad)
    rx1, ry1 = min(width, math.ceil(x1) + pad + 1), min(height, math.ceil(y1) + pad + 1)
    out = np.zeros((height, width), np.uint8)
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    patch = np.zeros((ry1 - ry0, rx1 - rx0), np.float32)
    poly = np.round((arc - (rx0, ry0)) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(patch, [poly], 1.0, lineType=cv2.LINE_AA, shift=4)
    soft = cv2.GaussianBlur(patch, (0, 0), sigma)
    out[ry0:ry1, rx0:rx1] = np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def clip_mouth_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Union over the clip of each frame's ``landmarks.mouth_box`` (lips plus jaw drop)."""
    boxes = np.array([lm.mouth_box(p, width, height) for p in landmarks])
    return (
        int(boxes[:, 0].min()),
        int(boxes[:, 1].min()),
        int(boxes[:, 2].max()),
        int(boxes[:, 3].max()),
    )


def interpolate_missing(found: Sequence[np.ndarray | None]) -> tuple[np.ndarray, list[int]]:
    """Per-frame ``(478, 2)`` landmarks or None -> ``(N, 478, 2)`` float32 with the missing frames
    filled in by linear interpolation between their neighbours (the nearest one at the ends),
    and the missing frames' indices. Raises InvalidInputError when no frame has a face."""
    have = [(i, p) for i, p in enumerate(found) if p is not None]
    if not have:
        raise InvalidInputError(f"no face found in any of the {len(found)} frames")
    missing = [i for i, p in enumerate(found) if p is None]
    known = np.stack([p for _, p in have]).reshape(len(have), -1)
    out = np.empty((len(found), known.shape[1]), np.float64)
    for j in range(known.shape[1]):
        out[:, j] = np.interp(np.arange(len(found)), [i for i, _ in have], known[:, j])
    return out.reshape(len(found), lm.NUM_LANDMARKS, 2).astype(np.float32), missing


def detect_track(
    frames: Sequence[np.ndarray],
    detector: lm.FaceMeshDetector | None = None,
    *,
    progress: bool = True,
) -> tuple[np.ndarray, list[int]]:
    """Landmarks of every frame, ``(N, 478, 2)`` float32, and the frames where no face was found
    (filled in by linear interpolation between their neighbours, or the nearest one at the
    ends). Raises InvalidInputError when no frame has a face."""
    owned = detector is None
    # static_image_mode=False: FaceMesh tracks the face from frame to frame (steadier, faster)
    det = lm.FaceMeshDetector(static_image_mode=False) if detector is None else detector
    try:
        found = [det.detect(f) for f in tqdm(frames, desc="face landmarks", disable=not progress)]
    finally:
        if owned:
            det.close()
    return interpolate_missing(found)


# --- builder ---------------------------------------------------------------------------------


def write_video_avatar(
    out_dir: Path,
    frames: Sequence[np.ndarray],
    fps: int,
    name: str,
    landmarks: np.ndarray | None = None,
    detector: lm.FaceMeshDetector | None = None,
    model: str = "wav2lip",
    *,
    params: VideoBuildParams | None = None,
    source: str = "user video",
    license: str = "unknown (provided by the user)",
    progress: bool = True,
) -> AvatarManifest:
    """Builds the video avatar folder ``out_dir`` (replacing it atomically) from RGB uint8
    ``frames`` of one size, and returns its manifest.

    ``landmarks`` ``(N, 478, 2)``: given, or detected with ``detector`` (default: a tracking
    FaceMesh opened and closed here). Writes frames, landmarks, smoothed square crop boxes for
    ``model``'s network, per-frame lower-face masks (``params.masks``), preview.jpg and
    summary.json, then the manifest. Raises InvalidInputError on bad input or when no frame has
    a face.
    """
    params = params or VideoBuildParams()
    started = time.monotonic()
    check_model(model)
    if not frames:
        raise InvalidInputError("a video avatar needs at least one frame")
    rgb = [lm.as_rgb_uint8(f) for f in frames]
    height, width = rgb[0].shape[:2]
    for i, f in enumerate(rgb):
        if f.shape[:2] != (height, width):
            raise InvalidInputError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {width}x{height}")
    n = len(rgb)

    missing: list[int] = []
    given = landmarks is not None
    if landmarks is None:
        landmarks, missing = detect_track(rgb, detector, progress=progress)
    else:
        landmarks = np.asarray(landmarks, dtype=np.float32)
        if landmarks.shape != (n, lm.NUM_LANDMARKS, 2) or not np.isfinite(landmarks).all():
            raise InvalidInputError(
                f"landmarks must be finite, shape ({n}, {lm.NUM_LANDMARKS}, 2); got {landmarks.shape}"
            )
    if missing:
        log.warning("no face in %d of %d frames; their landmarks are interpolated", len(missing), n)
    detected_s = time.monotonic() - started

    manifest, _ = assemble_video_avatar(
        Path(out_dir),
        AvatarFrames(
            width=width,
            height=height,
            count=n,
            put=lambda i, path: save_image(path, rgb[i]),
        ),
        fps=fps,
        name=name,
        landmarks=landmarks,
        model=model,
        params=params,
        preview_index=0,
        summary={
            "frames_without_face": missing,
            "landmarks": "given" if given else "FaceMesh",
            "seconds": {"landmarks": round(detected_s, 3)},
        },
        started=started,
        source=source,
        license=license,
        progress=progress,
    )
    return manifest


def check_model(model: str) -> None:
    if model not in NEURAL_MODELS:
        raise InvalidInputError(f"video avatars need a neural model, one of {NEURAL_MODELS}; got {model!r}")


@dataclass(frozen=True)
class AvatarFrames:
    """The footage an avatar is assembled from, wherever it lives: ``put(i, path)`` writes frame
    ``i`` (``width`` x ``height``) as a JPEG file at ``path`` (encoding an array in memory, or
    linking a file already on disk)."""

    width: int
    height: int
    count: int
    put: Callable[[int, Path], None]


def assemble_video_avatar(
    out_dir: Path,
    frames: AvatarFrames,
    *,
    fps: int,
    name: str,
    landmarks: np.ndarray,
    model: str,
    params: VideoBuildParams,
    preview_index: int,
    summary: dict[str, Any],
    started: float,
    source: str,
    license: str,
    progress: bool | Callable[[int, int], None] = True,
    extra: Callable[[Path], None] | None = None,
    timings: Callable[[], dict[str, float]] | None = None,
    source_duration_s: float | None = None,
) -> tuple[AvatarManifest, dict[str, Any]]:
    """The part of a video avatar build shared by ``write_video_avatar`` (frames in memory) and
    ``livedh.avatar.build`` (frames on disk): from per-frame ``landmarks`` (no gaps) it computes
    smoothed crop boxes and masks, and writes the folder ``out_dir`` atomically: frames, masks,
    landmarks.npy, boxes.npy, preview.jpg (frame ``preview_index``), whatever ``extra(tmp)``
    adds, summary.json (``summary`` merged over the assembly's own keys; ``seconds`` gets
    ``timings()`` and the total since ``started``, and ``build_time_ratio`` the total over
    ``source_duration_s``), the manifest last. ``progress``: a tqdm bar (bool) or a
    ``(done, total)`` callback. Returns the manifest and the summary written."""
    n, width, height = frames.count, frames.width, frames.height
    landmarks = np.asarray(landmarks, dtype=np.float32)
    raw = np.array([face_crop(p, model) for p in landmarks])
    boxes = square_boxes(smooth_track(raw, params.smooth_sigma), width, height)
    manifest = AvatarManifest(
        name=name,
        kind="video",
        model=model,
        fps=fps,
        width=width,
        height=height,
        mouth_box=clip_mouth_box(landmarks, width, height),
        source=source,
        license=license,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        frame_count=n,
        builder=VIDEO_BUILDER,
    )
    # validate before writing: a bad name or fps must fail here, not when the avatar is loaded
    AvatarManifest.from_json(manifest.to_json(), where=f"avatar {name!r}")
    _check_boxes(boxes, width, height, Path(out_dir) / "boxes.npy")

    # masks follow the smoothed face, like the boxes, so their soft edge does not flicker
    smooth_lms = smooth_track(landmarks.reshape(n, -1), params.smooth_sigma).reshape(landmarks.shape)

    def write_one(tmp: Path, i: int) -> None:
        frames.put(i, tmp / frame_file(i))
        if params.masks:
            mask = lower_face_mask(
                smooth_lms[i], width, height, chin_drop=params.mask_chin_drop, feather=params.mask_feather
            )
            save_gray(tmp / mask_file(i), mask)

    with building(Path(out_dir)) as tmp:
        (tmp / FRAMES_DIR).mkdir()
        if params.masks:
            (tmp / MASKS_DIR).mkdir()
        bar = tqdm(total=n, desc=f"writing avatar {name}", disable=progress is not True)
        # cv2's encoders and filters release the GIL: two threads keep two cores busy
        with bar, ThreadPoolExecutor(max_workers=2) as pool:
            for done, _ in enumerate(pool.map(lambda i: write_one(tmp, i), range(n)), 1):
                bar.update(1)
                if callable(progress):
                    progress(done, n)
        save_array(tmp / "landmarks.npy", landmarks)
        save_array(tmp / "boxes.npy", boxes)
        frames.put(preview_index, tmp / "preview.jpg")
        if extra is not None:
            extra(tmp)
        sides = boxes[:, 2] - boxes[:, 0]
        report: dict[str, Any] = {
            "builder": VIDEO_BUILDER,
            "model": model,
            "frames": n,
            "fps": fps,
            "duration_s": round(n / fps, 3),
            "width": width,
            "height": height,
            "frames_without_face": [],
            "box_smoothing_sigma_frames": params.smooth_sigma,
            "crop_side_px": {
                "median": round(float(np.median(sides)), 1),
                "min": round(float(sides.min()), 1),
                "max": round(float(sides.max()), 1),
            },
            "masks": params.masks,
            **summary,
        }
        total = time.monotonic() - started
        report["seconds"] = {
            **summary.get("seconds", {}),
            **(timings() if timings is not None else {}),
            "total": round(total, 3),
        }
        if source_duration_s:
            report["build_time_ratio"] = round(total / source_duration_s, 3)
        save_json(tmp / "summary.json", report)
        write_manifest(tmp, manifest)  # last: a folder without a manifest is never trusted
    log.info("built video avatar %s (%d frames, %s) in %s", name, n, model, out_dir)
    return manifest, report
