import asyncio
import itertools
import logging
import threading
import time

import numpy as np
import pytest

from livedh.config import SessionConfig
from livedh.errors import InvalidInputError, NotConfiguredError
from livedh.lipsync.engine import LipSyncEngine
from livedh.media.clock import MediaClock
from livedh.session.session import Session
from tests.fakes import LoudnessModel, ManualClock, make_fake_tts, make_inline_lipsync, settle


@pytest.fixture
async def engine():
    eng = LipSyncEngine(LoudnessModel())
    yield eng
    await eng.aclose()


async def _consume(session: Session, frames: int):
    """Read what the transport would: video per frame and audio per 20 ms, clock-paced."""
    videos, audios = [], []

    async def video():
        for _ in range(frames):
            f = await session.channel.next_video()
            await session.clock.wait_until(f.index / session.fps)
            videos.append(f)

    async def audio():
        for _ in range(frames * 2):
            i, block = await session.channel.next_audio()
            await session.clock.wait_until(i * 0.02)
            audios.append((i, block))

    await asyncio.gather(video(), audio())
    return videos, audios


async def _run_clock(clock: ManualClock, *, seconds: float = 60.0,
                     until: asyncio.Task | None = None, step: float = 0.02) -> None:
    """Move ``clock`` on by ``seconds`` in ``step``s (or until ``until`` is done), letting
    the session catch up at each step; the same steps in every run, whatever the load."""
    start = clock()
    for n in range(1, round(seconds / step) + 1):
        await settle()
        if until is not None and until.done():
            return
        clock.advance_to(start + n * step)
    await settle()


async def test_speech_audio_and_video_share_frame_indices():
    """On a ManualClock, rendering on the loop: a frame can never be late (and repeated)."""
    clock = ManualClock()
    tts = make_fake_tts()
    session = Session(123456, SessionConfig(render_ahead=2), make_inline_lipsync(LoudnessModel()),
                      tts, clock=MediaClock(clock, clock.sleep))
    consumer = asyncio.create_task(_consume(session, 40))
    await _run_clock(clock, seconds=0.2)
    session.say("hello there, this is a test")
    await _run_clock(clock, until=consumer)
    videos, audios = await consumer
    assert tts.calls == ["hello there, this is a test"]
    speech_frames = [v.index for v in videos if v.speech]
    assert speech_frames, "speech never reached the stream"
    audio_by_block = dict(audios)
    for v in videos:
        # The frame's brightness is the loudness of the audio sent in the same 40 ms.
        block = np.concatenate([audio_by_block[2 * v.index], audio_by_block[2 * v.index + 1]])
        loud = np.abs(block).max() > 1000
        assert loud == (v.video[0, 0, 0] > 50), f"frame {v.index} out of sync with its audio"
    assert [i for i, _ in audios] == list(range(80))
    await session.aclose()


async def test_interrupt_clears_every_buffer_within_a_frame():
    clock = ManualClock()
    tts = make_fake_tts(seconds_per_char=0.05, delay=0.1, sleep=clock.sleep)
    session = Session(1, SessionConfig(), make_inline_lipsync(LoudnessModel()), tts,
                      clock=MediaClock(clock, clock.sleep))
    consumer = asyncio.create_task(_consume(session, 30))
    session.say("a long sentence that would take many seconds to speak out loud " * 3)
    session.say("a queued second utterance")
    await _run_clock(clock, seconds=0.4)
    assert session.speaking
    interrupted_at = session.clock.elapsed()
    assert interrupted_at == pytest.approx(0.4)
    session.interrupt()
    assert not session.speaking
    await _run_clock(clock, until=consumer)
    _videos, audios = await consumer
    # Every audio block due a frame (40 ms) after the interrupt is silent; speech came before.
    late_blocks = [b for i, b in audios if i * 0.02 >= interrupted_at + 0.04]
    assert any(b.any() for i, b in audios if i * 0.02 < interrupted_at)
    assert late_blocks and not any(b.any() for b in late_blocks)
    assert tts.calls == [tts.calls[0]]  # the queued utterance was dropped
    assert tts.closed_early == 1
    assert interrupted_at > 0
    await session.aclose()


