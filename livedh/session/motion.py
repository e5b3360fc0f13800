"""The body of a session's avatar: its motion planner, fed what is playing and what is buffered.

Used by the renderer once per output frame. The speech is synthesized before it plays, so the
loudness of the buffered audio after this frame is known: the planner sees up to
``lookahead_frames`` of it. Actions come from requests (``play``) or from tags in the spoken text,
cued at the playout sample where their sentence starts (``PlayoutBuffer.cue``) and started here
when the playout reaches it.

The planner is built and stepped in a worker thread (``executor``, the lip-sync engine's
``livedh-motion`` pool): building takes ~0.1 s and a replan milliseconds, and the event loop
serves every session's media. What only the event loop may read (the playout) is turned into
levels there (~0.1 ms); requests and barge-ins are handed over and applied at the start of the
next step, so the planner is only ever touched by one thread at a time (the renderer awaits each
step) and a barge-in still replans the very next frame.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Executor, Future

import numpy as np

from livedh.avatar.actions import match_actions, split_action_tags
from livedh.avatar.motion import FootagePick, MotionLibrary
from livedh.avatar.planner import MotionPlanner, PlannerConfig, playable_action, speech_levels
from livedh.errors import InvalidInputError
from livedh.logs import log_event
from livedh.session.playout import PlayoutBuffer

logger = logging.getLogger(__name__)


class BodyMotion:
    """One session's :class:`MotionPlanner` and what it needs from the playout."""

    def __init__(
        self,
        sessionid: int,
        library: MotionLibrary,
        samples_per_frame: int,
        *,
        seed: int,
        executor: Executor,
        config: PlannerConfig | None = None,
    ) -> None:
        self._id = sessionid
        self.library = library
        self.config = config if config is not None else PlannerConfig()
        self._spf = samples_per_frame
        #: samples read past this frame's: the rest of the planner's lookahead
        self._ahead = max(0, self.config.lookahead_frames - 1) * samples_per_frame
        self._executor = executor
        #: set by the first step (in the worker); a test may set its own before
        self.planner: MotionPlanner | None = None
        # Built now, while the session's connection is negotiated, rather than on its first frame.
        self._built: Future[MotionPlanner] = executor.submit(MotionPlanner, library, self.config, seed=seed)
        # Hand-offs from the event loop to the next step: the last action asked for since that
        # step, and whether a barge-in came (which drops the actions asked for before it).
        self._lock = threading.Lock()
        self._action: str | None = None
        self._interrupted = False

    @property
    def actions(self) -> list[str]:
        return self.library.action_names

    def play(self, name: str) -> None:
        """Start action ``name`` with the next frame planned (InvalidInputError listing the
        actions when there is none)."""
        playable_action(self.library, name)
        with self._lock:
            self._action = name
        log_event(logger, "action", self._id, name=name)

    def interrupt(self) -> None:
        """Barge-in: the plan made for the speech that was dropped goes too, from the next frame."""
        with self._lock:
            self._action = None
            self._interrupted = True

    async def next(self, block: np.ndarray, playout: PlayoutBuffer) -> FootagePick:
        """The footage for the frame whose audio ``block`` was just taken from ``playout``."""
        levels = self.levels(block, playout)
        return await asyncio.wrap_future(self._executor.submit(self.step, levels))

    def levels(self, block: np.ndarray, playout: PlayoutBuffer) -> np.ndarray:
        """On the event loop: starts the actions cued up to now, and returns the loudness of this
        frame and of the buffered frames after it."""
        for name in playout.due_cues():
            try:
                self.play(name)
            except InvalidInputError:  # matched when cued; kept safe all the same
                log_event(logger, "action_unknown", self._id, level=logging.WARNING, name=name)
        upcoming = playout.upcoming(self._ahead)
        audio = np.concatenate([block, upcoming]) if len(upcoming) else block
        return speech_levels(audio, self._spf)

    def step(self, levels: np.ndarray) -> FootagePick:
        """In the worker: applies what was handed over since the last step, then plans a frame."""
        if self.planner is None:
            self.planner = self._built.result()
        with self._lock:
            action, interrupted = self._action, self._interrupted
            self._action, self._interrupted = None, False
        if interrupted:
            self.planner.interrupt()
        if action is not None:
            self.planner.request_action(action)
        return self.planner.next(levels)


def take_action_tags(sessionid: int, text: str, actions: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """Text to speak -> (what is spoken, None when nothing is; the avatar's actions its tags
    name). Tags naming no action of this avatar are dropped (and logged)."""
    spoken, names = split_action_tags(text)
    if not names:
        return text, ()
    known, unknown = match_actions(names, actions)
    if unknown:
        log_event(logger, "action_tag_unknown", sessionid, names=",".join(unknown)[:200])
    return (spoken if any(ch.isalnum() for ch in spoken) else None), tuple(known)


def push_held(playout: PlayoutBuffer, chunks: list[np.ndarray],
              cues: list[tuple[int, tuple[str, ...]]], at: int | None = None) -> None:
    """Queue a held answer's audio (``at``: see ``PlayoutBuffer.push``) with its cues, each given
    as (index of the chunk it starts with, names); an index past the chunks: after them all."""
    starts = [playout.push(samples, at=at) for samples in chunks]
    for k, names in cues:
        playout.cue(names, at=starts[k] if k < len(starts) else None)
