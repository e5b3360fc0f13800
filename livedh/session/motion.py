"""The body of a session's avatar: its motion planner, fed what is playing and what is buffered.

Used by the renderer once per output frame (on the event loop: numpy on about a second of audio
and one planner step). The speech is synthesized before it plays, so the loudness of the buffered
audio after this frame is known: the planner sees up to ``lookahead_frames`` of it. Actions come
from requests (``play``) or from tags in the spoken text, cued at the playout sample where their
sentence starts (``PlayoutBuffer.cue``) and started here when the playout reaches it.
"""

from __future__ import annotations

import logging

import numpy as np

from livedh.avatar.actions import match_actions, split_action_tags
from livedh.avatar.motion import FootagePick, MotionLibrary
from livedh.avatar.planner import MotionPlanner, PlannerConfig, speech_levels
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
        config: PlannerConfig | None = None,
    ) -> None:
        self._id = sessionid
        self.config = config if config is not None else PlannerConfig()
        self.planner = MotionPlanner(library, self.config, seed=seed)
        self._spf = samples_per_frame
        #: samples read past this frame's: the rest of the planner's lookahead
        self._ahead = max(0, self.config.lookahead_frames - 1) * samples_per_frame

    @property
    def actions(self) -> list[str]:
        return self.planner.actions

    def play(self, name: str) -> None:
        """Start action ``name`` (InvalidInputError listing the actions when there is none)."""
        self.planner.request_action(name)
        log_event(logger, "action", self._id, name=name)

    def interrupt(self) -> None:
        """Barge-in: the plan made for the speech that was dropped goes too."""
        self.planner.interrupt()

    def next(self, block: np.ndarray, playout: PlayoutBuffer) -> FootagePick:
        """The footage for the frame whose audio ``block`` was just taken from ``playout``."""
        for name in playout.due_cues():
            try:
                self.play(name)
            except InvalidInputError:  # matched when cued; kept safe all the same
                log_event(logger, "action_unknown", self._id, level=logging.WARNING, name=name)
        upcoming = playout.upcoming(self._ahead)
        audio = np.concatenate([block, upcoming]) if len(upcoming) else block
        return self.planner.next(speech_levels(audio, self._spf))


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
