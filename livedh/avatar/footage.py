"""The footage stage: the base image of an output frame, before the mouth is rendered on it.

A :class:`FootagePick` outside a transition is one footage frame. During a transition's blend it
names two frames, the one being left (``blend_from``, still playing on) and the one being
reached (``index``), and a weight: both are warped towards the in-between position with optical
flow computed both ways (OpenCV DIS), then cross-faded, so a jump shows as motion rather than as
a double exposure. The face crop box and the blend mask are interpolated by the same weight: the
face in the warped image lies between the two frames' faces, and so must the crop the mouth is
generated in and pasted back to.

Flow is computed on grey, downscaled images (``flow_scale``): the two frames' poses are close by
construction (motion_graph.py's transition rule), so coarse flow suffices, and it keeps a blend
at a few milliseconds on one core (bench/bench_motion_runtime.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from livedh.avatar.motion import FootagePick
from livedh.avatar.video import VideoAvatar
from livedh.errors import InvalidInputError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FootageParams:
    #: OpenCV DIS preset: cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST (0), _FAST (1) or _MEDIUM (2)
    preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
    #: flow is computed at this fraction of the frame size (0 < scale <= 1)
    flow_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.preset not in (0, 1, 2) or not 0.0 < self.flow_scale <= 1.0:
            raise InvalidInputError("footage: preset must be 0, 1 or 2 and 0 < flow_scale <= 1")


@dataclass
class BaseFrame:
    """An output frame's footage: ``image`` a writable RGB uint8 copy, ``box`` the face crop
    ``(x0, y0, x1, y1)``, ``mask`` the blend mask (uint8 ``(h, w)``) or None."""

    image: np.ndarray
    box: Box
    mask: np.ndarray | None


def lerp_box(a: Box, b: Box, alpha: float) -> Box:
    """``a`` moved ``alpha`` of the way to ``b``, rounded to whole pixels."""
    x0, y0, x1, y1 = (round((1.0 - alpha) * p + alpha * q) for p, q in zip(a, b, strict=True))
    return (x0, y0, x1, y1)


class FootageFrames:
    """Base frames of a video avatar for planner picks. Holds one DIS optical-flow object, which
    is not thread-safe: one instance per thread (the lip-sync worker's)."""

    def __init__(self, avatar: VideoAvatar, params: FootageParams | None = None) -> None:
        self.avatar = avatar
        self.params = params or FootageParams()
        self._dis = cv2.DISOpticalFlow.create(self.params.preset)
        self._grid: np.ndarray | None = None  # pixel coordinates of the flow's grid, built on first blend

    def base(self, pick: FootagePick) -> BaseFrame:
        n = self.avatar.frame_count
        frm = pick.blend_from
        if not 0 <= pick.index < n or (frm is not None and not 0 <= frm < n):
            raise InvalidInputError(f"footage pick {pick} outside frames 0..{n - 1}")
        a = self.avatar
        if frm is None or pick.alpha >= 1.0 or frm == pick.index:
            return BaseFrame(a.frame(pick.index).copy(), a.crop_box(pick.index), a.mask(pick.index))
        alpha = float(min(max(pick.alpha, 0.0), 1.0))
        image = self.blend(a.frame(frm), a.frame(pick.index), alpha)
        box = lerp_box(a.crop_box(frm), a.crop_box(pick.index), alpha)
        mask_from, mask_to = a.mask(frm), a.mask(pick.index)
        mask = None
        if mask_from is not None and mask_to is not None:
            mask = cv2.addWeighted(mask_from, 1.0 - alpha, mask_to, alpha, 0.0)
        return BaseFrame(image, box, mask)

    def blend(self, src: np.ndarray, dst: np.ndarray, alpha: float) -> np.ndarray:
        """The in-between image ``alpha`` of the way from ``src`` to ``dst`` (RGB uint8, same size):
        each warped to that position along the flow towards the other, then cross-faded."""
        h, w = src.shape[:2]
        scale = self.params.flow_scale
        small = (max(8, round(w * scale)), max(8, round(h * scale)))
        grid = self._grid_at(small, (w, h))
        flow_sd, flow_ds = self._flows(src, dst, small, (w, h))
        # backward warps: the in-between pixel y came from src at y - alpha * F_sd(y), and from
        # dst at y - (1 - alpha) * F_ds(y) (flow read at y instead of at its source: the flows
        # are small and smooth, which is what a transition edge guarantees)
        from_src = self._warp(src, grid, flow_sd, -alpha)
        from_dst = self._warp(dst, grid, flow_ds, alpha - 1.0)
        return np.asarray(cv2.addWeighted(from_src, 1.0 - alpha, from_dst, alpha, 0.0))

    def _flows(
        self, src: np.ndarray, dst: np.ndarray, small: tuple[int, int], full: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dense flow src -> dst and dst -> src at the ``small`` size, in full-size pixels."""
        grey = []
        for image in (src, dst):
            g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            grey.append(g if small == full else cv2.resize(g, small, interpolation=cv2.INTER_AREA))
        to_full = np.array([full[0] / small[0], full[1] / small[1]], np.float32)
        flows = []
        for a, b in ((grey[0], grey[1]), (grey[1], grey[0])):
            # a fresh zeroed output each time: the two flows must not alias, and garbage in the
            # output array would change the result
            f = np.asarray(self._dis.calc(a, b, np.zeros((small[1], small[0], 2), np.float32)))
            flows.append(f * to_full if small != full else f)
        return flows[0], flows[1]

    def _grid_at(self, small: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
        """``(h, w, 2)`` float32: full-size pixel coordinates of the centres of a ``small`` grid."""
        if self._grid is None or self._grid.shape[:2] != (small[1], small[0]):
            xs = (np.arange(small[0], dtype=np.float32) + 0.5) * (full[0] / small[0]) - 0.5
            ys = (np.arange(small[1], dtype=np.float32) + 0.5) * (full[1] / small[1]) - 0.5
            gx, gy = np.meshgrid(xs, ys)
            self._grid = np.dstack([gx, gy]).astype(np.float32)
        return self._grid

    @staticmethod
    def _warp(image: np.ndarray, grid: np.ndarray, flow: np.ndarray, k: float) -> np.ndarray:
        """``image`` sampled at ``grid + k * flow``; the map is built at the flow's size and resized
        (a smooth field, so that loses nothing and costs a quarter)."""
        h, w = image.shape[:2]
        m = cv2.scaleAdd(flow, k, grid)
        if m.shape[:2] != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        # OpenCV's stubs lack the one-map form (map2 None: map1 holds x and y)
        out = cv2.remap(image, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
        return np.asarray(out)