async def test_session_validates_text_and_chat_without_llm(engine):
    session = Session(2, SessionConfig(max_text_chars=100), engine, make_fake_tts())
    for bad in ["", "   ", "x" * 101, None, 5]:
        with pytest.raises(InvalidInputError):
            session.say(bad)  # type: ignore[arg-type]
    with pytest.raises(NotConfiguredError, match="LLM endpoint"):
        await session.chat("hi")
    await session.aclose()


async def test_aclose_releases_tasks_and_is_idempotent(engine):
    before_threads = {t.ident for t in threading.enumerate()}
    sessions = [Session(i, SessionConfig(), engine, make_fake_tts()) for i in range(5)]
    consumers = [asyncio.create_task(_consume(s, 5)) for s in sessions]
    for s in sessions:
        s.say("hello")
    await asyncio.gather(*consumers)
    for s in sessions:
        await s.aclose()
        await s.aclose()
    await asyncio.sleep(0)
    leftover = [
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and t.get_name().startswith("session-")
    ]
    assert leftover == []
    new_threads = [t for t in threading.enumerate() if t.ident not in before_threads]
    # Only the shared engine's worker, and the loop's own bounded default executor.
    assert all(t.name.startswith(("livedh-lipsync", "asyncio_")) for t in new_threads)


