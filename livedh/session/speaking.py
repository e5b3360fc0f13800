"""The speaking stage of a session: utterances -> TTS -> playout buffer.

The speaker task takes the queued utterances one at a time (text is synthesized, a recording
plays as it is) into the playout buffer, the actions their tags named cued where their speech
starts. A voice turn answered during the person's pause (``HeldTurn``) keeps its speech and its
events until the turn ends: released then, dropped if the person goes on talking. Each answer
has a generation; ``stop`` (a barge-in) starts a new one, and what older ones queued is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np

from livedh.config import SessionConfig
from livedh.errors import CapacityError, InvalidInputError, LiveDHError, RateLimitedError
from livedh.logs import log_event
from livedh.media.clock import MediaClock
from livedh.media.pcm import SESSION_SAMPLE_RATE, StreamResampler, trim_leading_silence
from livedh.metrics import Metrics
from livedh.session.motion import push_held
from livedh.session.playout import PlayoutBuffer
from livedh.session.rendering import Renderer
from livedh.session.state import HeldTurn, Utterance
from livedh.tts.scheduler import TTS_OWNER, TTS_URGENT

logger = logging.getLogger(__name__)

#: seconds a held answer is scheduled before the frames that play it are rendered, and how
#: fresh the microphone audio its timing rests on must be: a microphone packet's interval and
#: its jitter (see _schedule_held)
_SCHEDULE_MARGIN = 0.06


class Speaker:
    """Owns the utterance queue, the held turn and the answer generation; ``run`` is the
    session's speaker task. ``emit(event)`` sends an event to the page, ``on_failed(exc)`` is
    called when an utterance could not be spoken, ``spawn(coro, role)`` starts a child task of
    the session (the speech of one utterance, cancelled by ``stop``)."""

    def __init__(
        self,
        sessionid: int,
        config: SessionConfig,
        clock: MediaClock,
        playout: PlayoutBuffer,
        renderer: Renderer,
        metrics: Metrics,
        *,
        spawn: Callable[[Coroutine[object, object, None], str], asyncio.Task[None]],
        emit: Callable[[dict[str, Any]], object],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self._id = sessionid
        self._config = config
        self._clock = clock
        self._playout = playout
        self._renderer = renderer
        self._metrics = metrics
        self._spawn = spawn
        self._emit = emit
        self._on_failed = on_failed
        #: the answer being made: utterances of an older one are not spoken (see stop)
        self.generation = 0
        self._utterances: asyncio.Queue[Utterance] = asyncio.Queue()
        self._current: asyncio.Task[None] | None = None
        #: characters of text waiting in _utterances, and in the utterance being synthesized
        self._queued_chars = self._current_chars = 0
        #: a voice turn being answered during the person's pause; None when there is none
        self.held: HeldTurn | None = None
        #: when the request behind the speech about to play was made (for latency logs)
        self.pending_request_at: float | None = None
        self.closed = False

    @property
    def queued(self) -> int:
        """Utterances waiting for the speaker."""
        return self._utterances.qsize()

    @property
    def busy(self) -> bool:
        """Utterances wait, or one is being spoken."""
        return not self._utterances.empty() or (
            self._current is not None and not self._current.done()
        )

    def send(self, event: dict[str, Any]) -> None:
        """Every event for the page goes through here, so a held turn can hold its own."""
        if self.held is not None:
            self.held.events.append(event)
        else:
            self._emit(event)

    def enqueue(self, utterance: Utterance) -> None:
        if self.closed:
            raise InvalidInputError("the session is closed")
        if self._utterances.qsize() >= self._config.max_queued_utterances:
            raise CapacityError("too many utterances queued for this session; try again later")
        utterance.generation = self.generation
        self._utterances.put_nowait(utterance)
        self._queued_chars += len(utterance.text or "")

    def check_queued_chars(self, chars: int) -> None:
        """Refuse text beyond the session's share of waiting speech: a client that queues
        faster than it is spoken only grows the queue (and its claim on the TTS engine)."""
        limit = self._config.max_queued_chars
        waiting = self._queued_chars + self._current_chars
        if waiting + chars > limit:
            # About 15 characters are spoken per second: roughly when there is room again.
            retry_after = max(1.0, float(round((waiting + chars - limit) / 15)))
            raise RateLimitedError(
                f"this session already has {waiting} characters of text waiting to be spoken; "
                f"the limit is {limit}: wait until it has been spoken, or interrupt it",
                retry_after=retry_after,
            )

    def stop(self) -> int:
        """Start a new answer: drop the queued utterances (returns how many) and cancel the
        synthesis under way."""
        self.generation += 1
        dropped = self._utterances.qsize()
        while not self._utterances.empty():
            self._queued_chars -= len(self._utterances.get_nowait().text or "")
        if self._current is not None:
            self._current.cancel()
        self._current = None
        return dropped

    # -- the held turn ----------------------------------------------------------------------
    def hold(self) -> HeldTurn:
        """The person paused: what the answer makes from now on waits in the returned turn."""
        self.held = HeldTurn()
        return self.held

    def guess_turn_end(self, pending_end: float, heard: float) -> None:
        """The held turn ends at ``pending_end`` of the microphone's time (heard up to
        ``heard``) if the person stays silent."""
        held = self.held
        if held is None:
            return
        now = self._clock.now()
        held.ends_at = now + pending_end - heard
        held.guessed_at = now
        self._schedule_held()

    def release_held(self) -> None:
        """The turn ended as paused: play its answer (what is ready now, the rest as it comes)."""
        held, self.held = self.held, None
        if held is None:
            return
        log_event(logger, "turn_released", self._id, ready_ms=held.audio_ms,
                  scheduled=held.scheduled)
        held.state = "released"
        held.ended.set()
        for update in held.records:
            update()
        for event in held.events:
            self._emit(event)
        push_held(self._playout, held.audio, held.cues)

    def forget_held(self, reason: str) -> HeldTurn | None:
        """Detach the held turn (its events, history and audio are never released); None when
        there is none."""
        held, self.held = self.held, None
        if held is None:
            return None
        held.state = "dropped"
        if held.task is not None:
            held.task.cancel()
        log_event(logger, "turn_dropped", self._id, reason=reason, held_ms=held.audio_ms,
                  scheduled=held.scheduled)
        return held

    def _schedule_held(self) -> None:
        """Put the held answer's audio in the playout buffer, timed to start at the moment
        the paused turn ends if the person stays silent (``HeldTurn.ends_at``): its first
        frame is then rendered in time, instead of after the turn end.

        Only shortly before that moment (the frames rendered ahead, plus a microphone packet or
        two), and only while microphone audio keeps arriving, so the guess rests on what was
        heard; voice after it takes the audio back out (the session's ``_drop_held``).
        """
        held = self.held
        if (held is None or held.scheduled or not held.audio or held.ends_at is None
                or not self._clock.started):
            return
        now = self._clock.now()
        lead = (self._config.render_ahead + 1) / self._config.fps + _SCHEDULE_MARGIN
        if now - held.guessed_at > _SCHEDULE_MARGIN or held.ends_at - now > lead:
            return
        at = round((held.ends_at - self._clock.start()) * SESSION_SAMPLE_RATE)
        push_held(self._playout, held.audio, held.cues, at)
        held.audio.clear()
        held.cues.clear()
        held.scheduled = True

    # -- the speaker task -------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            utterance = await self._utterances.get()
            self._queued_chars -= len(utterance.text or "")
            if utterance.generation != self.generation:
                continue
            speech = self._spawn(self._speak(utterance), "tts")
            self._current = speech
            try:
                await speech
            except asyncio.CancelledError:
                # The utterance was interrupted; the loop itself goes on unless we are closing
                # (or this task itself is cancelled: a loop shutting down must not hang on it).
                task = asyncio.current_task()
                if self.closed or (task is not None and task.cancelling()):
                    raise
            except LiveDHError as exc:
                self._on_failed(exc)
            except Exception as exc:  # a TTS bug must not end the session's stream
                logger.exception("TTS failed")
                self._on_failed(exc)

    async def _speak(self, utterance: Utterance) -> None:
        if utterance.text is None and utterance.pcm is None:
            self._play(np.zeros(0, np.int16), utterance.actions)  # only tags: where speech ends
            return
        if utterance.spoken_log is not None and utterance.text is not None:
            utterance.spoken_log.append(utterance.text)
        if utterance.text is not None:
            self.send({"type": "subtitle", "text": utterance.text})
        log_event(
            logger, "tts_start", self._id,
            source="text" if utterance.text is not None else "audio",
            chars=len(utterance.text or ""),
        )
        if len(self._playout) == 0 and not self._renderer.speaking:
            self.pending_request_at = utterance.requested_at
        if utterance.pcm is not None:
            self._play(utterance.pcm, utterance.actions)
            return
        assert utterance.engine is not None and utterance.text is not None
        resampler = StreamResampler(SESSION_SAMPLE_RATE)
        # The shared engine schedules its work fairly by who asks, first what a listener waits
        # for (see tts/scheduler.py); this task's context is this session's alone.
        TTS_OWNER.set(self._id)
        held = self.held
        TTS_URGENT.set(len(self._playout) == 0 and (held is None or held.samples == 0))
        self._current_chars = len(utterance.text)
        stream = self._metrics.timed_tts(
            utterance.engine.synthesize(utterance.text, utterance.voice), utterance.engine.name
        )
        # Voices start with up to ~100 ms of silence; when nothing is playing, skipping it
        # brings the first word that much closer to the request.
        trimming = len(self._playout) == 0
        cue = utterance.actions  # with the first audible sample
        try:
            async for chunk in stream:
                if utterance.generation != self.generation:
                    break
                samples = resampler.push(chunk)
                if trimming:
                    samples = trim_leading_silence(samples)
                    trimming = len(samples) == 0
                self._play(samples, cue if len(samples) else ())
                cue = () if len(samples) else cue
            if utterance.generation == self.generation:
                self._play(resampler.flush(), cue)
        finally:
            self._current_chars = 0
            await stream.aclose()

    def _play(self, samples: np.ndarray, cue: tuple[str, ...] = ()) -> None:
        """Speech for the playout buffer (or for a held turn's, until it is scheduled); the
        actions ``cue`` names start with its first sample (or where the queue ends, when it
        has none)."""
        held = self.held
        if held is not None:
            held.samples += len(samples)
            if not held.scheduled:
                if cue:
                    held.cues.append((len(held.audio), cue))
                held.audio.append(samples)
                self._schedule_held()
                return
        start = self._playout.push(samples)
        if cue:
            self._playout.cue(cue, at=start)

    def detach(self) -> None:
        """The session is closed: drop its turn, its speech and the callbacks into it (they hold
        the session, which must be freed without waiting for the cyclic GC)."""
        self.closed = True
        self.held = None
        self._current = None
        self._emit = _ignore
        self._on_failed = _ignore


def _ignore(*args: object) -> None:
    """The sink of a detached speaker's callbacks."""
