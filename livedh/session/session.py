"""A session: one person talking to one avatar.

It owns every task it starts: the speaker (text -> TTS -> playout buffer), the optional chat task
(LLM -> sentences -> speaker) and the render loop (playout -> lip-sync -> AV channel, the
``Renderer`` stage in rendering.py), and closes
them all in an idempotent ``aclose``. Barge-in is one call, ``interrupt``, that clears every buffer
down the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
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
)
from livedh.config import SessionConfig
from livedh.errors import (
    CapacityError,
    InvalidInputError,
    LiveDHError,
    NotConfiguredError,
    ProviderError,
    RateLimitedError,
)
from livedh.lipsync.engine import LipSyncEngine
from livedh.llm.base import ChatLLM
from livedh.llm.history import ChatHistory
from livedh.llm.sentences import split_sentences
from livedh.logs import log_event
from livedh.media.channel import AVChannel
from livedh.media.clock import MediaClock
from livedh.media.memory import trim_heap
from livedh.media.pcm import (
    SESSION_SAMPLE_RATE,
    StreamResampler,
    trim_leading_silence,
)
from livedh.metrics import Metrics
from livedh.session.hearing import Hearing
from livedh.session.motion import push_held, take_action_tags
from livedh.session.playout import PlayoutBuffer
from livedh.session.rendering import Renderer
from livedh.session.state import HeldTurn, SessionState, Transport, Utterance
from livedh.tts.base import TTSEngine
from livedh.tts.scheduler import TTS_OWNER, TTS_URGENT

logger = logging.getLogger(__name__)

#: spoken when the LLM fails (the page also gets the error event)
_APOLOGY = "Sorry, I could not get an answer just now."
#: seconds of silence after which no partial transcript starts (see _hear)
_PARTIAL_QUIET = 0.1
#: seconds a held answer is scheduled before the frames that play it are rendered, and how
#: fresh the microphone audio its timing rests on must be: a microphone packet's interval and
#: its jitter (see _schedule_held)
_SCHEDULE_MARGIN = 0.06

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
        self._llm = llm
        self._history = history
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
        self.channel = AVChannel(
            self.clock, self.fps, SESSION_SAMPLE_RATE, video_format=lipsync.output_format
        )
        self.channel.on_lateness = self._metrics.frame_lateness.observe
        self.playout = PlayoutBuffer(model.audio_window)
        self.connection = "new"
        self.transport: Transport | None = None
        self.errors: deque[dict[str, object]] = deque(maxlen=10)
        self._created = time.monotonic()
        self._generation = 0
        self._utterances: asyncio.Queue[Utterance] = asyncio.Queue()
        self._current_speech: asyncio.Task[None] | None = None
        self._chat_task: asyncio.Task[None] | None = None
        # Every child task, cancelled or not, until it finishes: aclose awaits them all.
        self._children: set[asyncio.Task[None]] = set()
        self._renderer = Renderer(
            sessionid, config, self.clock, self.channel, self.playout, lipsync, self.seed,
            on_speech_edge=self._speech_edge, on_error=self.record_error,
        )
        #: when the request behind the speech about to play was made (for latency logs)
        self._pending_request_at: float | None = None
        #: a voice turn being answered during the person's pause; None when there is none
        self._held: HeldTurn | None = None
        #: turns being transcribed, up to the moment their answer starts (the chat task)
        self._turns_in_progress = 0
        self._closed = False
        #: characters of text waiting in _utterances, and in the utterance being synthesized
        self._queued_chars = self._current_chars = 0
        self._tasks = [
            asyncio.create_task(self._speaker_loop(), name=f"session-{sessionid}-speaker"),
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
        self._check_queued_chars(len(utterance.text or ""))
        self._enqueue(utterance)

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
        self._enqueue(Utterance(pcm=samples))

    async def chat(self, text: str, *, interrupt: bool = False) -> None:
        """Answer ``text`` through the LLM, speaking sentence by sentence as it streams."""
        text = self._check_text(text)
        self._check_chat_configured()
        if interrupt:
            self.interrupt()
        self._drop_held("request")
        self._start_chat(text)

    def _check_chat_configured(self) -> None:
        if self._llm is None or self._history is None:
            raise NotConfiguredError(
                "chat mode needs an LLM endpoint: start the server with --llm-base-url "
                "(or set LIVEDH_LLM_BASE_URL / OPENAI_BASE_URL), or use echo mode"
            )

    def _start_chat(self, text: str) -> None:
        if self._chat_task is not None and not self._chat_task.done():
            # A new question while answering: the newer one wins, like a person interrupting.
            self.interrupt()
        self._chat_task = self._child(self._chat(text, self._generation), "chat")

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

    def _send(self, event: dict[str, Any]) -> None:
        """Every event for the page goes through here, so a held turn can hold its own."""
        if self._held is not None:
            self._held.events.append(event)
        else:
            self.emit(event)

    def _play(self, samples: np.ndarray, cue: tuple[str, ...] = ()) -> None:
        """Speech for the playout buffer (or for a held turn's, until it is scheduled); the
        actions ``cue`` names start with its first sample (or where the queue ends, when it
        has none)."""
        held = self._held
        if held is not None:
            held.samples += len(samples)
            if not held.scheduled:
                if cue:
                    held.cues.append((len(held.audio), cue))
                held.audio.append(samples)
                self._schedule_held()
                return
        start = self.playout.push(samples)
        if cue:
            self.playout.cue(cue, at=start)

    def _schedule_held(self) -> None:
        """Put the held answer's audio in the playout buffer, timed to start at the moment
        the paused turn ends if the person stays silent (``HeldTurn.ends_at``): its first
        frame is then rendered in time, instead of after the turn end.

        Only shortly before that moment (the frames rendered ahead, plus a microphone packet or
        two), and only while microphone audio keeps arriving, so the guess rests on what was
        heard; voice after it takes the audio back out (``_drop_held``).
        """
        held = self._held
        if (held is None or held.scheduled or not held.audio or held.ends_at is None
                or not self.clock.started):
            return
        now = self.clock.now()
        lead = (self.config.render_ahead + 1) / self.fps + _SCHEDULE_MARGIN
        if now - held.guessed_at > _SCHEDULE_MARGIN or held.ends_at - now > lead:
            return
        at = round((held.ends_at - self.clock.start()) * SESSION_SAMPLE_RATE)
        push_held(self.playout, held.audio, held.cues, at)
        held.audio.clear()
        held.cues.clear()
        held.scheduled = True

    def _stop_answer(self) -> int:
        """Cancel the answer being made (LLM stream, queued sentences, synthesis); returns
        the number of utterances dropped from the queue."""
        self._generation += 1
        dropped = self._utterances.qsize()
        while not self._utterances.empty():
            self._queued_chars -= len(self._utterances.get_nowait().text or "")
        for task in (self._chat_task, self._current_speech):
            if task is not None:
                task.cancel()
        self._chat_task = self._current_speech = None
        return dropped

    def _release_held(self) -> None:
        """The turn ended as paused: play its answer (what is ready now, the rest as it comes)."""
        held, self._held = self._held, None
        if held is None:
            return
        log_event(logger, "turn_released", self.id, ready_ms=held.audio_ms,
                  scheduled=held.scheduled)
        held.state = "released"
        held.ended.set()
        for update in held.records:
            update()
        for event in held.events:
            self.emit(event)
        push_held(self.playout, held.audio, held.cues)

    def _drop_held(self, reason: str) -> None:
        """The person went on talking (or a newer request came): forget the held answer and
        stop what it was making."""
        held = self._forget_held(reason)
        if held is None:
            return
        self._stop_answer()
        if held.scheduled:
            # Nothing else plays while a turn is held (see _hear): all of it is this answer's.
            self.playout.clear()
            self.channel.silence_pending_audio()
            self._renderer.interrupt()
        self._set_state("listening")

    def _forget_held(self, reason: str) -> HeldTurn | None:
        """Detach the held turn (its events, history and audio are never released); None when
        there is none."""
        held, self._held = self._held, None
        if held is None:
            return None
        held.state = "dropped"
        if held.task is not None:
            held.task.cancel()
        log_event(logger, "turn_dropped", self.id, reason=reason, held_ms=held.audio_ms,
                  scheduled=held.scheduled)
        return held

    def interrupt(self) -> None:
        """Barge-in: stop the current speech everywhere in the pipeline."""
        # The held answer's speech is stopped and counted below with everything else.
        self._forget_held("interrupt")
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
            not self._utterances.empty()
            or (self._current_speech is not None and not self._current_speech.done())
            or (self._chat_task is not None and not self._chat_task.done())
            or len(self.playout) > 0
            or self.channel.pending_speech()
        )

    def state(self) -> SessionState:
        return SessionState(
            sessionid=self.id,
            connection=self.connection,
            state=self._state,
            speaking=self.speaking,
            queued=self._utterances.qsize(),
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
        self._closed = True
        self.connection = "closed"
        self.channel.close()
        live = [t for t in (*self._tasks, *self._children) if not t.done()]
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
        self._held = None
        # Finished tasks keep their CancelledError, whose traceback holds frames that hold us.
        self._tasks = []
        self._children.clear()
        self._chat_task = self._current_speech = None
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

    def _enqueue(self, utterance: Utterance) -> None:
        if self._closed:
            raise InvalidInputError("the session is closed")
        if self._utterances.qsize() >= self.config.max_queued_utterances:
            raise CapacityError("too many utterances queued for this session; try again later")
        utterance.generation = self._generation
        self._utterances.put_nowait(utterance)
        self._queued_chars += len(utterance.text or "")

    def _check_queued_chars(self, chars: int) -> None:
        """Refuse text beyond the session's share of waiting speech: a client that queues
        faster than it is spoken only grows the queue (and its claim on the TTS engine)."""
        limit = self.config.max_queued_chars
        waiting = self._queued_chars + self._current_chars
        if waiting + chars > limit:
            # About 15 characters are spoken per second: roughly when there is room again.
            retry_after = max(1.0, float(round((waiting + chars - limit) / 15)))
            raise RateLimitedError(
                f"this session already has {waiting} characters of text waiting to be spoken; "
                f"the limit is {limit}: wait until it has been spoken, or interrupt it",
                retry_after=retry_after,
            )

    def _child(self, coro: Coroutine[object, object, None], role: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"session-{self.id}-{role}")
        self._children.add(task)
        task.add_done_callback(self._children.discard)
        return task

    async def _speaker_loop(self) -> None:
        while True:
            utterance = await self._utterances.get()
            self._queued_chars -= len(utterance.text or "")
            if utterance.generation != self._generation:
                continue
            speech = self._child(self._speak(utterance), "tts")
            self._current_speech = speech
            try:
                await speech
            except asyncio.CancelledError:
                # The utterance was interrupted; the loop itself goes on unless we are closing
                # (or this task itself is cancelled: a loop shutting down must not hang on it).
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
            except LiveDHError as exc:
                self._speech_failed(exc)
            except Exception as exc:  # a TTS bug must not end the session's stream
                logger.exception("TTS failed")
                self._speech_failed(exc)

    def _speech_failed(self, error: BaseException) -> None:
        self.record_error(error, "tts")
        if not self.speaking:
            # Nothing else will sound: the page must not wait on "thinking" forever.
            self._set_state("listening")

    async def _speak(self, utterance: Utterance) -> None:
        if utterance.text is None and utterance.pcm is None:
            self._play(np.zeros(0, np.int16), utterance.actions)  # only tags: where speech ends
            return
        if utterance.spoken_log is not None and utterance.text is not None:
            utterance.spoken_log.append(utterance.text)
        if utterance.text is not None:
            self._send({"type": "subtitle", "text": utterance.text})
        log_event(
            logger, "tts_start", self.id,
            source="text" if utterance.text is not None else "audio",
            chars=len(utterance.text or ""),
        )
        if len(self.playout) == 0 and not self._renderer.speaking:
            self._pending_request_at = utterance.requested_at
        if utterance.pcm is not None:
            self._play(utterance.pcm, utterance.actions)
            return
        assert utterance.engine is not None and utterance.text is not None
        resampler = StreamResampler(SESSION_SAMPLE_RATE)
        # The shared engine schedules its work fairly by who asks, first what a listener waits
        # for (see tts/scheduler.py); this task's context is this session's alone.
        TTS_OWNER.set(self.id)
        held = self._held
        TTS_URGENT.set(len(self.playout) == 0 and (held is None or held.samples == 0))
        self._current_chars = len(utterance.text)
        stream = self._metrics.timed_tts(
            utterance.engine.synthesize(utterance.text, utterance.voice), utterance.engine.name
        )
        # Voices start with up to ~100 ms of silence; when nothing is playing, skipping it
        # brings the first word that much closer to the request.
        trimming = len(self.playout) == 0
        cue = utterance.actions  # with the first audible sample
        try:
            async for chunk in stream:
                if utterance.generation != self._generation:
                    break
                samples = resampler.push(chunk)
                if trimming:
                    samples = trim_leading_silence(samples)
                    trimming = len(samples) == 0
                self._play(samples, cue if len(samples) else ())
                cue = () if len(samples) else cue
            if utterance.generation == self._generation:
                self._play(resampler.flush(), cue)
        finally:
            self._current_chars = 0
            await stream.aclose()

    async def _chat(self, text: str, generation: int) -> None:
        assert self._llm is not None and self._history is not None
        history = self._history
        # The history keeps only what was heard: a held answer's exchange waits with it.
        record = self._held.record if self._held is not None else _now
        log_event(logger, "chat_start", self.id, chars=len(text))
        self._set_state("thinking")
        answer: list[str] = []
        spoken: list[str] = []  # filled by the speaker as sentences start playing
        voiced = False  # an answer of action tags alone never speaks
        try:
            deltas = self._metrics.timed_llm(self._llm.stream(history.messages_for(text)))
            # aclosing: a barge-in closes the HTTP stream now, not when garbage-collected.
            async with contextlib.aclosing(split_sentences(deltas)) as sentences:
                async for sentence in sentences:
                    if generation != self._generation:
                        break
                    utterance = self._utterance(sentence, spoken)
                    if utterance is None:
                        continue
                    answer.append(sentence)
                    voiced = voiced or utterance.text is not None
                    self._enqueue(utterance)
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
            if not voiced and self._state == "thinking":
                self._set_state("listening")  # nothing to say (blanks, markup or tags only)
        record(lambda: history.add_exchange(text, " ".join(answer)))
        log_event(logger, "chat_end", self.id, sentences=len(answer))

    def _chat_failed(self, error: LiveDHError, generation: int) -> None:
        """The page gets an error event, the person a short apology, and the avatar stops
        thinking (it shows as speaking while the apology, or an answer's start, plays)."""
        self.record_error(error, "llm")
        if generation != self._generation:
            return  # interrupted meanwhile: a newer request owns the state
        if self._state == "thinking":
            self._set_state("listening")
        # A full queue or a closed session: the error event is enough.
        with contextlib.suppress(LiveDHError):
            self._enqueue(Utterance(text=_APOLOGY, engine=self.tts, voice=self.voice))

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
                elif isinstance(event, SpeechConfirmed):
                    log_event(logger, "voice", self.id, t=round(event.t, 2))
                    if config.barge_in and self.speaking:
                        log_event(logger, "barge_in", self.id)
                        self.interrupt()
                        self._send({"type": "barge_in"})
                elif isinstance(event, SpeechDiscarded):
                    heard = []
                elif isinstance(event, SpeechPaused):
                    if partial is not None:
                        partial.cancel()  # the worker is needed for the turn itself
                    # Answer now, play it if the turn ends (see HeldTurn); not while the avatar
                    # talks (no barge-in): that answer would queue behind it anyway; nor while
                    # an earlier turn is still transcribed: its answer must not be held with
                    # this one.
                    if self._held is None and not self.speaking and not self._turns_in_progress:
                        self._held = HeldTurn()
                        self._held.task = self._child(
                            self._answer_turn(event.audio, language, hearing), "turn"
                        )
                elif isinstance(event, SpeechResumed):
                    self._drop_held("resumed")
                elif isinstance(event, EndOfTurn):
                    heard = []
                    if partial is not None:
                        partial.cancel()
                    if self._held is not None:
                        self._release_held()
                    else:
                        self._child(self._answer_turn(event.audio, language, hearing), "turn")
            pending_end = detector.pending_end
            if self._held is not None and pending_end is not None:
                now = self.clock.now()
                self._held.ends_at = now + pending_end - detector.time
                self._held.guessed_at = now
                self._schedule_held()
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
                    self._partial(np.concatenate(heard), language, hearing), "partial"
                )

    async def _partial(self, audio: np.ndarray, language: str | None, hearing: Hearing) -> None:
        try:
            transcript = await hearing.asr.atranscribe(audio, language, partial=True)
        except LiveDHError:
            return  # a lost partial is harmless; the final one reports errors
        if transcript.text.strip():
            self._send({"type": "transcript", "final": False, "text": transcript.text.strip()})

    async def _answer_turn(self, audio: np.ndarray, language: str | None,
                           hearing: Hearing) -> None:
        self._turns_in_progress += 1
        try:
            await self._transcribe_and_answer(audio, language, hearing)
        finally:
            self._turns_in_progress -= 1

    async def _transcribe_and_answer(self, audio: np.ndarray, language: str | None,
                                     hearing: Hearing) -> None:
        started = time.monotonic()
        try:
            transcript = await hearing.asr.atranscribe(audio, language)
        except LiveDHError as exc:
            self.record_error(exc, "asr")
            return
        self._metrics.asr.observe(time.monotonic() - started)
        text = transcript.text.strip()
        log_event(logger, "transcript", self.id, chars=len(text),
                  asr_ms=round((time.monotonic() - started) * 1000),
                  language=transcript.language)
        if not text:
            return
        self._send({"type": "transcript", "final": True, "text": text})
        try:
            self._check_chat_configured()
        except LiveDHError as exc:
            self.record_error(exc, "chat")
            return
        held = self._held
        if held is not None and not getattr(self._llm, "local", False):
            # A remote LLM costs per request: ask it only once the turn has really ended.
            await held.ended.wait()
        self._start_chat(text)

    def _speech_edge(self, index: int, speaking: bool) -> None:
        """Audible speech starts or ends at frame ``index`` of the stream."""
        fields: dict[str, Any] = {"frame": index}
        if speaking and self._pending_request_at is not None:
            # Request -> this frame's due time on the wire (same clock as the audio).
            due = self.clock.deadline(index / self.fps)
            fields["latency_ms"] = round((due - self._pending_request_at) * 1000)
            self._metrics.first_audio.observe(due - self._pending_request_at)
            self._pending_request_at = None
        log_event(logger, "speak_start" if speaking else "speak_end", self.id, **fields)
        self._set_state("speaking" if speaking else "listening")
        if not speaking:
            self._child(_trim_heap_soon(), "trim")


async def _trim_heap_soon() -> None:
    await asyncio.get_running_loop().run_in_executor(None, trim_heap)


def _ignore_event(event: dict[str, Any]) -> None:
    """The event sink of a closed session."""


def _now(update: Callable[[], None]) -> None:
    update()
