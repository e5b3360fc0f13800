"""Paste-back: a generated face crop into the full frame, without a seam or a colour step.

Pasting a generated crop as a rectangle shows its edge (LiveTalking issue #345): the network's
colours and sharpness differ a little from the footage. So only the generator's mouth band is
blended, through a mask that fades to zero over ``feather`` of the crop at every edge of the band
(so also at the crop's border), and the generated pixels first get a smooth colour correction
(a plane per channel: offset and gradient) fitted where the mask fades: there generated and
original should agree, so whatever differs there is the network's colour cast, and removing it
removes the step. Being that smooth, it never touches the mouth's own detail.

All work is on the crop (at the generator's size for the colour fit, at the box's size for the
blend), never on the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from livedh.errors import InvalidInputError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class BlendParams:
    #: width of the soft edge as a fraction of the crop's side (0: a hard rectangle)
    feather: float = 0.1
    #: correct the generated crop's colour to the footage's where the mask fades
    colour_match: bool = True
    #: seam differences further than this (levels) from a first fit are content the network
    #: changed (a dropped chin), not colour cast: they are clamped before the final fit
    colour_clamp: float = 12.0


def _ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """0 at distance <= 0, 1 at distance >= width, smoothstep between (a step if width is 0)."""
    if width <= 0:
        return (distance > 0).astype(np.float32)
    x = np.clip(distance / width, 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def band_mask(size: int, band: tuple[float, float], feather: float) -> np.ndarray:
    """``(size, size)`` float32 alpha of a generator's mouth band: 1 inside it, fading to 0 over
    ``feather * size`` pixels inside each of its edges (top and bottom of the band, left and
    right of the crop), 0 outside it."""
    top, bottom = band
    if not 0.0 <= top < bottom <= 1.0:
        raise InvalidInputError(f"mouth band must be 0 <= top < bottom <= 1, got {band}")
    if feather < 0:
        raise InvalidInputError(f"feather must be >= 0, got {feather}")
    centres = np.arange(size, dtype=np.float32) + 0.5
    width = feather * size
    rows = _ramp(centres - top * size, width) * _ramp(bottom * size - centres, width)
    cols = _ramp(centres, width) * _ramp(size - centres, width)
    return np.outer(rows, cols).astype(np.float32)


class Compositor:
    """Cuts face crops for a generator and pastes its output back. One per generator (crop size
    and mouth band); the band's masks are computed once per box size. Not thread-safe (one
    lip-sync worker thread uses it)."""

    def __init__(self, size: int, band: tuple[float, float], params: BlendParams | None = None) -> None:
        if size < 8:
            raise InvalidInputError(f"crop size must be >= 8, got {size}")
        self.size = size
        self.band = band
        self.params = params or BlendParams()
        self.mask = band_mask(size, band, self.params.feather)
        # (1, x, y) per crop pixel, x and y in [-1, 1]: the colour fit's plane
        axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        gx, gy = np.meshgrid(axis, axis)
        self._basis = np.stack([np.ones_like(gx), gx, gy], axis=-1).reshape(-1, 3)
        self._box_masks: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}

    def cut(self, frame: np.ndarray, box: Box) -> np.ndarray:
        """The crop ``box`` of ``frame`` at the generator's size, uint8 ``(size, size, 3)``."""
        x0, y0, x1, y1 = box
        region = frame[y0:y1, x0:x1]
        if region.shape[0] < 2 or region.shape[1] < 2:
            raise InvalidInputError(f"crop box {box} is empty in a {frame.shape[1]}x{frame.shape[0]} frame")
        # area averaging when shrinking, so the network does not see aliasing
        interp = cv2.INTER_AREA if region.shape[0] > self.size else cv2.INTER_LINEAR
        return np.ascontiguousarray(cv2.resize(region, (self.size, self.size), interpolation=interp))

    def paste(
        self,
        frame: np.ndarray,
        box: Box,
        generated: np.ndarray,
        original: np.ndarray,
        *,
        region_mask: np.ndarray | None = None,
        weight: float = 1.0,
    ) -> None:
        """Blends ``generated`` (uint8 ``(size, size, 3)``) into ``frame`` at ``box``, in place.

        ``original`` is the crop the generator was given (``cut(frame, box)``), used for the
        colour fit. ``region_mask``: optional uint8 frame-sized mask (the avatar's masks/),
        multiplied into the band mask. ``weight`` (0..1) scales the whole blend: the
        cross-fade between footage and generated mouth as speech starts and stops.
        """
        if weight <= 0.0:
            return
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        alpha_small = self.mask
        alpha_box_rows = self._box_mask(bw, bh)
        r0, r1, alpha = alpha_box_rows
        if r1 <= r0:
            return
        if region_mask is not None:
            crop_mask = region_mask[y0:y1, x0:x1]
            alpha = alpha * (crop_mask[r0:r1].astype(np.float32) * (1.0 / 255.0))
            small = cv2.resize(crop_mask, (self.size, self.size), interpolation=cv2.INTER_AREA)
            alpha_small = alpha_small * (small.astype(np.float32) * (1.0 / 255.0))
        if weight < 1.0:
            alpha = alpha * np.float32(weight)

        gen = generated.astype(np.float32)
        if self.params.colour_match:
            gen += self.colour_correction(original, generated, alpha_small)
        up = cv2.resize(gen, (bw, bh), interpolation=cv2.INTER_CUBIC)[r0:r1]
        target = frame[y0 + r0 : y0 + r1, x0:x1]
        region = target.astype(np.float32)
        region += alpha[..., None] * (up - region)
        target[...] = np.clip(region + 0.5, 0, 255).astype(np.uint8)

    def colour_correction(
        self, original: np.ndarray, generated: np.ndarray, alpha: np.ndarray
    ) -> np.ndarray:
        """Float32 ``(size, size, 3)`` offset that makes ``generated`` match ``original`` where
        ``alpha`` fades (weight 4a(1-a): where a seam would show). Per channel a plane (offset
        plus a linear gradient: a colour cast and the network's lighting drift, nothing finer)
        fitted by weighted least squares, twice: the second fit clamps each difference to within
        ``colour_clamp`` of the first, so the few pixels the network really changed there (a
        dropped chin) do not tint the rest."""
        w = (4.0 * alpha * (1.0 - alpha)).ravel()
        on = w > 1e-3
        if int(on.sum()) < 3:
            return np.zeros((self.size, self.size, 3), np.float32)
        sw = np.sqrt(w[on])[:, None]
        basis = self._basis[on] * sw
        diff = (original.astype(np.float32) - generated.astype(np.float32)).reshape(-1, 3)[on]

        def fit(d: np.ndarray) -> np.ndarray:
            coef = np.linalg.lstsq(basis, d * sw, rcond=1e-6)[0]
            return coef.astype(np.float32)  # (3 terms, 3 channels)

        first = fit(diff)
        clamp = self.params.colour_clamp
        near = self._basis[on] @ first
        coef = fit(np.clip(diff, near - clamp, near + clamp))
        return (self._basis @ coef).reshape(self.size, self.size, 3)

    def _box_mask(self, bw: int, bh: int) -> tuple[int, int, np.ndarray]:
        """The band mask at box size, cropped to the rows where it is non-zero (the rest of the
        box is never touched): (first row, end row, alpha rows)."""
        cached = self._box_masks.get((bw, bh))
        if cached is None:
            full = cv2.resize(self.mask, (bw, bh), interpolation=cv2.INTER_LINEAR)
            rows = np.flatnonzero(full.max(axis=1) > 0)
            r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
            cached = (r0, r1, np.ascontiguousarray(full[r0:r1]))
            if len(self._box_masks) > 64:  # boxes vary by a few pixels; bound the cache anyway
                self._box_masks.clear()
            self._box_masks[(bw, bh)] = cached
        return cached
