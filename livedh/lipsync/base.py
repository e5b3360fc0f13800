"""The lip-sync role: one batch hook, ``infer``.

A model turns, for each video frame, a window of speech audio into a full avatar frame (mouth
rendered and composited onto the avatar's idle footage). It knows nothing of WebRTC or sessions:
a request carries everything the model needs, so requests from many sessions can share a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livedh.avatar.motion import FootagePick, MotionLibrary


@dataclass(frozen=True)
class LipSyncRequest:
    """One frame's worth of work.

    frame_index: the frame's index on the session clock (frame i is shown at i / fps seconds);
        models map it onto the avatar's loop of idle footage and use it for blinks/head motion.
    audio: float32 mono samples at ``model.sample_rate`` in [-1, 1]: the ``model.audio_window``
        samples that end ``model.audio_lookahead`` samples after this frame's end. Silence is
        zeros, so an idle frame is a request whose audio is all zeros.
    seed: per-session seed, so two sessions of one avatar do not blink in lockstep.
    footage: the footage frame (or transition blend) a session's motion planner chose for this
        frame; None: the model picks the footage from ``frame_index`` (its plain loop).
    """

    frame_index: int
    audio: np.ndarray
    seed: int = 0
    footage: FootagePick | None = None


class LipSyncModel(ABC):
    """Renders avatar frames (RGB uint8, ``height x width x 3``) from audio windows."""

    fps: int = 25
    sample_rate: int = 16000
    #: samples of audio each request carries
    audio_window: int = 640
    #: samples after the frame's end the window reaches (future context the model needs)
    audio_lookahead: int = 0
    width: int = 512
    height: int = 512
    #: where the mouth is in output frames [x0, y0, x1, y1], for probes and tests
    mouth_box: tuple[int, int, int, int] | None = None
    #: the avatar's motion graph and actions, for per-session motion planners; None: no body motion
    #: beyond the model's own loop
    motion: MotionLibrary | None = None

    @abstractmethod
    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        """Render one frame per request, in order. Called from a worker thread, never from the
        event loop; must be safe to call from one thread at a time."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release model resources. Idempotent."""
