"""Neural lip-sync (Wav2Lip, Ultralight ...): a video avatar's footage with a generated mouth.

For each request: the footage its motion planner picked (``request.footage``: a frame, or a
transition's optical-flow blend with an interpolated face box, avatar/footage.py), else the
footage frame for its index (a ping-pong loop: forward, then backward, so there is no jump at the
loop point); the face crop at that frame's smoothed box, resized to the
generator's size; the reference face is the same crop (as public Wav2Lip real-time inference
does). The generator runs once for the whole batch, which is what makes batching across sessions
pay, and its crops are pasted back with a feathered, colour-matched blend (avatar/compositor.py).

Silence costs nothing: a frame whose audio window is silent skips the network and shows the
footage as it is. So that starting and stopping to speak does not pop (the network's face is
never exactly the footage's), the blend is weighted by how much of the window is speech: the
generated mouth fades in over the few frames in which speech enters the window, and out as it
leaves, and a frame with weight 0 is not sent to the network at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livedh.avatar.compositor import BlendParams, Compositor
from livedh.avatar.footage import BaseFrame, FootageFrames
from livedh.avatar.motion import FootagePick, MotionLibrary
from livedh.avatar.video import VideoAvatar
from livedh.errors import InvalidInputError, LiveDHError
from livedh.lipsync.audio_features import MouthDriveParams, block_rms_db, level_to_opening
from livedh.lipsync.base import LipSyncModel, LipSyncRequest
from livedh.lipsync.generator import FaceGenerator


@dataclass(frozen=True)
class NeuralParams:
    #: 20 ms blocks at or below this level (dBFS) are silence (noise never wakes the network)
    floor_db: float = -50.0
    #: blocks at or above this level count fully as speech (quiet speech already does)
    speech_db: float = -38.0
    #: the generated mouth is fully blended once this (Hann-weighted) fraction of the window is
    #: speech: the fade then takes ~3 frames of a 200 ms window, and a short pause between words
    #: only dims it
    full_at: float = 0.75
    #: a weight below this is silence: network skipped, footage shown as it is
    min_weight: float = 0.01
    blend: BlendParams = field(default_factory=BlendParams)


def ping_pong(index: int, count: int) -> int:
    """Footage frame for session frame ``index`` of a ``count``-frame clip played forward then
    backward: 0, 1, ..., count-1, count-2, ..., 1, 0, 1, ... (the turning frames are not
    repeated, so the motion reverses smoothly)."""
    if count <= 1:
        return 0
    period = 2 * (count - 1)
    k = index % period
    return k if k < count else period - k


def speech_weight(audio: np.ndarray, sample_rate: int, params: NeuralParams) -> float:
    """0..1: how much the generated mouth shows for this audio window. Each 20 ms block's level
    maps linearly (in dB) from floor_db (0) to speech_db (1); the Hann-weighted mean over the
    window (centred on the frame), divided by ``full_at`` and capped at 1. Exactly 0 for
    silence, and it rises and falls over the frames in which speech enters or leaves the window."""
    block = max(2, round(0.02 * sample_rate))
    levels = level_to_opening(
        block_rms_db(audio, block), MouthDriveParams(floor_db=params.floor_db, full_db=params.speech_db)
    )
    n = len(levels)
    weights = np.hanning(n + 2)[1:-1] if n > 1 else np.ones(1)
    return min(1.0, float(np.dot(weights, levels) / weights.sum()) / params.full_at)


class NeuralLipSync(LipSyncModel):
    """Renders a video avatar with a FaceGenerator: ``NeuralLipSync.from_dir(path, generator)``.

    It owns the generator from then on: ``close()`` closes it. ``seed`` is not used: the
    footage itself is the idle motion (blinks, sway).
    """

    def __init__(
        self,
        avatar: VideoAvatar,
        generator: FaceGenerator,
        params: NeuralParams | None = None,
    ) -> None:
        self.avatar = avatar
        self.generator = generator
        self.params = params or NeuralParams()
        self.audio_window = generator.audio_window
        self.audio_lookahead = generator.audio_lookahead
        m = avatar.manifest
        self.fps, self.width, self.height = m.fps, m.width, m.height
        self.mouth_box = m.mouth_box
        self.compositor = Compositor(generator.size, generator.mouth_band, self.params.blend)
        # only the lip-sync worker thread calls infer, so one flow object serves every session
        self.footage = FootageFrames(avatar)
        self.motion: MotionLibrary | None = getattr(avatar, "motion", None)
        self._closed = False

    @classmethod
    def from_dir(
        cls,
        path: Path,
        generator: FaceGenerator,
        params: NeuralParams | None = None,
        *,
        preload: bool = True,
    ) -> NeuralLipSync:
        return cls(VideoAvatar.load(path, preload=preload), generator, params)

    def footage_index(self, frame_index: int) -> int:
        return ping_pong(frame_index, self.avatar.frame_count)

    def speech_weight(self, audio: np.ndarray) -> float:
        return speech_weight(audio, self.sample_rate, self.params)

    def base(self, request: LipSyncRequest) -> BaseFrame:
        """The request's footage: the planner's pick, else the plain loop's frame."""
        pick = request.footage or FootagePick(self.footage_index(request.frame_index))
        return self.footage.base(pick)

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        audio = [self._check_audio(r.audio) for r in batch]
        weights = [self.speech_weight(a) for a in audio]
        bases = [self.base(r) for r in batch]
        frames = [b.image for b in bases]
        active = [j for j, w in enumerate(weights) if w >= self.params.min_weight]
        if not active:
            return frames

        boxes = [bases[j].box for j in active]
        crops = np.stack([self.compositor.cut(frames[j], box) for j, box in zip(active, boxes, strict=True)])
        windows = np.stack([audio[j] for j in active])
        # the reference is the frame's own face, as in Wav2Lip's real-time inference
        generated = self.generator.generate(crops, crops, windows)
        size = self.generator.size
        if (
            not isinstance(generated, np.ndarray)
            or generated.dtype != np.uint8
            or generated.shape != (len(active), size, size, 3)
        ):
            got = (getattr(generated, "shape", None), getattr(generated, "dtype", None))
            raise LiveDHError(
                f"{type(self.generator).__name__}.generate returned {got}, "
                f"expected uint8 {(len(active), size, size, 3)}"
            )
        for n, (j, box) in enumerate(zip(active, boxes, strict=True)):
            self.compositor.paste(
                frames[j],
                box,
                generated[n],
                crops[n],
                region_mask=bases[j].mask,
                weight=weights[j],
            )
        return frames

    def _check_audio(self, audio: np.ndarray) -> np.ndarray:
        a = np.asarray(audio, dtype=np.float32)
        if a.shape != (self.audio_window,):
            raise InvalidInputError(
                f"audio window must be ({self.audio_window},) samples, got shape {a.shape}"
            )
        return a

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.generator.close()
