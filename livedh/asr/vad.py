"""Silero voice activity detection, streamed in 32 ms steps.

One :class:`SileroVADModel` (an onnxruntime session, ~2 MB) is shared by every session: its
``run`` is thread-safe and keeps no state. Each audio stream gets its own cheap
:class:`SileroVAD` (the model's recurrent state, 64 samples of context, the hysteresis flag).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from livedh.errors import InvalidInputError, MissingDependencyError, ModelFileError

if TYPE_CHECKING:
    import onnxruntime

#: The model runs at 16 kHz on 512-sample windows (32 ms), each preceded by the previous
#: window's last 64 samples (the context the model was trained with).
VAD_SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
FRAME_SECONDS = FRAME_SAMPLES / VAD_SAMPLE_RATE
_CONTEXT_SAMPLES = 64

_INSTALL_HINT = "install silero-vad (pip install 'silero-vad>=6'), or pass the .onnx file's path"


def packaged_model_path() -> Path:
    """The ONNX model inside the silero-vad wheel.

    Found without importing ``silero_vad``: its ``__init__`` imports torch, which the ONNX path
    does not need (and which costs seconds at start-up).
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the silero VAD model is not installed; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise ModelFileError(f"the silero VAD model {path} is missing; {_INSTALL_HINT}")
    return path


def to_float(samples: np.ndarray) -> np.ndarray:
    """1-D int16 or float (already in [-1, 1]) audio as float32 in [-1, 1]."""
    if samples.ndim != 1:
        raise InvalidInputError("VAD audio must be a 1-D (mono) array")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise InvalidInputError(f"VAD audio must be int16 or float, not {samples.dtype}")


class SileroVADModel:
    """The shared, stateless half: an onnxruntime session of the silero VAD model."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1) -> SileroVADModel:
        """Load the model (tens of milliseconds; do it once at start-up, not per session).

        One intra-op thread: a 32 ms step is ~0.1 ms of work, too small to split across cores,
        and sessions then run their VADs side by side without oversubscribing the CPU.
        """
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime") from exc
        path = path if path is not None else packaged_model_path()
        if not path.is_file():
            raise ModelFileError(f"the silero VAD model {path} is missing; {_INSTALL_HINT}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelFileError(f"{path} is not a loadable silero VAD model: {exc}") from exc
        return cls(session)

    def run(self, windows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step for a batch of streams.

        windows: float32 (batch, 64 + 512), context then new samples; state: float32
        (2, batch, 128). Returns the speech probabilities (batch,) and the next state.
        """
        prob, new_state = self._session.run(
            None,
            {"input": windows, "state": state, "sr": np.array(VAD_SAMPLE_RATE, dtype=np.int64)},
        )
        return np.asarray(prob, dtype=np.float32).reshape(-1), np.asarray(new_state)

    def stream(self, config: VADConfig | None = None) -> SileroVAD:
        """A fresh per-stream detector sharing this model."""
        return SileroVAD(self, config or VADConfig())


@dataclass(frozen=True)
class VADConfig:
    #: probability at which a silent stream turns voiced ...
    on_threshold: float = 0.5
    #: ... and below which a voiced one turns silent again. The gap (hysteresis) keeps the
    #: flag from flickering inside words, where the probability dips for a frame or two.
    off_threshold: float = 0.35

    def __post_init__(self) -> None:
        if not 0.0 <= self.off_threshold <= self.on_threshold <= 1.0:
            raise ValueError("VADConfig needs 0 <= off_threshold <= on_threshold <= 1")


@dataclass(frozen=True)
class VADFrame:
    """One 32 ms step of one stream."""

    #: stream time of the frame's first sample, in seconds since the stream began
    start: float
    #: the model's speech probability
    prob: float
    #: the hysteresis decision
    speech: bool
    #: the frame's samples, float32 in [-1, 1]
    samples: np.ndarray = field(repr=False)

    @property
    def end(self) -> float:
        return self.start + FRAME_SECONDS

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))


class Hysteresis:
    """The voiced/silent flag of one stream, from per-frame speech probabilities."""

    def __init__(self, config: VADConfig) -> None:
        self.config = config
        self.speaking = False

    def update(self, prob: float, on_threshold: float | None = None) -> bool:
        """Step with one frame's probability; ``on_threshold`` overrides the configured one."""
        on = self.config.on_threshold if on_threshold is None else on_threshold
        # Keep off <= on even when ``on`` is overridden below the configured off threshold.
        off = min(self.config.off_threshold, on)
        self.speaking = prob >= (off if self.speaking else on)
        return self.speaking


class SileroVAD:
    """Streaming VAD state for one audio stream: feed any chunk size, get 32 ms frames back.

    Not thread-safe (one stream, one caller); many of these may share one model across threads.
    """

    def __init__(self, model: SileroVADModel, config: VADConfig | None = None) -> None:
        self.model = model
        self.config = config or VADConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new call, or a resumed one after a gap)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames = 0
        self._hysteresis = Hysteresis(self.config)

    @property
    def speaking(self) -> bool:
        return self._hysteresis.speaking

    @property
    def time(self) -> float:
        """Stream seconds classified so far (samples waiting for a full frame excluded)."""
        return self._frames * FRAME_SECONDS

    def push(self, samples: np.ndarray) -> list[VADFrame]:
        """Classify 16 kHz mono audio (int16, or float in [-1, 1]) of any length.

        Samples short of a whole frame wait for the next call.
        """
        audio = to_float(samples)
        if len(self._pending):
            audio = np.concatenate([self._pending, audio])
        whole = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = audio[whole:].copy()
        frames: list[VADFrame] = []
        for offset in range(0, whole, FRAME_SAMPLES):
            frame = audio[offset : offset + FRAME_SAMPLES]
            window = np.concatenate([self._context, frame]).reshape(1, -1)
            probs, self._state = self.model.run(window, self._state)
            self._context = frame[-_CONTEXT_SAMPLES:]
            prob = float(probs[0])
            frames.append(VADFrame(self.time, prob, self._hysteresis.update(prob), frame))
            self._frames += 1
        return frames
