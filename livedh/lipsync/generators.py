"""FaceGenerators for Wav2Lip and Ultralight: crops + audio -> generated crops, through a runtime.

Each builds the network input exactly as the network was trained: OpenCV (BGR) channel order,
floats in [0, 1], the current face masked, and the reference face beside it (Wav2Lip: masked
then reference, lower half zeroed; Ultralight: reference then masked, inner rectangle zeroed).

Audio: each frame gets the 16 mel columns (0.2 s) centred on the frame. The window is
``n_fft + 15 * hop`` = 3800 samples, so every STFT frame of those columns reads real audio (the
same columns a whole-utterance mel would give); centring it on a 640-sample (25 fps) frame puts
(3800 - 640) / 2 = 1580 samples after the frame's end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from livedh.errors import ModelFileError
from livedh.lipsync.generator import FaceGenerator
from livedh.lipsync.mel import MelFrontEnd, MelParams
from livedh.lipsync.nets.ultralight import AUDIO_FEATURES, AUDIO_SHAPES, MASK_RECT, AudioFeatures
from livedh.lipsync.nets.ultralight import SIZE as ULTRALIGHT_SIZE
from livedh.lipsync.nets.wav2lip import MEL_SHAPE
from livedh.lipsync.runtime import FaceRuntime

SAMPLE_RATE = 16000
#: features for one frame from its audio window: float32 (B, audio_window) -> (B, *shape)
FeatureFn = Callable[[np.ndarray], np.ndarray]


def centred_lookahead(window: int, fps: int) -> int:
    """Samples after a frame's end that put the frame at the centre of a ``window``."""
    frame = SAMPLE_RATE // fps
    return max(0, (window - frame) // 2)


def _bgr_planes(images: np.ndarray, out: np.ndarray) -> None:
    """uint8 (B, S, S, 3) RGB -> ``out`` float32 (B, 3, S, S) BGR in [0, 1], in place."""
    out[:] = images.transpose(0, 3, 1, 2)[:, ::-1]
    out *= np.float32(1 / 255)


def _to_rgb_uint8(faces: np.ndarray) -> np.ndarray:
    """float32 (B, 3, S, S) BGR in [0, 1] -> uint8 (B, S, S, 3) RGB (rounded, not truncated as
    the reference inference code does: a half-level brighter on average, no visible change)."""
    scaled = np.clip(faces * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(scaled[:, ::-1].transpose(0, 2, 3, 1))


def _check_runtime(runtime: FaceRuntime, size: int, audio_shape: tuple[int, ...]) -> None:
    """An ONNX model declares its input shapes: refuse one exported for another network now,
    not at the first frame."""
    face_shape = getattr(runtime, "face_shape", None)
    declared_audio = getattr(runtime, "audio_shape", None)
    if face_shape is None or declared_audio is None:
        return
    want_face, want_audio = [6, size, size], list(audio_shape)
    got_face, got_audio = list(face_shape)[1:], list(declared_audio)[1:]
    if got_face != want_face or got_audio != want_audio:
        raise ModelFileError(
            f"the ONNX model takes faces {got_face} and audio {got_audio}; this generator needs "
            f"{want_face} and {want_audio}: export the matching architecture"
        )


def _check_images(
    crops: np.ndarray, references: np.ndarray, audio: np.ndarray, size: int, window: int
) -> None:
    shape = (len(crops), size, size, 3)
    for name, images in (("crops", crops), ("references", references)):
        if images.shape != shape or images.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 {shape}, got {images.dtype} {images.shape}")
    if audio.shape != (len(crops), window):
        raise ValueError(f"audio must be ({len(crops)}, {window}), got {audio.shape}")


class Wav2LipGenerator(FaceGenerator):
    """Wav2Lip (96 or 256) behind a runtime whose network takes (B, 6, S, S) + (B, 1, 80, 16)."""

    mouth_band = (0.5, 1.0)  # the lower half the network sees masked

    def __init__(
        self,
        runtime: FaceRuntime,
        size: int = 96,
        fps: int = 25,
        audio_lookahead: int | None = None,
    ) -> None:
        if size not in (96, 256):
            raise ValueError(f"Wav2Lip crops are 96 or 256 pixels, got {size}")
        _check_runtime(runtime, size, MEL_SHAPE)
        self.runtime = runtime
        self.size = size
        self._mel = MelFrontEnd()
        self.audio_window = self._mel.window_samples
        #: override to shift lip timing (e.g. later audio for a mouth that leads the voice)
        self.audio_lookahead = (
            centred_lookahead(self.audio_window, fps) if audio_lookahead is None else audio_lookahead
        )

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        _check_images(crops, references, audio, self.size, self.audio_window)
        n, s = len(crops), self.size
        faces = np.empty((n, 6, s, s), dtype=np.float32)
        _bgr_planes(crops, faces[:, 0:3])
        faces[:, 0:3, s // 2 :] = 0.0  # the mouth half the network must fill in
        _bgr_planes(references, faces[:, 3:6])
        return _to_rgb_uint8(self.runtime.run(faces, self._mel.windows(audio)))

    def close(self) -> None:
        self.runtime.close()


class UltralightGenerator(FaceGenerator):
    """Ultralight (160) behind a runtime. ``audio_features`` names the network's front-end:
    ``mel`` is computed here; for ``hubert``/``wenet`` pass ``features`` (your extractor, from
    the raw window to the per-frame feature block) and the ``audio_window`` it needs."""

    size = ULTRALIGHT_SIZE
    # rows the network regenerates: its masked rectangle (rows 5..150 of 160)
    mouth_band = (MASK_RECT[0] / ULTRALIGHT_SIZE, MASK_RECT[1] / ULTRALIGHT_SIZE)

    def __init__(
        self,
        runtime: FaceRuntime,
        audio_features: AudioFeatures = "mel",
        features: FeatureFn | None = None,
        audio_window: int | None = None,
        audio_lookahead: int | None = None,
        fps: int = 25,
    ) -> None:
        if audio_features not in AUDIO_FEATURES:
            raise ValueError(f"unknown audio_features {audio_features!r}; choose one of {AUDIO_FEATURES}")
        _check_runtime(runtime, ULTRALIGHT_SIZE, AUDIO_SHAPES[audio_features])
        self.runtime = runtime
        self.audio_features = audio_features
        self._feature_shape = AUDIO_SHAPES[audio_features]
        self._features: FeatureFn
        if audio_features == "mel":
            if features is not None or audio_window is not None:
                raise ValueError("the mel front-end is built in: pass neither features nor audio_window")
            self._features = MelFrontEnd().windows
            self.audio_window = MelParams().window_samples
        else:
            if features is None or audio_window is None:
                raise ValueError(f"{audio_features} features need a features function and its audio_window")
            self._features = features
            self.audio_window = audio_window
        self.audio_lookahead = (
            centred_lookahead(self.audio_window, fps) if audio_lookahead is None else audio_lookahead
        )

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        _check_images(crops, references, audio, self.size, self.audio_window)
        n, s = len(crops), self.size
        top, bottom, left, right = MASK_RECT
        faces = np.empty((n, 6, s, s), dtype=np.float32)
        _bgr_planes(references, faces[:, 0:3])
        _bgr_planes(crops, faces[:, 3:6])
        faces[:, 3:6, top:bottom, left:right] = 0.0
        feats = np.ascontiguousarray(self._features(audio), dtype=np.float32)
        if feats.shape != (n, *self._feature_shape):
            raise ValueError(
                f"{self.audio_features} features must be {(n, *self._feature_shape)}, got {feats.shape}"
            )
        return _to_rgb_uint8(self.runtime.run(faces, feats))

    def close(self) -> None:
        self.runtime.close()
