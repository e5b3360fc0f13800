"""Fair share of the TTS engine (issue 11): a session flooding it with long unsplittable text
cannot starve another session, nor keep it busy after an interrupt.

The engine here is a fake whose every piece of work runs until the test finishes it: what runs
in which order is decided by the scheduler alone, never by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from livedh.config import SessionConfig
from livedh.errors import ProviderError, RateLimitedError
from livedh.llm.sentences import split_text
from livedh.media.pcm import PcmChunk
from livedh.session.session import Session
from livedh.tts.base import TTSEngine
from livedh.tts.cache import CachingTTS, PhraseCache
from livedh.tts.scheduler import TTS_OWNER, TTS_URGENT, FairScheduler, stream_pieces
from livedh.tts.text import MAX_PIECE_CHARS, split_sentences
from tests.fakes import LoudnessModel, make_inline_lipsync, settle

WORD = "a" * 3999  # the attack: one word, no space, no punctuation
HELLO = "Hello, how can I help you today?"


@dataclass
class Piece:
    owner: Hashable
    text: str
    future: asyncio.Future[bool]
    emit: Callable[[PcmChunk], None]
    preempted: bool = False
    stopped: bool = False

    def preempt(self) -> None:
        self.preempted = True

    def stop(self) -> None:
        self.stopped = True


class GatedTTS(TTSEngine):
    """Shares ``workers`` through a FairScheduler, as piper does; each piece runs until the test
    calls ``finish`` on it, then yields one chunk of as many samples as the piece has characters."""

    name = "gated"

    def __init__(self, workers: int) -> None:
        self.scheduler = FairScheduler(workers)
        self.started: list[Piece] = []
        self.running: list[Piece] = []

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[PcmChunk]:
        owner = TTS_OWNER.get()  # the consumer's context, as the scheduler sees it
        loop = asyncio.get_running_loop()

        def start(piece: str, emit: Callable[[PcmChunk], None], cancel: threading.Event) -> Piece:
            work = Piece(owner, piece, loop.create_future(), emit)
            self.started.append(work)
            self.running.append(work)
            return work

        def closed() -> ProviderError:
            return ProviderError("closed", retryable=False)

        async for chunk in stream_pieces(self.scheduler, split_sentences(text), start, closed):
            yield chunk

    async def finish(self, owner: Hashable | None = None) -> Piece:
        """Complete the oldest running piece (of ``owner``, if given), then let the loop settle."""
        work = next(p for p in self.running if owner is None or p.owner == owner)
        self.running.remove(work)
        if work.preempted:
            work.future.set_result(False)  # stopped before its audio: to be run again
        else:
            work.emit(PcmChunk(np.full(len(work.text), 10000, dtype=np.int16), 16000))
            work.future.set_result(True)
        await settle()
        return work

    def owners(self) -> list[Any]:
        return [p.owner for p in self.started]


async def speak(
    engine: TTSEngine, owner: Hashable, text: str, heard: list[Any], *, urgent: bool = False
) -> None:
    """What a session's speaker does: synthesize in a task whose TTS owner is the session (and
    which says whether a listener is waiting)."""
    TTS_OWNER.set(owner)
    TTS_URGENT.set(urgent)
    async for _chunk in engine.synthesize(text):
        heard.append(owner)


# --- the hard wrap ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [WORD, "你好" * 500, "x" * 130 + ", " + "y" * 300 + ".",
                                  "Hi. " + "b" * 700, ("word " * 200).strip()])
def test_no_piece_for_an_engine_is_longer_than_the_bound(text: str) -> None:
    letters = text.replace(" ", "")
    for pieces in (split_sentences(text), split_text(text)):
        assert max(len(p) for p in pieces) <= MAX_PIECE_CHARS
        assert "".join(pieces).replace(" ", "") == letters  # nothing lost, nothing reordered
    assert len(split_sentences(WORD)) == 34


async def test_the_llm_splitter_wraps_a_streamed_word_as_it_arrives() -> None:
    async def deltas() -> AsyncIterator[str]:
        for i in range(0, len(WORD), 7):
            yield WORD[i : i + 7]

    from livedh.llm.sentences import split_sentences as split_stream

    pieces = [p async for p in split_stream(deltas())]
    assert max(len(p) for p in pieces) <= MAX_PIECE_CHARS
    assert "".join(pieces) == WORD


# --- the scheduler --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_new_session_waits_for_one_piece_of_a_flooder_not_its_whole_text(
    workers: int,
) -> None:
    engine = GatedTTS(workers)
    heard: list[Any] = []
    # The flooder asks three times at once (more than a session's speaker ever does).
    flood = [asyncio.create_task(speak(engine, "A", WORD, heard)) for _ in range(3)]
    await settle()
    assert engine.owners() == ["A"]  # a session's share: one piece at a time, whatever it asks
    assert engine.scheduler.waiting == 2
    b = asyncio.create_task(speak(engine, "B", HELLO, heard))
    await settle()
    if workers == 1:
        # Behind the piece in hand, not behind the 3 x 34 pieces queued for A.
        assert engine.owners() == ["A"]
        await engine.finish("A")
    assert engine.owners()[-1] == "B"
    assert engine.owners().count("A") == 1
    await engine.finish("B")
    await b
    assert "B" in heard
    # Then the flooder goes on, still one piece at a time.
    for _ in range(3):
        before = len(engine.started)
        await engine.finish("A")
        assert len(engine.started) == before + 1 and len(engine.running) == 1
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


async def test_pieces_alternate_between_sessions_and_a_new_one_goes_first() -> None:
    engine = GatedTTS(1)
    heard: list[Any] = []
    long_text = " ".join(f"Sentence number {i} is here." for i in range(6))
    a = asyncio.create_task(speak(engine, "A", long_text, heard))
    await settle()
    b = asyncio.create_task(speak(engine, "B", long_text, heard))
    await settle()
    for _ in range(3):
        await engine.finish()
    # A's continuation waits while B's first piece runs; then they take turns.
    assert engine.owners() == ["A", "B", "A", "B"]
    c = asyncio.create_task(speak(engine, "C", HELLO, heard))
    await settle()
    await engine.finish()
    assert engine.owners()[-1] == "C"  # never served: before both continuations
    await engine.finish("C")
    await c
    for task in (a, b):
        task.cancel()
    await asyncio.gather(a, b, return_exceptions=True)


async def test_a_waiting_listener_preempts_pieces_that_have_no_audio_out_yet() -> None:
    engine = GatedTTS(2)
    heard: list[Any] = []
    floods = [asyncio.create_task(speak(engine, owner, WORD, heard)) for owner in ("A1", "A2")]
    await settle()
    assert engine.owners() == ["A1", "A2"]  # both workers busy with the flood
    b = asyncio.create_task(speak(engine, "B", HELLO, heard, urgent=True))
    await settle()
    assert all(p.preempted for p in engine.running)  # asked to make way
    await engine.finish("A1")
    assert engine.owners() == ["A1", "A2", "B"]
    # While B's piece runs nothing else starts, even on the free worker: the cores are B's.
    await engine.finish("A2")
    assert engine.owners() == ["A1", "A2", "B"] and engine.scheduler.waiting == 2
    await engine.finish("B")
    await b
    # Then the preempted pieces run again (their audio never came out), and nothing is lost.
    assert [p.text for p in engine.running] == [WORD[:120], WORD[:120]]
    assert heard == ["B"]
    for task in floods:
        task.cancel()
    await asyncio.gather(*floods, return_exceptions=True)


async def test_after_an_interrupt_none_of_the_queued_pieces_run() -> None:
    engine = GatedTTS(1)
    heard: list[Any] = []
    flood = [asyncio.create_task(speak(engine, "A", WORD, heard)) for _ in range(3)]
    await settle()
    b = asyncio.create_task(speak(engine, "B", WORD, heard))
    await settle()
    assert engine.scheduler.waiting == 3
    for task in flood:
        task.cancel()  # barge-in: the consumers stop
    await settle()
    assert engine.scheduler.waiting == 1  # only B's piece is left
    await engine.finish("A")  # the piece in hand ends (piper: at its next chunk)
    assert engine.owners() == ["A", "B"]
    for _ in range(5):
        await engine.finish("B")
    assert engine.owners().count("A") == 1
    b.cancel()
    await asyncio.gather(*flood, b, return_exceptions=True)
    await settle()
    assert engine.scheduler.waiting == 0


async def test_closing_the_scheduler_tells_waiting_consumers() -> None:
    engine = GatedTTS(1)
    heard: list[Any] = []
    a = asyncio.create_task(speak(engine, "A", WORD, heard))
    b = asyncio.create_task(speak(engine, "B", HELLO, heard))
    await settle()
    running = engine.scheduler.close()
    assert len(running) == 1
    with pytest.raises(ProviderError, match="closed"):
        await b
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)


async def test_the_phrase_cache_keeps_working_in_front_of_the_scheduler() -> None:
    engine = GatedTTS(1)
    cached = CachingTTS(engine, PhraseCache())
    heard: list[Any] = []
    first = asyncio.create_task(speak(cached, "A", HELLO, heard))
    await settle()
    await engine.finish("A")
    await first
    await speak(cached, "B", HELLO, heard)  # from memory: no piece for the engine
    assert engine.owners() == ["A"] and heard == ["A", "B"]


# --- sessions -------------------------------------------------------------------------------------


async def test_sessions_share_the_engine_fairly_and_interrupt_drops_the_flood() -> None:
    engine = GatedTTS(1)
    lipsync = make_inline_lipsync(LoudnessModel())
    a = Session(1, SessionConfig(), lipsync, engine)
    b = Session(2, SessionConfig(), lipsync, engine)
    try:
        a.say(WORD)
        a.say(WORD)
        with pytest.raises(RateLimitedError, match="8000") as info:
            a.say(WORD)  # 3 x 3,999 characters: more than a session may have waiting
        assert info.value.retry_after >= 1
        await settle()
        b.say(HELLO)
        await settle()
        await engine.finish(1)
        assert engine.owners() == [1, 2]  # B's first piece right after A's piece in hand
        await engine.finish(2)
        assert len(b.playout) > 0
        await engine.finish(1)
        a.interrupt()
        await settle()
        await engine.finish(1)  # the piece that was running when the interrupt came
        assert engine.owners() == [1, 2, 1, 1]
        assert not engine.running and engine.scheduler.waiting == 0
        a.say(WORD)  # the queue is empty again: the limit counts only what waits
    finally:
        await a.aclose()
        await b.aclose()
        await lipsync.aclose()


# --- the real piper engine ------------------------------------------------------------------------


class Spy:
    """Wraps PiperVoice.synthesize: records the pieces started, and holds each one after the
    first until the test releases it (60 s at most: a hang fails instead)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.started: list[str] = []
        self.gates: list[threading.Event] = []
        self.waiting = threading.Semaphore(0)
        self.opened = threading.Event()

    def open(self) -> None:
        """No more holding: every piece, held or to come, runs."""
        self.opened.set()
        for gate in self.gates:
            gate.set()

    def __call__(self, text: str, syn_config: Any = None) -> Any:
        self.started.append(text)
        if len(self.started) > 1 and not self.opened.is_set():
            gate = threading.Event()
            self.gates.append(gate)
            self.waiting.release()
            gate.wait(timeout=60)
        yield from self.real(text, syn_config=syn_config)

    async def held(self) -> None:
        """Wait until one more piece waits at its gate."""
        assert await asyncio.to_thread(self.waiting.acquire, True, 60)


