"""The ASR role: one blocking hook, ``transcribe``, and an async wrapper that runs it in the
engine's own worker threads."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from livedh.errors import InvalidInputError, ProviderError
from livedh.media.threads import lower_thread_priority

_T = TypeVar("_T")

#: What engines take: mono int16 at 16 kHz, the session's internal format.
ASR_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Segment:
    """A stretch of the transcript; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    #: the language spoken (detected when none was asked for); None when unknown
    language: str | None
    segments: tuple[Segment, ...] = ()
    #: seconds of audio transcribed
    duration: float = 0.0
    #: made by the cheap partial path (may change when the turn's final transcript comes)
    partial: bool = False


def check_audio(audio: np.ndarray) -> None:
    """Raise InvalidInputError unless ``audio`` is what engines take."""
    if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or audio.ndim != 1:
        raise InvalidInputError("ASR audio must be a 1-D int16 array (16 kHz mono)")


def _closed_error() -> ProviderError:
    return ProviderError("the ASR engine is closed (the server is shutting down)", retryable=False)


class ASREngine(ABC):
    """A speech recognizer, shared by sessions.

    ``transcribe`` blocks (it is called in a worker thread, never on the event loop); sessions
    call ``atranscribe``, which runs it on the engine's own executor ("livedh-asr" threads), so
    recognition never competes with other roles' executors for a thread.

    Partials: transcribing the audio of a turn so far *is* how partial transcripts are made;
    ``partial=True`` asks for the engine's cheap path (e.g. greedy decoding, no timestamps). A
    session should have at most one partial in flight and skip a tick while it runs, or the
    queue outgrows the turn.
    """

    name: str = "base"

    def __init__(self, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="livedh-asr", initializer=lower_thread_priority
        )
        self._jobs: set[Future[Any]] = set()
        self._closed = threading.Event()

    @abstractmethod
    def transcribe(
        self, audio: np.ndarray, language: str | None = None, *, partial: bool = False
    ) -> Transcript:
        """Transcribe 16 kHz mono int16 ``audio`` (blocking).

        language: a language code ("en", "zh", ...); None or "auto" uses the engine's default.
        """

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load models now (blocking), so the first turn does not pay for it."""

    async def warmup(self) -> None:
        await self._run(self.load)

    async def atranscribe(
        self, audio: np.ndarray, language: str | None = None, *, partial: bool = False
    ) -> Transcript:
        """``transcribe`` on the engine's worker threads; the event loop keeps running.

        Cancelling the awaiting task drops the job if it has not started yet.
        """
        check_audio(audio)
        return await self._run(lambda: self.transcribe(audio, language, partial=partial))

    async def _run(self, work: Callable[[], _T]) -> _T:
        if self._closed.is_set():
            raise _closed_error()
        job = self._executor.submit(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # aclose dropped the queued job: tell the caller why, instead of a bare cancel.
            if job.cancelled() and task is not None and not task.cancelling():
                raise _closed_error() from None
            raise

    async def aclose(self) -> None:
        """Drop queued jobs, wait for running ones, release the threads. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*(asyncio.wrap_future(job) for job in tuple(self._jobs)), return_exceptions=True)
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release model resources (called by ``aclose`` once no job runs)."""
