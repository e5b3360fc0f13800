"""The "photo" lip-sync model: animates one still photo on the CPU, no weights.

Each frame is a pure function of (frame_index, audio window, seed), so requests from many sessions
can share a batch and nothing jumps when speech starts or stops:

* mouth: the window's loudness opens it (lower lip and jaw move down through a smooth
  displacement field, a dark cavity is drawn between the lips); its brightness spreads or rounds
  it. Silence gives exactly the idle frame.
* idle: blinks every 2-6 s and a slow head sway (sum of sines), both from (seed, time) only, so
  they run on identically whether the avatar speaks or not.

Two small remaps per frame: face details (jaw, eyelids) on their own rectangles, then the head's
sway over the head patch through a soft mask so the background stays put. About 1-2 ms a frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from livedh.avatar import landmarks as lm
from livedh.avatar.format import load_photo_avatar
from livedh.errors import InvalidInputError
from livedh.lipsync.audio_features import MouthDriveParams, mouth_drive
from livedh.lipsync.base import LipSyncModel, LipSyncRequest

_CAVITY_TOP = np.array([28, 10, 12], np.float32)  # throat: near black, warm
_CAVITY_TONGUE = np.array([120, 50, 55], np.float32)
_TEETH = np.array([225, 220, 205], np.float32)


@dataclass(frozen=True)
class PhotoParams:
    """Look of the animation; lengths are fractions of the face height unless named _px."""

    #: lower-lip drop at full opening
    jaw_drop: float = 0.085
    #: the upper lip rises by this fraction of the drop
    lip_lift: float = 0.15
    #: corners move out (spread) or in (rounded) by this fraction of the mouth's half width
    mouth_shape: float = 0.12
    #: blinks start 2-6 s apart (mean 4 s), each lasting blink_s
    blink_interval_s: tuple[float, float] = (2.0, 6.0)
    blink_s: float = 0.15
    head_shift_px: float = 1.5
    head_tilt_deg: float = 1.0
    drive: MouthDriveParams = field(default_factory=MouthDriveParams)


class _Eye(NamedTuple):
    """Per-column geometry of one eye, in head-patch pixels."""

    rect: tuple[int, int, int, int]
    ys: np.ndarray  # row coordinate of each pixel in rect
    yu: np.ndarray  # upper lid edge per column
    gap: np.ndarray  # lid opening per column (0 at the corners)
    open: np.ndarray  # 0..1: how much of the lash line the closing lid covers
    skin: np.ndarray  # (columns, 3) lid skin colour


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _hash01(*keys: int) -> float:
    """Deterministic uniform [0, 1) from integers (splitmix64): blinks and sway phases."""
    x = 0x9E3779B97F4A7C15
    for k in keys:
        x = (x ^ (k & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x / 2.0**64


def _curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a contour sorted by x, for per-column lookups with np.interp."""
    order = np.argsort(points[:, 0])
    return points[order, 0].astype(np.float64), points[order, 1].astype(np.float64)


def _grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    return xs, ys