async def test_uploaded_audio_plays(engine):
    session = Session(3, SessionConfig(), engine, make_fake_tts())
    consumer = asyncio.create_task(_consume(session, 20))
    session.play_audio(np.full(16000 // 5, 8000, np.int16))
    videos, _audios = await consumer
    assert sum(1 for v in videos if v.speech) == 5
    await session.aclose()


class ScriptedLLM:
    """A ChatLLM fake: streams a scripted answer in small deltas, optionally stalling."""

    def __init__(self, answer: str, stall_after: int | None = None, sleep=asyncio.sleep) -> None:
        self.answer = answer
        self.stall_after = stall_after
        self.sleep = sleep  # a ManualClock's, to take the same time in every run
        self.requests: list[list[dict]] = []
        self.closed = 0

    async def stream(self, messages):
        self.requests.append(list(messages))
        try:
            for i in range(0, len(self.answer), 4):
                if self.stall_after is not None and i >= self.stall_after:
                    await self.sleep(3600)
                await self.sleep(0.005)
                yield self.answer[i : i + 4]
        finally:
            self.closed += 1

    async def aclose(self):
        pass


def _chat_session(engine, llm, tts):
    from livedh.llm.base import ChatLLM
    from livedh.llm.history import ChatHistory

    ChatLLM.register(ScriptedLLM)
    return Session(9, SessionConfig(), engine, tts, llm=llm, history=ChatHistory("be brief", 10))


async def test_chat_speaks_sentences_as_they_stream_and_keeps_history(engine):
    tts = make_fake_tts()
    llm = ScriptedLLM("First sentence here. Second one follows! And a third?")
    session = _chat_session(engine, llm, tts)
    consumer = asyncio.create_task(_consume(session, 75))
    await session.chat("hello")
    videos, _ = await consumer
    assert tts.calls == ["First sentence here.", "Second one follows!", "And a third?"]
    assert any(v.speech for v in videos)
    await session.chat("and then?")
    await settle()  # the new chat task asks the LLM at its first step
    second = llm.requests[1]
    assert second[0]["role"] == "system"
    assert [m["role"] for m in second[1:]] == ["user", "assistant", "user"]
    assert second[2]["content"].startswith("First sentence here.")
    await session.aclose()


async def test_barge_in_cancels_the_llm_stream_and_records_what_was_heard(engine):
    tts = make_fake_tts(seconds_per_char=0.05)
    llm = ScriptedLLM("One short sentence. " + "Never reached. " * 20, stall_after=24)
    session = _chat_session(engine, llm, tts)
    consumer = asyncio.create_task(_consume(session, 20))
    await session.chat("tell me a story")
    await asyncio.sleep(0.4)
    assert session.speaking
    session.interrupt()
    await settle()  # the cancelled chat task closes its stream
    assert llm.closed == 1  # the stalled HTTP stream was closed, not left hanging
    assert not session.speaking
    await consumer
    history = session._answering.history.messages  # type: ignore[union-attr]
    assert history[-1]["role"] == "assistant"
    assert "One short sentence." in history[-1]["content"]
    assert "Never reached" not in history[-1]["content"]
    await session.aclose()


async def test_a_renderer_slower_than_real_time_keeps_the_voice_on_time():
    import time as _time

    class SlowModel(LoudnessModel):
        def infer(self, batch):
            _time.sleep(0.1)  # 2.5 frame periods per frame
            return super().infer(batch)

    engine = LipSyncEngine(SlowModel())
    session = Session(11, SessionConfig(), engine, make_fake_tts())
    consumer = asyncio.create_task(_consume(session, 50))
    session.play_audio(np.full(16000, 8000, np.int16))  # one second of "speech"
    videos, audios = await consumer
    # Every block of the speech went out, in order: nothing was dropped or stretched.
    assert [i for i, _ in audios] == list(range(100))
    assert sum(1 for _, b in audios if b.any()) == 50
    # Video kept the clock by repeating pictures: fewer distinct renders than frames.
    assert len(videos) == 50
    distinct = len({id(v.video) for v in videos})
    assert distinct < 30
    await session.aclose()
    await engine.aclose()


class _CountingASR:
    """An ASREngine fake: answers every turn with the same text, after ``delay`` seconds (of
    ``clock`` when given: on the event loop, no thread, the same moment in every run)."""

    def __new__(cls, text: str, delay: float, clock: ManualClock | None = None):
        from livedh.asr.base import ASREngine, Transcript

        class _ASR(ASREngine):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []  # audio length of each call

            def transcribe(self, audio, language=None, *, partial=False):
                time.sleep(delay)
                return self._answer(audio, partial)

            async def atranscribe(self, audio, language=None, *, partial=False):
                if clock is None:
                    return await super().atranscribe(audio, language, partial=partial)
                await clock.sleep(delay)
                return self._answer(audio, partial)

            def _answer(self, audio, partial):
                if not partial:
                    self.seconds.append(len(audio) / 16000)
                return Transcript(text, "en", (), len(audio) / 16000, partial)

        return _ASR()


@pytest.fixture(scope="module")
def halting_speech() -> list[np.ndarray]:
    """Piper saying a sentence in two halves (a synchronous fixture: piper runs its own loop)."""
    from livedh.testing.speech import synthesize

    return synthesize(["I would like", "a cup of hot tea, please."])


@pytest.mark.parametrize("local", [True, False], ids=["local-answerer", "remote-llm"])
async def test_a_turn_is_answered_during_the_pause_and_played_only_when_it_ends(
    halting_speech, local, caplog
):
    """The person pauses mid-sentence (0.4 s: longer than early_silence, shorter than
    end_silence) and goes on: that speculative answer is dropped without a trace. At the final
    pause the answer is made while the turn-end silence runs, and plays when the turn ends.
    A remote LLM (it costs per request) is asked only once the turn has ended.

    On a ManualClock, in lock-step with the microphone: each moment below is the same in every
    run, however loaded the machine (the speech is piper's without noise, also the same)."""
    from livedh.asr.turns import EndOfTurn, TurnConfig, TurnDetector
    from livedh.asr.vad import SileroVADModel
    from livedh.llm.base import ChatLLM
    from livedh.llm.history import ChatHistory
    from livedh.session.hearing import Hearing, HearingConfig

    caplog.set_level(logging.INFO, logger="livedh.session")
    first, second = halting_speech
    # Piper ends a clip with a varying silence: cut it, so the pause is exactly 0.35 s.
    first = first[: np.flatnonzero(np.abs(first.astype(np.int32)) > 300)[-1] + 1]
    silence = np.zeros(16000, np.int16)
    mic = np.concatenate([silence[:4800], first, silence[:5600], second, silence, silence])
    turn = TurnConfig(end_silence=0.5, early_silence=0.2)
    vad = SileroVADModel.load()
    offline = TurnDetector(turn, vad)
    (end,) = [e for e in offline.push(mic) if isinstance(e, EndOfTurn)]
    clock = ManualClock()
    asr = _CountingASR("a cup of tea please", delay=0.05, clock=clock)
    hearing = Hearing(vad, asr, HearingConfig(language="en", partial_interval=0, turn=turn))
    ChatLLM.register(ScriptedLLM)
    llm = ScriptedLLM("Here is your tea.", sleep=clock.sleep)
    llm.local = local  # type: ignore[attr-defined]
    tts = make_fake_tts()
    lipsync = make_inline_lipsync(LoudnessModel())
    session = Session(5, SessionConfig(), lipsync, tts, llm=llm,
                      history=ChatHistory("be brief", 10), hearing=hearing,
                      clock=MediaClock(clock, clock.sleep))
    events: list[dict] = []
    session.emit = events.append
    pushed_at: list[float] = []  # microphone seconds fed when speech reached the playout
    fed = 0.0
    heard_at: list[tuple[float, float]] = []  # (microphone seconds fed, the clock's time)
    push = session.playout.push

    def spy_push(samples, *, at=None):
        if len(samples):
            pushed_at.append(fed)
        push(samples, at=at)

    session.playout.push = spy_push  # type: ignore[method-assign]

    async def microphone():
        # A packet every 20 ms of the clock (the pause leaves 0.3 s for ASR, LLM and TTS), once
        # what the previous one started has run as far as it can at that time; then silence
        # until the test has read the stream.
        nonlocal fed
        for n in itertools.count(1):
            await settle()
            clock.advance_to(n * 320 / 16000)
            await settle()
            fed = n * 320 / 16000
            heard_at.append((fed, clock()))
            yield mic[(n - 1) * 320 : n * 320] if n * 320 <= len(mic) else silence[:320]

    session.attach_microphone(microphone())
    # What the transport sends, paced by the session's clock, until the microphone ends.
    _, audio = await _consume(session, round(len(mic) / 16000 * session.fps))
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert len(finals) == 1, events
    # A speculative transcription at each pause (the mid-sentence one at least), none at the
    # turn end: the last one had 0.3 s less trailing silence than the turn's audio.
    assert len(asr.seconds) >= 2, asr.seconds
    assert asr.seconds[-1] == pytest.approx(len(end.audio) / 16000 - 0.3, abs=0.05)
    assert asr.seconds[0] < asr.seconds[-1] - 1.0
    # The dropped answers' LLM streams were closed; the history has one clean exchange.
    if local:
        # (a pause whose voice resumes while it is transcribed never reaches the answerer)
        assert 2 <= len(llm.requests) <= len(asr.seconds) and llm.closed >= 1
    else:
        assert len(llm.requests) == 1
    roles = [m["role"] for m in session._answering.history.messages]  # type: ignore[union-attr]
    assert roles == ["system", "user", "assistant"]
    assert tts.calls[-1] == "Here is your tea."
    # When the avatar's voice starts, against when the microphone had brought the turn's end:
    # end_silence after the voice (the turn's ``end``), a time the server knows in advance.
    samples = np.concatenate([block for _, block in audio])
    first_sound = session.clock.start() + np.flatnonzero(np.abs(samples) > 200)[0] / 16000
    turn_over = next(t for f, t in heard_at if f >= end.end + turn.end_silence - 1e-6)
    if local:
        # Made during the pause, in the playout before the turn ended, timed to start with
        # its end: to the millisecond, within the microphone packet that brought it; nothing
        # sounded before.
        assert pushed_at[0] < end.t
        assert first_sound == pytest.approx(end.end + turn.end_silence, abs=0.001)
        assert turn_over - 0.02 < first_sound <= turn_over, (first_sound - turn_over)
        # The mid-sentence answer was scheduled too (its pause came within 0.05 s of a turn
        # end) and taken back out when the voice resumed: it never sounded (first_sound).
        assert "event=turn_dropped session=5 reason=resumed" in caplog.text
        assert "scheduled=True" in caplog.text.split("event=turn_dropped")[1].splitlines()[0]
    else:  # the LLM is asked at the turn end: its (fake, fast) reply follows
        assert end.t - 0.01 <= pushed_at[0] <= end.t + 0.3, (pushed_at, end.t)
        assert turn_over < first_sound < turn_over + 0.4
    await session.aclose()
    await lipsync.aclose()


async def test_no_answer_is_prepared_while_an_earlier_turn_is_still_transcribed(
    engine, halting_speech
):
    """A turn still being transcribed when the next one pauses: the second is not answered
    during its pause (its held answer would collect the first one's audio too); it is answered
    the plain way when it ends, after the first."""
    from livedh.asr.turns import TurnConfig
    from livedh.asr.vad import SileroVADModel
    from livedh.llm.base import ChatLLM
    from livedh.llm.history import ChatHistory
    from livedh.session.hearing import Hearing, HearingConfig

    _, second = halting_speech
    clock = ManualClock()
    # Longer than the microphone's audio (~2.8 s of the clock): the pause comes while it runs.
    asr = _CountingASR("a cup of tea please", delay=4.0, clock=clock)
    hearing = Hearing(SileroVADModel.load(), asr, HearingConfig(
        language="en", partial_interval=0, turn=TurnConfig(end_silence=0.5, early_silence=0.2)))
    ChatLLM.register(ScriptedLLM)
    llm = ScriptedLLM("Here is your tea.", sleep=clock.sleep)
    llm.local = True  # type: ignore[attr-defined]
    session = Session(6, SessionConfig(), engine, make_fake_tts(), llm=llm,
                      history=ChatHistory("be brief", 10), hearing=hearing,
                      clock=MediaClock(clock, clock.sleep))
    session.emit = lambda event: None
    held_seen: list[bool] = []
    # The earlier turn: transcribing (4 s) while the person already asks again.
    session._child(session._answering.answer_turn(second, "en", hearing), "turn")
    mic = np.concatenate([np.zeros(3200, np.int16), second, np.zeros(16000, np.int16)])

    done = asyncio.Event()

    async def microphone():
        # 20 ms of the clock per packet, in lock-step (see the test above), then silence until
        # both turns are answered (12 s of the clock at most: two transcriptions and the audio).
        for n in range(1, 600):
            await settle()
            clock.advance_to(n * 320 / 16000)
            await settle()
            if len(llm.requests) == 2:
                break
            held_seen.append(session._speaker.held is not None)
            yield mic[(n - 1) * 320 : n * 320] if n * 320 <= len(mic) else mic[:320] * 0
        done.set()

    session.attach_microphone(microphone())
    await asyncio.wait_for(done.wait(), 60)  # a hang guard, not a speed requirement
    assert len(held_seen) > len(mic) / 320  # the second turn's pause was heard
    assert not any(held_seen)
    assert len(llm.requests) == 2  # both turns answered, the later one at its end
    await session.aclose()


async def test_an_answer_whose_speech_fails_reports_it_and_listens_again(engine):
    """Every sentence of the answer fails in the TTS (a bug, not a typed error): the page gets
    an error that does not repeat the bug's words, and the state leaves "thinking"."""
    from livedh.tts.base import TTSEngine

    class BrokenTTS(TTSEngine):
        name = "broken"

        async def synthesize(self, text, voice=None):
            raise RuntimeError("/opt/secret/voice.onnx exploded")
            yield  # an async generator, like every engine

    session = _chat_session(engine, ScriptedLLM("One sentence. And another one."), BrokenTTS())
    events: list[dict] = []
    session.emit = events.append
    try:
        await session.chat("hello")
        assert session._answering.chat_task is not None
        await asyncio.wait_for(session._answering.chat_task, 30)  # a guard, not a timing: the answer is in
        for _ in range(200):
            if len([e for e in events if e["type"] == "error"]) == 2 and not session.speaking:
                break
            await settle()
        errors = [e for e in events if e["type"] == "error"]
        assert [e["where"] for e in errors] == ["tts", "tts"]
        assert not any("/opt/secret" in e["msg"] for e in errors)
        assert [e["state"] for e in events if e["type"] == "state"][-1] == "listening"
    finally:
        await session.aclose()
