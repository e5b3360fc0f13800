"""The rendering stage of a session: playout -> lip-sync -> AV channel, one frame a period.

Frame i is rendered while frame i - ``render_ahead`` plays (a small buffer against render
jitter) and handed to the channel with the audio played during it, both on the session's clock.
When rendering falls behind, the last picture is repeated so the voice stays on time.
A video avatar with a motion graph also gets a body (``BodyMotion``): the footage frame of each
output frame is chosen by its motion planner from the speech playing and buffered (in the
engine's ``livedh-motion`` worker threads, not on the event loop), and carried by the lip-sync
request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from livedh.asr.turns import rms_level
from livedh.avatar.motion import FootagePick
from livedh.config import SessionConfig
from livedh.errors import InvalidInputError
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.engine import LipSyncEngine
from livedh.logs import log_event
from livedh.media.channel import AVChannel, AVFrame
from livedh.media.clock import MediaClock
from livedh.media.pcm import int16_to_float
from livedh.session.motion import BodyMotion
from livedh.session.playout import PlayoutBuffer

logger = logging.getLogger(__name__)


class Renderer:
    """Owns the frame counters and the loudness of what is playing; ``run`` is the session's
    render task. ``on_speech_edge(index, speaking)`` is called when audible speech starts or
    ends at frame ``index``; ``on_error(exc, where)`` when a frame could not be rendered."""

    def __init__(
        self,
        sessionid: int,
        config: SessionConfig,
        clock: MediaClock,
        channel: AVChannel,
        playout: PlayoutBuffer,
        lipsync: LipSyncEngine,
        seed: int,
        *,
        on_speech_edge: Callable[[int, bool], None],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self._id = sessionid
        self._ahead = config.render_ahead
        self._fps = config.fps
        self._clock = clock
        self._channel = channel
        self._playout = playout
        self._lipsync = lipsync
        self._seed = seed
        self._on_speech_edge = on_speech_edge
        self._on_error = on_error
        self.frames_sent = 0
        self.frames_skipped = 0
        #: the last frame put out carried audible speech
        self.speaking = False
        #: loudness of the audio the avatar is playing, for the echo gate of the hearing
        self.far_level = 0.0
        library = lipsync.model.motion
        #: the avatar's body: None for avatars without a motion graph (the model's own loop)
        self.body = (
            BodyMotion(sessionid, library, channel.samples_per_frame, seed=seed,
                       executor=lipsync.motion_executor)
            if library is not None else None
        )

    @property
    def actions(self) -> list[str]:
        """The avatar's actions, in manifest order (empty without a motion graph)."""
        return self.body.actions if self.body is not None else []

    def play_action(self, name: str) -> None:
        """Start action ``name`` from the next frame; InvalidInputError for an unknown name
        (listing them)."""
        if self.body is None:
            raise InvalidInputError("this avatar has no actions")
        self.body.play(name)

    def interrupt(self) -> None:
        """Barge-in (after the playout was cleared): the body replans on the next frame."""
        if self.body is not None:
            self.body.interrupt()

    def detach(self) -> None:
        """Drop the callbacks into the session once it is closed: they hold the session, and a
        closed session must be freed without waiting for the cyclic GC."""
        self._on_speech_edge = _ignore_edge
        self._on_error = _ignore_error

    async def run(self) -> None:
        await self._channel.wait_started()
        log_event(logger, "stream_start", self._id, fps=self._fps)
        index = 0
        last_video: np.ndarray | None = None
        while not self._channel.closed:
            await self._clock.wait_until((index - self._ahead) / self._fps)
            block, had_speech = self._playout.take(self._channel.samples_per_frame)
            # Every frame, shown or skipped: the body's motion goes on at the stream's pace.
            pick = await self._next_pick(block)
            behind = self._clock.elapsed() - index / self._fps
            if last_video is not None and behind > 0:
                # The renderer cannot keep up (a model too heavy for this machine, or overload):
                # repeat the last picture so the voice stays on time; video catches up.
                video = last_video
                self._skipped(behind)
            else:
                rendered = await self._render(index, last_video, pick)
                if rendered is None:
                    return  # server shutting down
                video = last_video = rendered
            if had_speech != self.speaking:
                self._on_speech_edge(index, had_speech)
                self.speaking = had_speech
            self.far_level = rms_level(block) if had_speech else 0.0
            self._channel.put(AVFrame(index, video, block, had_speech))
            self.frames_sent = index
            index += 1

    async def _next_pick(self, block: np.ndarray) -> FootagePick | None:
        if self.body is None:
            return None
        try:
            return await self.body.next(block, self._playout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A planner bug must not end the stream, nor flood the log 25 times a second: the
            # rest of the session gets the model's own loop.
            self.body = None
            self._on_error(exc, "motion")
            return None

    def _skipped(self, behind: float) -> None:
        self.frames_skipped += 1
        if self.frames_skipped % 250 == 1:
            log_event(logger, "render_behind", self._id, level=logging.WARNING,
                      behind_ms=round(behind * 1000), skipped=self.frames_skipped)

    async def _render(self, index: int, last_video: np.ndarray | None,
                      pick: FootagePick | None) -> np.ndarray | None:
        model = self._lipsync.model
        window = self._playout.window(model.audio_window, model.audio_lookahead)
        request = LipSyncRequest(index, int16_to_float(window), self._seed, footage=pick)
        try:
            return await self._lipsync.render(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._lipsync.closed:
                return None
            # Keep the stream (and its audio) going on the last good frame.
            self._on_error(exc, "lipsync")
            if last_video is None:
                raise
            return last_video


def _ignore_edge(index: int, speaking: bool) -> None:
    """The speech-edge sink of a detached renderer."""


def _ignore_error(error: BaseException, where: str) -> None:
    """The error sink of a detached renderer."""
