"""The contract between a neural mouth generator (Wav2Lip, Ultralight ...) and the compositor.

The compositor (livedh/lipsync/neural.py) cuts face crops out of the avatar's footage and pastes
generated crops back; a generator only maps crops + audio to new crops. Each side can change
without the other: a new network is one new FaceGenerator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FaceGenerator(ABC):
    #: side of the square face crop the network works on (96, 160, 256 ...)
    size: int = 96
    #: 16 kHz samples of audio each frame needs, and how many of them lie after the frame's end
    audio_window: int = 3200
    audio_lookahead: int = 1280
    #: rows of the crop (as fractions of its height, top, bottom) the network regenerates;
    #: the compositor blends only this band back (with feathering)
    mouth_band: tuple[float, float] = (0.5, 1.0)

    @abstractmethod
    def generate(
        self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray
    ) -> np.ndarray:
        """crops, references: uint8 (B, size, size, 3) RGB — the current frame's face and a
        reference face of the same person; audio: float32 (B, audio_window) at 16 kHz.
        Returns uint8 (B, size, size, 3) RGB generated faces. Blocking: runs in the lip-sync
        engine's worker thread."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime. Idempotent."""
