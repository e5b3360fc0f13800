"""Fair sharing of a TTS engine's workers between sessions, one sentence at a time.

An engine with a fixed pool of workers (piper: a thread pool) is shared by every session. If a
whole text were one job, a session asking for a long text would hold a worker for its whole
duration, and a flood of such requests would hold them all. Here the unit of work is one
bounded piece of text (``text.split_sentences`` cuts long runs), and each time a worker frees
up, ``FairScheduler`` picks which waiting piece runs next:

- a session runs at most ``per_owner`` pieces at once (its share of the workers);
- an urgent piece (the first of an utterance that a listener is waiting for: nothing of that
  session is playing) goes before the others, which only have to keep ahead of playback; while
  one runs or waits no other piece starts, and running ones that have not produced audio yet
  are preempted (stopped, and run again later): on a CPU, two syntheses at once each take
  twice as long, so sharing the cores with a flood would double the wait that matters;
- then the session served least recently, so a session that just arrived waits for at most
  the piece in hand of each busy session, not for their whole texts.

Who asks: ``TTSEngine.synthesize(text, voice)`` is the one hook every engine, wrapper (the
phrase cache) and fake implements, so the asker travels in a context variable rather than a
new parameter on all of them. A session sets ``TTS_OWNER`` in the task that consumes the
synthesis; an async generator's body runs in its consumer's context, so the engine reads the
right owner however many wrappers are in between. Without one, each synthesis is its own
owner. ``TTS_URGENT`` says the same way whether the listener is waiting (default: yes).

Everything here runs on the event loop (no lock); pieces run wherever ``start`` puts them.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")

#: The session (or other client) on whose behalf the current task synthesizes speech.
TTS_OWNER: ContextVar[Hashable | None] = ContextVar("livedh_tts_owner", default=None)
#: Whether the owner's listener is waiting for this speech (nothing of theirs is playing).
TTS_URGENT: ContextVar[bool] = ContextVar("livedh_tts_urgent", default=True)

# Owners' last turns are remembered for round-robin order; this bounds the memory of them.
_MAX_REMEMBERED_OWNERS = 4096


class PieceJob(Protocol):
    """A piece being synthesized. ``future``: True when the piece is done, False when it was
    preempted before any of its audio came out (it is then run again)."""

    future: asyncio.Future[bool]

    def preempt(self) -> None:
        """Stop soon if no audio has come out yet (a no-op where that cannot be done)."""

    def stop(self) -> None:
        """The consumer is gone (barge-in): stop as soon as possible."""


@dataclass(eq=False)
class Ticket:
    """One piece of work waiting for, or holding, a worker."""

    owner: Hashable
    urgent: bool
    start: Callable[[], PieceJob]
    #: called (on the loop) when the ticket is dropped by ``close`` before it started
    on_drop: Callable[[], None]
    #: called (on the loop) with the piece's future once it is done, after its worker is free
    on_done: Callable[[asyncio.Future[bool]], None]
    seq: int
    state: str = "waiting"  # -> running -> done, or -> cancelled
    job: PieceJob | None = field(default=None, repr=False)


class FairScheduler:
    """Runs submitted pieces on ``workers`` slots, choosing fairly among owners (see module)."""

    def __init__(self, workers: int, *, per_owner: int = 1, preempt: bool = True) -> None:
        if workers < 1 or per_owner < 1:
            raise ValueError("workers and per_owner must be >= 1")
        self.workers = workers
        self.per_owner = per_owner
        #: urgent pieces preempt others and run alone (off: they only go first in the queue)
        self.preempt = preempt
        self._waiting: list[Ticket] = []
        self._running: set[Ticket] = set()
        #: owner -> the turn number it was last served at (least recent first)
        self._last_served: OrderedDict[Hashable, int] = OrderedDict()
        self._seq = itertools.count()
        self._turns = itertools.count()
        self._closed = False
        #: owners in the order their pieces started (for tests and benchmarks)
        self.started: list[Hashable] = []

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(
        self,
        owner: Hashable,
        start: Callable[[], PieceJob],
        *,
        urgent: bool,
        on_drop: Callable[[], None],
        on_done: Callable[[asyncio.Future[bool]], None],
    ) -> Ticket:
        """Queue a piece: ``start()`` is called when it gets a worker and returns the job, whose
        future is done when the piece is; the worker is busy until then."""
        ticket = Ticket(owner, urgent, start, on_drop, on_done, next(self._seq))
        if self._closed:
            ticket.state = "cancelled"
            on_drop()
            return ticket
        self._waiting.append(ticket)
        self._dispatch()
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Forget a piece that has not started (it never will); True if it was waiting."""
        if ticket.state != "waiting":
            return False
        ticket.state = "cancelled"
        self._waiting.remove(ticket)
        return True

    def close(self) -> list[asyncio.Future[bool]]:
        """Drop every waiting piece (their ``on_drop`` tell their consumers), stop the running
        ones and refuse new ones; returns the running pieces' futures, for the caller to await."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        for ticket in waiting:
            ticket.state = "cancelled"
            ticket.on_drop()
        running = [t.job for t in self._running if t.job is not None]
        for job in running:
            job.stop()
        return [job.future for job in running]

    def _priority(self, ticket: Ticket) -> tuple[bool, int, int]:
        return (not ticket.urgent, self._last_served.get(ticket.owner, -1), ticket.seq)

    def _running_for(self, owner: Hashable) -> int:
        return sum(1 for t in self._running if t.owner == owner)

    def _dispatch(self) -> None:
        # Starting a piece moves it from waiting to running: whether one is urgent stays.
        urgent = self.preempt and any(t.urgent for t in (*self._running, *self._waiting))
        while len(self._running) < self.workers:
            eligible = [t for t in self._waiting if self._running_for(t.owner) < self.per_owner]
            if not eligible:
                break
            chosen = min(eligible, key=self._priority)
            if urgent and not chosen.urgent:
                break  # the cores are for the urgent piece until it is done
            self._run(chosen)
        if urgent:
            # A listener is waiting: what has no audio out yet makes way (it runs again later).
            for ticket in self._running:
                if not ticket.urgent and ticket.job is not None:
                    ticket.job.preempt()

    def _run(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)
        ticket.state = "running"
        self._running.add(ticket)
        owner = ticket.owner
        self._last_served[owner] = next(self._turns)
        self._last_served.move_to_end(owner)
        while len(self._last_served) > _MAX_REMEMBERED_OWNERS:
            self._last_served.popitem(last=False)
        self.started.append(owner)
        del self.started[:-1000]  # a window, not a history
        try:
            ticket.job = ticket.start()
        except Exception as exc:  # handed to the consumer through the job's future
            ticket.job = _FailedJob(exc)
        # The worker is handed on before the owner's next piece is queued (by on_done).
        ticket.job.future.add_done_callback(lambda _: self._finish(ticket))
        ticket.job.future.add_done_callback(ticket.on_done)

    def _finish(self, ticket: Ticket) -> None:
        ticket.state = "done"
        self._running.discard(ticket)
        self._dispatch()


class _FailedJob:
    def __init__(self, exc: Exception) -> None:
        self.future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.future.set_exception(exc)

    def preempt(self) -> None:
        pass

    def stop(self) -> None:
        pass


#: ``start_piece(piece, emit, cancel)``: begin synthesizing ``piece``, passing each chunk to
#: ``emit`` (callable from any thread) and stopping early once ``cancel`` is set; returns the
#: job, whose future is done (or failed, with a typed error) when the piece is.
StartPiece = Callable[[str, Callable[[T], None], threading.Event], PieceJob]


async def stream_pieces(
    scheduler: FairScheduler,
    pieces: Sequence[str],
    start_piece: StartPiece[T],
    dropped: Callable[[], BaseException],
    owner: Hashable | None = None,
) -> AsyncIterator[T]:
    """Synthesize ``pieces`` one after another through ``scheduler``, yielding their chunks.

    The next piece is queued as soon as the previous one is done, not when the consumer reads
    on, so the speech keeps ahead of playback. Closing the generator (barge-in) sets the cancel
    flag of the piece in hand and withdraws the queued one: it never runs. ``dropped()`` is
    the error a consumer gets when the scheduler is closed under it.
    """
    if not pieces:
        return
    who: Hashable = owner if owner is not None else TTS_OWNER.get()
    if who is None:
        who = object()  # anonymous: a share of its own
    urgent = TTS_URGENT.get()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | BaseException | None] = asyncio.Queue()
    cancel = threading.Event()
    ticket: Ticket | None = None

    def emit(item: T) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def submit(index: int, again: bool = False) -> None:
        nonlocal ticket
        piece = pieces[index]
        ticket = scheduler.submit(
            who,
            lambda: start_piece(piece, emit, cancel),
            # A preempted first piece runs again as any other: preempted, it was not urgent.
            urgent=urgent and index == 0 and not again,
            on_drop=lambda: queue.put_nowait(dropped()),
            on_done=lambda done: after(index, done),
        )

    def after(index: int, done: asyncio.Future[bool]) -> None:
        if done.cancelled():
            queue.put_nowait(dropped())
        elif (exc := done.exception()) is not None:
            queue.put_nowait(exc)
        elif cancel.is_set():
            return
        elif not done.result():
            submit(index, again=True)  # preempted before any audio: its turn comes again
        elif index + 1 < len(pieces):
            submit(index + 1)
        else:
            queue.put_nowait(None)

    submit(0)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        if ticket is not None and not scheduler.cancel(ticket) and ticket.job is not None:
            ticket.job.stop()