class PhotoLipSync(LipSyncModel):
    """Renders a photo avatar (``PhotoLipSync.from_dir(avatars/default)``)."""

    # 120 ms centred on the frame's middle (it ends 20 ms after the frame): long enough to ramp
    # the mouth over ~3 frames at onsets, short enough to keep syllables apart at 3-5 Hz.
    audio_window = 1920
    audio_lookahead = 320

    def __init__(
        self,
        image: np.ndarray,
        landmarks: np.ndarray,
        *,
        fps: int = 25,
        params: PhotoParams | None = None,
    ) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(f"photo must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        if landmarks.shape != (lm.NUM_LANDMARKS, 2):
            raise InvalidInputError(f"landmarks must be (478, 2), got {landmarks.shape}")
        self.params = p = params or PhotoParams()
        self.fps = fps
        self.height, self.width = image.shape[:2]
        self._image = np.ascontiguousarray(image)
        self.mouth_box = lm.mouth_box(landmarks, self.width, self.height)
        fh = lm.face_height(landmarks)
        self._max_drop = p.jaw_drop * fh

        # Head patch: a soft ellipse over face and hair; everything animated lies inside it.
        oval = landmarks[list(lm.FACE_OVAL)]
        (ox0, oy0), (ox1, oy1) = oval.min(axis=0), oval.max(axis=0)
        centre = ((ox0 + ox1) / 2, (oy0 + oy1) / 2 - 0.12 * fh)
        axes = (0.5 * (ox1 - ox0) * 1.5, 0.5 * (oy1 - oy0) * 1.4)
        feather = 0.08 * fh
        chin = landmarks[lm.CHIN]
        neck_k = max(0.22 * fh, 1.7 * self._max_drop)  # below the chin the jaw's drop fades out
        x0 = int(max(0, centre[0] - axes[0] - 3 * feather))
        x1 = int(min(self.width, centre[0] + axes[0] + 3 * feather + 1))
        y0 = int(max(0, centre[1] - axes[1] - 3 * feather))
        y1 = int(min(self.height, max(centre[1] + axes[1] + 3 * feather, chin[1] + 2 * neck_k) + 1))
        self._patch = (x0, y0, x1, y1)
        self._src = np.ascontiguousarray(image[y0:y1, x0:x1])
        pts = landmarks.astype(np.float64) - (x0, y0)  # patch coordinates from here on

        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(
            mask,
            (round(centre[0] - x0), round(centre[1] - y0)),
            (round(axes[0]), round(axes[1])),
            0, 0, 360, 1.0, -1,
        )  # fmt: skip
        mask = cv2.GaussianBlur(mask, (0, 0), feather).astype(np.float32)
        mask[mask < 1e-3] = 0.0  # the background beyond the feather stays exactly still
        self._head_mask = mask
        gx, gy = _grid(0, 0, x1 - x0, y1 - y0)
        self._gx, self._gy = gx, gy
        self._mgx, self._mgy = mask * gx, mask * gy
        self._pivot = pts[lm.CHIN] + (0.0, 0.35 * fh)  # the head sways about the neck

        self._init_mouth(pts, neck_k)
        self._eyes = [
            self._init_eye(pts, fh, upper, lower)
            for upper, lower in (
                (lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER),
                (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER),
            )
        ]

    @classmethod
    def from_dir(cls, path: Path, params: PhotoParams | None = None) -> PhotoLipSync:
        avatar = load_photo_avatar(path)
        model = cls(avatar.image, avatar.landmarks, fps=avatar.manifest.fps, params=params)
        model.mouth_box = avatar.manifest.mouth_box
        return model

    # --- geometry, once ---------------------------------------------------------------------

    def _init_mouth(self, pts: np.ndarray, neck_k: float) -> None:
        inner_upper, inner_lower = pts[list(lm.LIPS_INNER_UPPER)], pts[list(lm.LIPS_INNER_LOWER)]
        outer_lower = pts[list(lm.LIPS_OUTER_LOWER)]
        left, right = inner_lower[0], inner_lower[-1]
        self._mouth_cx = float((left[0] + right[0]) / 2)
        self._mouth_hw = float(abs(right[0] - left[0]) / 2)
        self._mouth_cy = float(inner_lower[:, 1].mean())
        # the jaw drops as a whole across the chin, fading out along the jawline
        oval = pts[list(lm.FACE_OVAL)]
        below = oval[oval[:, 1] > self._mouth_cy]
        self._jaw_hw = float(max(np.abs(below[:, 0] - self._mouth_cx).max(), self._mouth_hw + 2))
        self._chin_curve = _curve(below)
        self._lip_lower = _curve(inner_lower)
        self._lip_bottom = _curve(outer_lower)
        self._lip_top_y = float(pts[lm.SUBNASALE, 1])
        self._neck_k = neck_k
        # a photo with closed lips shows no teeth: draw a hint of upper teeth in the cavity
        gap = float(np.median(inner_lower[3:-3, 1] - inner_upper[3:-3, 1]))
        self._teeth = float(1.0 - np.clip(gap / (0.15 * self._mouth_hw), 0.0, 1.0))
        pad = 2
        jx0 = max(0, int(self._mouth_cx - self._jaw_hw) - pad)
        jx1 = min(self._src.shape[1], int(self._mouth_cx + self._jaw_hw) + pad)
        jy0 = max(0, int(self._lip_top_y) - pad)
        jy1 = min(self._src.shape[0], int(below[:, 1].max() + self._max_drop + neck_k) + pad)
        self._jaw_rect = (jx0, jy0, jx1, jy1)
        self._jaw_grid = _grid(jx0, jy0, jx1, jy1)

    def _init_eye(self, pts: np.ndarray, fh: float, upper: tuple[int, ...], lower: tuple[int, ...]) -> _Eye:
        ux, uy = _curve(pts[list(upper)])
        lx, ly = _curve(pts[list(lower)])
        x0, x1 = math.floor(ux.min()), math.ceil(ux.max()) + 1
        cols = np.arange(x0, x1, dtype=np.float64)
        yu, yl = np.interp(cols, ux, uy), np.interp(cols, lx, ly)
        gap = np.maximum(yl - yu, 0.0)
        gap[(cols < ux.min()) | (cols > ux.max())] = 0.0
        # The eye is a few pixels tall and close under the brow: stretching lid skin over it
        # drags the brow along, so the closed lid is painted in the colour of the skin just above
        # the lashes (per column, following the lighting), with a darker lash line at its edge.
        skin_y = (yu - 0.032 * fh).astype(np.float32)[None, :]
        skin = cv2.remap(
            self._src, cols.astype(np.float32)[None, :], skin_y, cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )[0].astype(np.float32)  # fmt: skip
        skin = cv2.GaussianBlur(skin[None], (0, 0), 1.5)[0]
        y0, y1 = math.floor(yu.min()) - 2, math.ceil(yl.max()) + 2
        return _Eye(
            rect=(x0, y0, x1, y1),
            ys=_grid(x0, y0, x1, y1)[1],
            yu=yu.astype(np.float32),
            gap=gap.astype(np.float32),
            open=np.clip(gap / 1.2, 0.0, 1.0).astype(np.float32),
            skin=skin,
        )

    # --- per frame --------------------------------------------------------------------------

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        return [self.render(r.frame_index, r.audio, r.seed) for r in batch]

    def render(self, frame_index: int, audio: np.ndarray, seed: int = 0) -> np.ndarray:
        """One RGB uint8 frame: a pure function of its arguments."""
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise InvalidInputError(f"audio window must be 1-D, got shape {audio.shape}")
        t = frame_index / self.fps
        drive = mouth_drive(audio, self.sample_rate, self.params.drive)
        blink = self.blink(t, seed)

        face = self._src
        if drive.opening > 0.0 or blink > 0.0:
            face = self._src.copy()
            if drive.opening > 0.0:
                self._draw_mouth(face, drive.opening, drive.width)
            if blink > 0.0:
                for eye in self._eyes:
                    self._draw_eyelid(face, eye, blink)

        dx, dy, angle = self.head_pose(t, seed)
        # inverse of the head's motion (rotation about the neck, then shift), faded by the mask
        inv = cv2.getRotationMatrix2D((float(self._pivot[0]), float(self._pivot[1])), -angle, 1.0)
        inv[:, 2] -= inv[:, :2] @ np.array([dx, dy])
        (a, b, c), (d, e, f) = inv.tolist()  # python floats keep the maps float32
        m, mx, my = self._head_mask, self._mgx, self._mgy
        map_x = self._gx + (a - 1) * mx + b * my + c * m
        map_y = self._gy + d * mx + (e - 1) * my + f * m
        moved = cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

        out = self._image.copy()
        x0, y0, x1, y1 = self._patch
        out[y0:y1, x0:x1] = moved
        return out

    def blink(self, t: float, seed: int) -> float:
        """Eyelid closure 0..1 at time ``t``: one blink in each slot of the mean interval, at a
        pseudo-random offset, so consecutive blinks are blink_interval_s apart."""
        lo, hi = self.params.blink_interval_s
        slot_s, jitter = (lo + hi) / 2, (hi - lo) / 2
        slot = math.floor(t / slot_s)
        margin = (slot_s - jitter - self.params.blink_s) / 2
        start = slot * slot_s + margin + jitter * _hash01(seed, slot)
        u = (t - start) / self.params.blink_s
        if not 0.0 < u < 1.0:
            return 0.0
        # closes, stays shut ~40% of the blink (so a 25 fps frame sees it shut), reopens
        return min(1.0, 1.3 * math.sin(math.pi * u))

    def head_pose(self, t: float, seed: int) -> tuple[float, float, float]:
        """(dx px, dy px, degrees) of the idle sway: sums of slow sines with per-seed phases."""
        ph = [2 * math.pi * _hash01(seed, 1000 + i) for i in range(6)]
        w = 2 * math.pi * t
        a, deg = self.params.head_shift_px, self.params.head_tilt_deg
        dx = a * (0.65 * math.sin(0.11 * w + ph[0]) + 0.35 * math.sin(0.27 * w + ph[1]))
        dy = 0.6 * a * (0.6 * math.sin(0.08 * w + ph[2]) + 0.4 * math.sin(0.21 * w + ph[3]))
        angle = deg * (0.6 * math.sin(0.07 * w + ph[4]) + 0.4 * math.sin(0.19 * w + ph[5]))
        return dx, dy, angle

    def _draw_mouth(self, face: np.ndarray, opening: float, width: float) -> None:
        xs, ys = self._jaw_grid
        drop_max = opening * self._max_drop * (1.0 - 0.2 * width)  # spread lips open less
        # horizontal: corners move out (spread) or in (rounded) under a bump around the mouth
        shape = self.params.mouth_shape * width * min(1.0, 3.0 * opening)
        rel = (xs - self._mouth_cx) / self._mouth_hw
        bump = np.exp(-(rel**2) / 2.0 - ((ys - self._mouth_cy) / (0.8 * self._mouth_hw)) ** 2)
        src_x = xs - shape * (xs - self._mouth_cx) * bump
        # per-column geometry, looked up where each output pixel comes from
        t = (src_x - self._mouth_cx) / self._mouth_hw
        s_lip = np.clip(1.0 - t * t, 0.0, 1.0) ** 0.7  # the lip drops most mid-mouth
        s_jaw = 1.0 - _smoothstep(
            (np.abs(src_x - self._mouth_cx) - self._mouth_hw) / (self._jaw_hw - self._mouth_hw)
        )
        yl = np.interp(src_x, *self._lip_lower).astype(np.float32)
        lip_th = np.interp(src_x, *self._lip_bottom).astype(np.float32) - yl
        chin = np.interp(src_x, *self._chin_curve).astype(np.float32)

        drop = drop_max * s_lip
        lift = self.params.lip_lift * drop
        jaw = drop_max * s_jaw
        # Vertical displacement d (output y samples source y - d), continuous in y:
        # above the teeth's edge the upper lip lifts a little; in the cavity the source stays on
        # the lower lip's inner edge (covered by the cavity); below, the lower lip moves by
        # `drop`, blending into the rigid jaw drop, which fades out under the chin.
        top = self._lip_top_y
        d_up = -lift * _smoothstep((ys - top) / np.maximum(yl - lift - top, 1.0))
        a = yl + drop + lip_th
        b = np.maximum(chin, a + 1.7 * drop_max)
        d_lo = drop + (jaw - drop) * _smoothstep((ys - a) / np.maximum(b - a, 1.0))
        d_lo *= 1.0 - _smoothstep((ys - chin - jaw) / self._neck_k)
        in_cavity = (ys >= yl - lift) & (ys < yl + drop)
        d = np.where(ys < yl - lift, d_up, np.where(in_cavity, ys - yl, d_lo))

        x0, y0, x1, y1 = self._jaw_rect
        warped = cv2.remap(
            self._src, src_x, ys - d, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        ).astype(np.float32)

        # the cavity, feathered over ~1 px at the lips, shaded darker towards the corners
        height = lift + drop
        u = np.clip((ys - (yl - lift)) / np.maximum(height, 1e-3), 0.0, 1.0)[..., None]
        edge = np.minimum(ys - (yl - lift), yl + drop - ys)
        alpha = np.clip(edge + 0.5, 0.0, 1.0) * np.clip(height / 1.5, 0.0, 1.0)
        colour = _CAVITY_TOP + (_CAVITY_TONGUE - _CAVITY_TOP) * (0.6 * _smoothstep((u - 0.5) / 0.5))
        colour *= (0.55 + 0.45 * s_lip)[..., None]
        if self._teeth > 0.0:
            teeth = self._teeth * (1.0 - _smoothstep((u - 0.2) / 0.15)) * np.clip(height / 4, 0, 1)[..., None]
            colour += (_TEETH * (0.7 + 0.3 * s_lip[..., None]) - colour) * teeth
        a3 = alpha[..., None]
        face[y0:y1, x0:x1] = np.clip(warped + (colour - warped) * a3, 0, 255).astype(np.uint8)

    def _draw_eyelid(self, face: np.ndarray, eye: _Eye, blink: float) -> None:
        ys, yu, gap, open_ = eye.ys, eye.yu, eye.gap, eye.open
        lid = yu + blink * gap  # the upper lid's edge comes down to here
        start = yu - 1.8 * blink * open_  # cover the open eye's lash line too: it moves down
        alpha = np.clip(ys - start + 0.5, 0.0, 1.0) * np.clip(lid - ys + 0.5, 0.0, 1.0)
        lash = np.exp(-(((ys - lid + 0.7) / 0.9) ** 2)) * (blink * open_)
        colour = eye.skin[None] * (1.0 - 0.5 * lash)[..., None]
        x0, y0, x1, y1 = eye.rect
        region = face[y0:y1, x0:x1].astype(np.float32)
        a3 = alpha[..., None]
        face[y0:y1, x0:x1] = (region + (colour - region) * a3 + 0.5).astype(np.uint8)
