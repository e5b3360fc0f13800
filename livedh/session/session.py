"""A session: one person talking to one avatar.

A thin composition of stages, each in its own module with its own state: hearing (the
microphone -> voice turns, ``_hear`` here), answering (a question -> the LLM -> sentences, the
``Answerer`` in answering.py), speaking (text -> TTS -> playout buffer, the ``Speaker`` in
speaking.py) and rendering (playout -> lip-sync -> AV channel, the ``Renderer`` in rendering.py).
It owns every task they start, and closes them all in an idempotent ``aclose``. Barge-in is one
call, ``interrupt``, that clears every buffer down the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from livedh.asr.turns import (
    EndOfTurn,
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnDetector,
    TurnEvent,
)
from livedh.config import SessionConfig
from livedh.errors import InvalidInputError, LiveDHError
from livedh.lipsync.engine import LipSyncEngine
from livedh.llm.base import ChatLLM
from livedh.llm.history import ChatHistory
from livedh.logs import log_event
from livedh.media.channel import AVChannel
from livedh.media.clock import MediaClock
from livedh.media.memory import trim_heap
from livedh.media.pcm import SESSION_SAMPLE_RATE
from livedh.metrics import Metrics
from livedh.session.answering import Answerer
from livedh.session.hearing import Hearing
from livedh.session.motion import take_action_tags
from livedh.session.playout import PlayoutBuffer
from livedh.session.rendering import Renderer
from livedh.session.speaking import Speaker
from livedh.session.state import ChildTasks, SessionState, Transport, Utterance
from livedh.tts.base import TTSEngine

logger = logging.getLogger(__name__)

#: seconds of silence after which no partial transcript starts (see _hear)
_PARTIAL_QUIET = 0.1


class Session:
    def __init__(
        self,
        sessionid: int,
        config: SessionConfig,
        lipsync: LipSyncEngine,
        tts: TTSEngine,
        *,
        voice: str | None = None,
        llm: ChatLLM | None = None,
        history: ChatHistory | None = None,
        seed: int | None = None,
        hearing: Hearing | None = None,
        metrics: Metrics | None = None,
        clock: MediaClock | None = None,
    ) -> None:
        self.id = sessionid
        self._metrics = metrics if metrics is not None else Metrics()
        self.config = config
        self.lipsync = lipsync
        self.tts = tts
        self.voice = voice
        self._hearing = hearing
        #: sends an event (transcripts, subtitles, state) to the client; set by the transport
        self.emit: Callable[[dict[str, Any]], object] = lambda event: None
        self._state = "listening"
        self.seed = seed if seed is not None else sessionid
        model = lipsync.model
        if model.sample_rate != SESSION_SAMPLE_RATE:
            raise ValueError("lip-sync models take 16 kHz audio")
        self.fps = config.fps
        # Paces the stream; also the time the hearing and held turns are timed by (a test's
        # clock makes them independent of the machine's load).
        self.clock = clock if clock is not None else MediaClock()
        self.channel = AVChannel(self.clock, self.fps, SESSION_SAMPLE_RATE,
                                 video_format=lipsync.output_format)
        self.channel.on_lateness = self._metrics.frame_lateness.observe
        self.playout = PlayoutBuffer(model.audio_window)
        self.connection = "new"
        self.transport: Transport | None = None
        self.errors: deque[dict[str, object]] = deque(maxlen=10)
        self._created = time.monotonic()
        self._children = ChildTasks(sessionid)
        self._child = self._children.spawn
        self._renderer = Renderer(
            sessionid, config, self.clock, self.channel, self.playout, lipsync, self.seed,
            on_speech_edge=self._speech_edge, on_error=self.record_error,
        )
        self._speaker = Speaker(
            sessionid, config, self.clock, self.playout, self._renderer, self._metrics,
            spawn=self._child, emit=lambda event: self.emit(event), on_failed=self._speech_failed,
        )
        self._answering = Answerer(
            sessionid, llm, history, self._speaker, self._metrics, spawn=self._child,
            utterance=self._utterance, interrupt=self.interrupt, set_state=self._set_state,
            stop_thinking=self._stop_thinking, record_error=self.record_error,
        )
        self._closed = False
        self._tasks = [
            asyncio.create_task(self._speaker.run(), name=f"session-{sessionid}-speaker"),
            asyncio.create_task(self._renderer.run(), name=f"session-{sessionid}-render"),
        ]

    # -- public API -----------------------------------------------------------------------
    def say(self, text: str, *, interrupt: bool = False) -> None:
        """Speak ``text`` (echo mode)."""
        text = self._check_text(text)
        utterance = self._utterance(text)
        if interrupt:
            self.interrupt()
        self._drop_held("request")
        if utterance is None:
            return  # only tags that name no action
        self._speaker.check_queued_chars(len(utterance.text or ""))
        self._speaker.enqueue(utterance)

    @property
    def actions(self) -> list[str]:
        """The avatar's actions (empty when it has no motion graph)."""
        return self._renderer.actions

    def play_action(self, name: str) -> None:
        """Play action ``name`` now (InvalidInputError for a name the avatar has not)."""
        self._renderer.play_action(name)

    def stop_action(self) -> None:
        """Back to the plain motion (LiveTalking's audiotype 0/1): the body replans."""
        self._renderer.interrupt()

    def _utterance(self, text: str, spoken_log: list[str] | None = None) -> Utterance | None:
        """Text to speak, its action tags taken out (they play as it starts; see BodyMotion);
        None when nothing is left to do."""
        spoken, actions = take_action_tags(self.id, text, self.actions)
        if spoken is None and not actions:
            return None
        return Utterance(text=spoken, engine=self.tts, voice=self.voice, actions=actions,
                         spoken_log=spoken_log)

    def play_audio(self, samples: np.ndarray, *, interrupt: bool = False) -> None:
        """Speak an uploaded recording (int16 mono at 16 kHz)."""
        if interrupt:
            self.interrupt()
        self._drop_held("request")
        self._speaker.enqueue(Utterance(pcm=samples))

    async def chat(self, text: str, *, interrupt: bool = False) -> None:
        """Answer ``text`` through the LLM, speaking sentence by sentence as it streams."""
        text = self._check_text(text)
        self._answering.check_configured()
        if interrupt:
            self.interrupt()
        self._drop_held("request")
        self._answering.start(text)

    def attach_microphone(self, microphone: AsyncIterator[np.ndarray]) -> None:
        """Hear the person: 16 kHz mono int16 chunks -> turns -> transcripts -> answers."""
        if self._hearing is None:
            log_event(logger, "mic_ignored", self.id, reason="speech recognition is off")
            return
        self._child(self._hear(microphone, self._hearing), "hear")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._send({"type": "state", "state": state})

    def _stop_thinking(self) -> None:
        """An answer that will not be spoken: the page must not wait on "thinking" forever."""
        if self._state == "thinking":
            self._set_state("listening")

    def _send(self, event: dict[str, Any]) -> None:
        """Every event for the page goes through the speaker, so a held turn can hold its own."""
        self._speaker.send(event)

    def _stop_answer(self) -> int:
        """Cancel the answer being made (LLM stream, queued sentences, synthesis); returns
        the number of utterances dropped from the queue."""
        self._answering.cancel()
        return self._speaker.stop()

    def _drop_held(self, reason: str) -> None:
        """The person went on talking (or a newer request came): forget the held answer and
        stop what it was making."""
        held = self._speaker.forget_held(reason)
        if held is None:
            return
        self._stop_answer()
        if held.scheduled:
            # Nothing else plays while a turn is held (see _hear): all of it is this answer's.
            self.playout.clear()
            self.channel.silence_pending_audio()
            self._renderer.interrupt()
        self._set_state("listening")

    def interrupt(self) -> None:
        """Barge-in: stop the current speech everywhere in the pipeline."""
        # The held answer's speech is stopped and counted below with everything else.
        self._speaker.forget_held("interrupt")
        dropped = self._stop_answer()
        pending_samples = len(self.playout)
        self.playout.clear()
        silenced = self.channel.silence_pending_audio()
        self._renderer.interrupt()
        log_event(
            logger, "interrupt", self.id, dropped_utterances=dropped,
            dropped_samples=pending_samples, silenced_blocks=silenced,
        )
        self._set_state("listening")

    def set_voice(self, tts: TTSEngine, voice: str | None) -> None:
        self.tts = tts
        self.voice = voice

    @property
    def speaking(self) -> bool:
        return (
            self._speaker.busy
            or self._answering.busy
            or len(self.playout) > 0
            or self.channel.pending_speech()
        )

    def state(self) -> SessionState:
        return SessionState(
            sessionid=self.id,
            connection=self.connection,
            state=self._state,
            speaking=self.speaking,
            queued=self._speaker.queued,
            tts_engine=self.tts.name,
            tts_voice=self.voice,
            frames_sent=self._renderer.frames_sent,
            video_late_p99_ms=round(self.channel.lateness_p99_ms(), 1),
            uptime=round(time.monotonic() - self._created, 3),
            errors=list(self.errors),
            actions=self.actions,
        )

    def record_error(self, error: BaseException, where: str) -> None:
        retryable = isinstance(error, LiveDHError) and error.retryable
        # A bug's own words (paths, addresses) are for the log, not for the page.
        message = (error.message if isinstance(error, LiveDHError)
                   else f"an internal error stopped the {where} step")
        self.errors.append(
            {"where": where, "msg": message, "retryable": retryable, "time": time.time()}
        )
        self._send({"type": "error", "where": where, "msg": message, "retryable": retryable})
        self._metrics.count_error(where, error)
        log_event(logger, "error", self.id, logging.WARNING, where=where,
                  error=message if isinstance(error, LiveDHError) else repr(error))

    async def aclose(self) -> None:
        """Cancel and await every task this session started. Idempotent."""
        if self._closed:
            return
        self._closed = self._speaker.closed = True
        self.connection = "closed"
        self.channel.close()
        live = [t for t in (*self._tasks, *self._children.tasks) if not t.done()]
        for task in live:
            task.cancel()
        await asyncio.gather(*live, return_exceptions=True)
        if self.transport is not None:
            await self.transport.aclose()
        # Break the session <-> transport reference cycle now: left to the cyclic GC, closed
        # sessions keep their buffers and encoders alive for a while (RSS creeps up).
        self.transport = None
        self.emit = _ignore_event
        self._renderer.detach()
        self._speaker.detach()
        self._answering.detach()
        # Finished tasks keep their CancelledError, whose traceback holds frames that hold us.
        self._tasks = []
        self._children.tasks.clear()
        log_event(logger, "close", self.id, frames_sent=self._renderer.frames_sent)

    # -- internals ------------------------------------------------------------------------
    def _check_text(self, text: object) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text must be a non-empty string")
        if len(text) > self.config.max_text_chars:
            raise InvalidInputError(
                f"text is {len(text)} characters; the limit is {self.config.max_text_chars}"
            )
        return text.strip()

    async def _hear(self, microphone: AsyncIterator[np.ndarray], hearing: Hearing) -> None:
        detector = TurnDetector(hearing.config.turn, hearing.vad)
        config = hearing.config
        language = None if config.language == "auto" else config.language
        heard: list[np.ndarray] = []  # the current turn so far, for partial transcripts
        last_partial = 0.0
        partial: asyncio.Task[None] | None = None
        log_event(logger, "hearing_start", self.id, language=config.language)
        async for chunk in microphone:
            detector.set_far_end_level(self._renderer.far_level)
            if detector.in_speech:
                heard.append(chunk)
            for event in detector.push(chunk):
                if isinstance(event, SpeechStarted):
                    heard = [chunk]
                    last_partial = event.t
                elif isinstance(event, SpeechDiscarded | EndOfTurn):
                    heard = []
                if isinstance(event, SpeechPaused | EndOfTurn) and partial is not None:
                    partial.cancel()  # the worker is needed for the turn itself
                self._on_turn_event(event, language, hearing)
            pending_end = detector.pending_end
            if pending_end is not None:
                self._speaker.guess_turn_end(pending_end, detector.time)
            if (
                config.partial_interval > 0 and detector.in_speech and heard
                and detector.time - last_partial >= config.partial_interval
                and (partial is None or partial.done())
                # Only while the voice goes on: a partial still running when the person pauses
                # shares the CPU with the transcription of the turn, the one they wait for.
                and detector.silent_for < _PARTIAL_QUIET
            ):
                last_partial = detector.time
                partial = self._child(
                    self._answering.partial(np.concatenate(heard), language, hearing), "partial"
                )

    def _on_turn_event(self, event: TurnEvent, language: str | None, hearing: Hearing) -> None:
        """What the person's voice does to the conversation (barge-in, held and ended turns)."""
        if isinstance(event, SpeechConfirmed):
            log_event(logger, "voice", self.id, t=round(event.t, 2))
            if hearing.config.barge_in and self.speaking:
                log_event(logger, "barge_in", self.id)
                self.interrupt()
                self._send({"type": "barge_in"})
        elif isinstance(event, SpeechPaused):
            # Answer now, play it if the turn ends (see HeldTurn); not while the avatar talks
            # (no barge-in): that answer would queue behind it anyway; nor while an earlier
            # turn is still transcribed: its answer must not be held with this one.
            if (self._speaker.held is None and not self.speaking
                    and not self._answering.turns_in_progress):
                held = self._speaker.hold()
                held.task = self._child(
                    self._answering.answer_turn(event.audio, language, hearing), "turn"
                )
        elif isinstance(event, SpeechResumed):
            self._drop_held("resumed")
        elif isinstance(event, EndOfTurn):
            if self._speaker.held is not None:
                self._speaker.release_held()
            else:
                self._child(self._answering.answer_turn(event.audio, language, hearing), "turn")

    def _speech_failed(self, error: BaseException) -> None:
        self.record_error(error, "tts")
        if not self.speaking:
            # Nothing else will sound: the page must not wait on "thinking" forever.
            self._set_state("listening")

    def _speech_edge(self, index: int, speaking: bool) -> None:
        """Audible speech starts or ends at frame ``index`` of the stream."""
        fields: dict[str, Any] = {"frame": index}
        requested_at = self._speaker.pending_request_at
        if speaking and requested_at is not None:
            # Request -> this frame's due time on the wire (same clock as the audio).
            due = self.clock.deadline(index / self.fps)
            fields["latency_ms"] = round((due - requested_at) * 1000)
            self._metrics.first_audio.observe(due - requested_at)
            self._speaker.pending_request_at = None
        log_event(logger, "speak_start" if speaking else "speak_end", self.id, **fields)
        self._set_state("speaking" if speaking else "listening")
        if not speaking:
            self._child(_trim_heap_soon(), "trim")


async def _trim_heap_soon() -> None:
    await asyncio.get_running_loop().run_in_executor(None, trim_heap)


def _ignore_event(event: dict[str, Any]) -> None:
    """The event sink of a closed session."""