@pytest.fixture
async def piper(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Spy]]:
    from livedh.tts.piper import PiperTTS

    engine = PiperTTS(workers=1)
    voice = await engine.load()
    spy = Spy(voice.synthesize)
    monkeypatch.setattr(voice, "synthesize", spy)
    yield engine, spy
    spy.open()
    await engine.aclose()


async def test_piper_speaks_the_word_in_bounded_pieces_and_stops_within_one(
    piper: tuple[Any, Spy],
) -> None:
    engine, spy = piper
    chunks = engine.synthesize(WORD)
    first = await anext(chunks)
    assert len(first.samples) > 0
    await spy.held()  # the second piece is in hand
    await chunks.aclose()  # barge-in
    spy.open()
    assert [c async for c in engine.synthesize("Done.")]
    assert spy.started == [WORD[:120], WORD[120:240], "Done."]  # 2 of 34 pieces, then stop


async def test_piper_preempts_a_flood_piece_for_a_waiting_listener(
    piper: tuple[Any, Spy],
) -> None:
    engine, spy = piper
    heard: list[Any] = []
    flood = asyncio.create_task(speak(engine, "A", WORD, heard))
    await spy.held()  # A's second piece holds the only worker
    b = asyncio.create_task(speak(engine, "B", HELLO, heard, urgent=True))
    await settle()
    spy.gates[0].set()  # the piece runs into its terminated onnxruntime run: preempted
    await spy.held()  # B's piece is next
    spy.gates[1].set()
    await b
    await spy.held()  # then A's preempted piece, again
    flood.cancel()
    await asyncio.gather(flood, return_exceptions=True)
    assert spy.started == [WORD[:120], WORD[120:240], HELLO, WORD[120:240]]
    assert heard.count("A") == 1 and heard.count("B") >= 1  # no audio of the preempted run
