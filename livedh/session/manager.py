"""Owns the sessions of one app: creation (with a capacity limit), lookup and release."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from concurrent.futures import Executor

from livedh.config import AppConfig
from livedh.errors import CapacityError, InvalidInputError, NotFoundError
from livedh.lipsync.engine import LipSyncEngine
from livedh.llm.base import ChatLLM
from livedh.llm.history import ChatHistory
from livedh.logs import log_event
from livedh.media.memory import trim_heap
from livedh.metrics import Metrics
from livedh.session.hearing import Hearing
from livedh.session.session import Session
from livedh.transport.webrtc import WebRTCPeer
from livedh.tts.registry import TTSRegistry

logger = logging.getLogger(__name__)

#: new session ids are drawn from [SESSION_ID_MIN, 2**53)
SESSION_ID_MIN = 2**52
#: the largest integer JavaScript's Number holds exactly (LiveTalking's clients send ids as numbers)
MAX_SESSION_ID = 2**53 - 1


def parse_session_id(value: object) -> int:
    """A session id from JSON or a URL: an integer in [0, 2**53), or its decimal digits.

    Strict on purpose: int() of ``Infinity``, ``1e400`` or thousands of digits raises
    OverflowError/ValueError, which would be a 500 instead of the client's mistake.
    """
    key: int | None = None
    if isinstance(value, bool):
        pass  # a bool is an int in Python, never an id
    elif isinstance(value, int):
        key = value
    elif isinstance(value, float) and value.is_integer():  # JSON 123.0; False for inf and nan
        key = int(value)
    elif isinstance(value, str) and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
        key = int(value)
    if key is None:
        raise InvalidInputError("sessionid must be an integer")
    if not 0 <= key <= MAX_SESSION_ID:
        raise InvalidInputError(f"sessionid must be an integer from 0 to {MAX_SESSION_ID}")
    return key


#: connection states of a session whose ICE/DTLS handshake has not finished
_CONNECTING = ("new", "connecting", "checking")


class SessionManager:
    def __init__(
        self,
        config: AppConfig,
        lipsync: LipSyncEngine,
        tts: TTSRegistry,
        llm: ChatLLM | None = None,
        hearing: Hearing | None = None,
        encode_pool: Executor | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        #: the app's metrics, passed on to every session (a private one when none is given)
        self.metrics = metrics if metrics is not None else Metrics()
        self.lipsync = lipsync
        self.tts = tts
        self._llm = llm  # shared: it holds no conversation state
        self._hearing = hearing
        self._encode_pool = encode_pool
        self._sessions: dict[int, Session] = {}
        self._reserved = 0
        self._closing: set[asyncio.Future[object]] = set()
        self._watchers: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def get(self, sessionid: object) -> Session:
        key = parse_session_id(sessionid)
        session = self._sessions.get(key)
        if session is None:
            raise NotFoundError(f"no session {key}: it never existed or has closed")
        return session

    def _new_id(self) -> int:
        # The id is the session's capability: 2**52 possibilities, unguessable, yet exact in a
        # JavaScript Number (LiveTalking's clients send it as one; parseInt keeps it too).
        while True:
            candidate = SESSION_ID_MIN + secrets.randbelow(SESSION_ID_MIN)
            if candidate not in self._sessions:
                return candidate

    async def open_webrtc(
        self, sdp: str, sdp_type: str, engine: str | None = None, voice: str | None = None
    ) -> tuple[Session, str, str]:
        """Create a session streaming over a new peer connection; returns (session, sdp, type)."""
        if self._closed:
            raise CapacityError("the server is shutting down")
        if len(self._sessions) + self._reserved >= self.config.server.max_sessions:
            raise CapacityError(
                f"the server is full ({self.config.server.max_sessions} sessions); try again later"
            )
        # Offers that never finish ICE must not hold every slot until their timeout.
        limit = self.config.server.connecting_limit
        if self.connecting() + self._reserved >= limit:
            raise CapacityError(
                f"{limit} sessions are still connecting; try again in a few seconds"
            )
        tts = self.tts.get(engine)
        voice = self.tts.validate_voice(voice)
        self._reserved += 1
        try:
            sessionid = self._new_id()
            session = Session(
                sessionid, self.config.session, self.lipsync, tts,
                voice=voice if voice is not None else self.config.tts.voice,
                llm=self._llm,
                history=(
                    ChatHistory(self.config.llm.system_prompt, self.config.llm.max_history)
                    if self._llm is not None else None
                ),
                hearing=self._hearing,
                metrics=self.metrics,
            )
            model = self.lipsync.model
            peer = WebRTCPeer(
                session.channel, on_state=lambda s: self._on_state(session, s),
                encode_pool=self._encode_pool, frame_size=(model.width, model.height),
            )
            session.transport = peer
            session.emit = peer.send_event
            try:
                answer = await peer.accept(sdp, sdp_type, self.config.server.max_ice_candidates)
            except BaseException:
                await session.aclose()
                raise
            if peer.has_microphone:
                session.attach_microphone(peer.microphone())
            self._sessions[sessionid] = session
        finally:
            self._reserved -= 1
        session.connection = "connecting"
        log_event(logger, "connect", sessionid, tts=tts.name, sessions=len(self._sessions))
        self._watch_connect_timeout(session)
        return session, answer.sdp, answer.type

    def connecting(self) -> int:
        """Sessions whose WebRTC connection is not established yet."""
        return sum(1 for s in self._sessions.values() if s.connection in _CONNECTING)

    def _watch_connect_timeout(self, session: Session) -> None:
        async def watch() -> None:
            await asyncio.sleep(self.config.server.connect_timeout)
            if session.connection in _CONNECTING:
                log_event(logger, "connect_timeout", session.id, level=logging.WARNING)
                self._watchers.pop(session.id, None)
                await self.close(session.id)

        self._watchers[session.id] = asyncio.create_task(watch(), name=f"session-{session.id}-watch")

    def _spawn(self, coro: Awaitable[object]) -> None:
        task: asyncio.Future[object] = asyncio.ensure_future(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _on_state(self, session: Session, state: str) -> None:
        session.connection = state
        log_event(logger, "connection_state", session.id, state=state)
        if state in ("failed", "closed", "disconnected"):
            self._spawn(self.close(session.id))

    async def close(self, sessionid: int) -> bool:
        """Release a session and everything it started. False if it was already gone."""
        session = self._sessions.pop(sessionid, None)
        if session is None:
            return False
        watcher = self._watchers.pop(sessionid, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        await session.aclose()
        await asyncio.get_running_loop().run_in_executor(None, trim_heap)
        return True

    async def aclose(self) -> None:
        """Close every session. Idempotent."""
        self._closed = True
        await asyncio.gather(*(self.close(sid) for sid in list(self._sessions)))
        pending = [t for t in self._closing if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
