"""What a session keeps about its speech: queued utterances, a held voice turn, its child tasks,
its public state (the data the session's stages pass around; the behaviour is in the stages)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from livedh.media.pcm import SESSION_SAMPLE_RATE
from livedh.tts.base import TTSEngine


class Transport(Protocol):
    """The output a session closes with it (the WebRTC peer)."""

    async def aclose(self) -> None: ...


class ChildTasks:
    """A session's child tasks, cancelled or not, until they finish: aclose awaits them all.
    Its stages start theirs through ``spawn`` (which holds no reference to the session)."""

    def __init__(self, sessionid: int) -> None:
        self._id = sessionid
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[object, object, None], role: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"session-{self._id}-{role}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


@dataclass
class Utterance:
    """Text (or a recording) waiting for the speaker, tagged with the answer it belongs to."""

    text: str | None = None
    pcm: np.ndarray | None = None
    engine: TTSEngine | None = None
    voice: str | None = None
    generation: int = 0
    #: for chat answers: the list of sentences of this answer that reached the speaker
    spoken_log: list[str] | None = None
    #: actions (named by tags in the text) started when this utterance starts playing; an
    #: utterance with neither text nor pcm only starts them
    actions: tuple[str, ...] = ()
    requested_at: float = field(default_factory=time.monotonic)


@dataclass
class HeldTurn:
    """A voice turn answered before it is known to be over (the person paused, see
    ``SpeechPaused``). What the answer produces (events for the page, the answer's audio) waits
    here: played when the turn ends, dropped if the person goes on talking. The audio enters
    the playout buffer just before the turn ends, timed to start as it ends (see Speaker)."""

    task: asyncio.Task[None] | None = None
    #: set when the turn ends as paused (what a remote LLM waits for before it is asked)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: the answer's audio not yet in the playout buffer
    audio: list[np.ndarray] = field(default_factory=list)
    #: actions due when the chunk at this index of ``audio`` starts (see BodyMotion)
    cues: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    #: the answer's audio so far, in samples
    samples: int = 0
    #: when the turn ends if the person stays silent (session clock; see Speaker) ...
    ends_at: float | None = None
    #: ... as guessed from the microphone audio that arrived at this moment
    guessed_at: float = 0.0
    #: the audio is in the playout buffer, timed to start when the turn ends
    scheduled: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    #: history updates, made only if the answer is heard
    records: list[Callable[[], None]] = field(default_factory=list)
    state: Literal["held", "released", "dropped"] = "held"

    @property
    def audio_ms(self) -> int:
        return round(self.samples / SESSION_SAMPLE_RATE * 1000)

    def record(self, update: Callable[[], None]) -> None:
        if self.state == "released":
            update()
        elif self.state == "held":
            self.records.append(update)


@dataclass
class SessionState:
    sessionid: int
    connection: str
    state: str
    speaking: bool
    queued: int
    tts_engine: str
    tts_voice: str | None
    frames_sent: int
    #: p99 of how late video frames left the server after their due time (recent frames)
    video_late_p99_ms: float
    uptime: float
    errors: list[dict[str, object]] = field(default_factory=list)
    #: the avatar's actions (POST .../action), in manifest order; empty without a motion graph
    actions: list[str] = field(default_factory=list)
