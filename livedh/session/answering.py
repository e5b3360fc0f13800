"""The answering stage of a session: a question (typed, or a voice turn transcribed) -> the LLM
-> sentences for the speaker, as the answer streams.

The chat history keeps only what was heard: an interrupted answer is recorded as far as it was
spoken, and a held voice turn's exchange waits with the turn (``HeldTurn.record``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine

import numpy as np

from livedh.errors import LiveDHError, NotConfiguredError, ProviderError
from livedh.llm.base import ChatLLM
from livedh.llm.history import ChatHistory
from livedh.llm.sentences import split_sentences
from livedh.logs import log_event
from livedh.metrics import Metrics
from livedh.session.hearing import Hearing
from livedh.session.speaking import Speaker
from livedh.session.state import Utterance

logger = logging.getLogger(__name__)

#: spoken when the LLM fails (the page also gets the error event)
_APOLOGY = "Sorry, I could not get an answer just now."


class Answerer:
    """Owns the chat task and the count of voice turns being transcribed. Callbacks into the
    session: ``utterance(text, spoken_log)`` (text -> what the speaker takes, None when nothing
    is left), ``interrupt()`` (barge-in), ``set_state(state)``, ``stop_thinking()`` (back to
    listening if still thinking), ``record_error(exc, where)``; ``spawn(coro, role)`` starts a
    child task of the session."""

    def __init__(
        self,
        sessionid: int,
        llm: ChatLLM | None,
        history: ChatHistory | None,
        speaker: Speaker,
        metrics: Metrics,
        *,
        spawn: Callable[[Coroutine[object, object, None], str], asyncio.Task[None]],
        utterance: Callable[[str, list[str] | None], Utterance | None],
        interrupt: Callable[[], None],
        set_state: Callable[[str], None],
        stop_thinking: Callable[[], None],
        record_error: Callable[[BaseException, str], None],
    ) -> None:
        self._id = sessionid
        self.llm = llm
        self.history = history
        self._speaker = speaker
        self._metrics = metrics
        self._spawn = spawn
        self._utterance = utterance
        self._interrupt = interrupt
        self._set_state = set_state
        self._stop_thinking = stop_thinking
        self._record_error = record_error
        self.chat_task: asyncio.Task[None] | None = None
        #: turns being transcribed, up to the moment their answer starts (the chat task)
        self.turns_in_progress = 0

    @property
    def busy(self) -> bool:
        """An answer is being asked for (its sentences go to the speaker as they come)."""
        return self.chat_task is not None and not self.chat_task.done()

    def check_configured(self) -> None:
        if self.llm is None or self.history is None:
            raise NotConfiguredError(
                "chat mode needs an LLM endpoint: start the server with --llm-base-url "
                "(or set LIVEDH_LLM_BASE_URL / OPENAI_BASE_URL), or use echo mode"
            )

    def start(self, text: str) -> None:
        """Answer ``text`` (check_configured first)."""
        if self.busy:
            # A new question while answering: the newer one wins, like a person interrupting.
            self._interrupt()
        self.chat_task = self._spawn(self._chat(text, self._speaker.generation), "chat")

    def cancel(self) -> None:
        if self.chat_task is not None:
            self.chat_task.cancel()
        self.chat_task = None

    async def _chat(self, text: str, generation: int) -> None:
        assert self.llm is not None and self.history is not None
        history = self.history
        # The history keeps only what was heard: a held answer's exchange waits with it.
        held = self._speaker.held
        record = held.record if held is not None else _now
        log_event(logger, "chat_start", self._id, chars=len(text))
        self._set_state("thinking")
        answer: list[str] = []
        spoken: list[str] = []  # filled by the speaker as sentences start playing
        voiced = False  # an answer of action tags alone never speaks
        try:
            deltas = self._metrics.timed_llm(self.llm.stream(history.messages_for(text)))
            # aclosing: a barge-in closes the HTTP stream now, not when garbage-collected.
            async with contextlib.aclosing(split_sentences(deltas)) as sentences:
                async for sentence in sentences:
                    if generation != self._speaker.generation:
                        break
                    utterance = self._utterance(sentence, spoken)
                    if utterance is None:
                        continue
                    answer.append(sentence)
                    voiced = voiced or utterance.text is not None
                    self._speaker.enqueue(utterance)
        except asyncio.CancelledError:
            # Interrupted: the history keeps what the person actually heard.
            record(lambda: history.add_partial(text, " ".join(spoken)))
            raise
        except LiveDHError as exc:
            self._chat_failed(exc, generation)
        except Exception:  # a ChatLLM bug must not leave the page "thinking"
            logger.exception("chat failed")
            self._chat_failed(ProviderError("the chat model failed", retryable=False), generation)
        else:
            if not voiced:
                self._stop_thinking()  # nothing to say (blanks, markup or tags only)
        record(lambda: history.add_exchange(text, " ".join(answer)))
        log_event(logger, "chat_end", self._id, sentences=len(answer))

    def _chat_failed(self, error: LiveDHError, generation: int) -> None:
        """The page gets an error event, the person a short apology, and the avatar stops
        thinking (it shows as speaking while the apology, or an answer's start, plays)."""
        self._record_error(error, "llm")
        if generation != self._speaker.generation:
            return  # interrupted meanwhile: a newer request owns the state
        self._stop_thinking()
        apology = self._utterance(_APOLOGY, None)
        # A full queue or a closed session: the error event is enough.
        with contextlib.suppress(LiveDHError):
            if apology is not None:
                self._speaker.enqueue(apology)

    # -- voice turns ------------------------------------------------------------------------
    async def partial(self, audio: np.ndarray, language: str | None, hearing: Hearing) -> None:
        """A transcript of the turn so far, for the page."""
        try:
            transcript = await hearing.asr.atranscribe(audio, language, partial=True)
        except LiveDHError:
            return  # a lost partial is harmless; the final one reports errors
        if transcript.text.strip():
            self._speaker.send(
                {"type": "transcript", "final": False, "text": transcript.text.strip()}
            )

    async def answer_turn(self, audio: np.ndarray, language: str | None,
                          hearing: Hearing) -> None:
        self.turns_in_progress += 1
        try:
            await self.transcribe_and_answer(audio, language, hearing)
        finally:
            self.turns_in_progress -= 1

    async def transcribe_and_answer(self, audio: np.ndarray, language: str | None,
                                    hearing: Hearing) -> None:
        started = time.monotonic()
        try:
            transcript = await hearing.asr.atranscribe(audio, language)
        except LiveDHError as exc:
            self._record_error(exc, "asr")
            return
        self._metrics.asr.observe(time.monotonic() - started)
        text = transcript.text.strip()
        log_event(logger, "transcript", self._id, chars=len(text),
                  asr_ms=round((time.monotonic() - started) * 1000),
                  language=transcript.language)
        if not text:
            return
        self._speaker.send({"type": "transcript", "final": True, "text": text})
        try:
            self.check_configured()
        except LiveDHError as exc:
            self._record_error(exc, "chat")
            return
        held = self._speaker.held
        if held is not None and not getattr(self.llm, "local", False):
            # A remote LLM costs per request: ask it only once the turn has really ended.
            await held.ended.wait()
        self.start(text)

    def detach(self) -> None:
        """The session is closed: drop the callbacks into it (see Speaker.detach)."""
        self.chat_task = None
        self._utterance = _no_utterance
        self._interrupt = self._stop_thinking = _ignore
        self._set_state = self._record_error = _ignore


def _now(update: Callable[[], None]) -> None:
    update()


def _ignore(*args: object) -> None:
    """The sink of a detached answerer's callbacks."""


def _no_utterance(text: str, spoken_log: list[str] | None) -> Utterance | None:
    return None
