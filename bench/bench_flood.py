"""First audio of a normal session while other sessions flood the shared piper engine (issue 11).

The attack: a 3,999-character word with no space, sent again and again, plus long texts. Here
two flooding "sessions" (each a sequential speaker, as ``Session`` has: one utterance after the
other, the first one urgent, the rest not, since the flooder's own audio is then playing) keep
both piper workers busy, while a victim asks for "Hello, how can I help you today?" every
~0.7 s, each time with nobody of its own playing (urgent). Measured side by side in one run:
the victim's time to its first audio chunk with no flood, with the flood, and with the flood
but without preemption (urgent pieces only go first in the queue). Prints median/p90 and the
ratios (issue 11's target: within 1.2x), and the process's peak RSS. Asserts nothing.

    .venv/bin/python -m bench.bench_flood [--reps 12] [--flooders 2]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Hashable

import numpy as np

from livedh.tts.piper import PiperTTS
from livedh.tts.scheduler import TTS_OWNER, TTS_URGENT, FairScheduler

WORD = "a" * 3999
HELLO = "Hello, how can I help you today?"
LONG = " ".join(
    f"This is sentence number {i} of a long text that a client sent to keep the voice busy."
    for i in range(40)
)
FLOOD = [WORD, WORD, WORD, LONG]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def flooder(engine: PiperTTS, owner: Hashable) -> None:
    """A session's speaker with a full queue: utterance after utterance, forever."""
    TTS_OWNER.set(owner)
    urgent = True
    while True:
        for text in FLOOD:
            TTS_URGENT.set(urgent)
            urgent = False  # from now on its own audio is playing
            async for _ in engine.synthesize(text):
                pass


async def first_audio(engine: PiperTTS) -> float:
    TTS_OWNER.set("victim")
    TTS_URGENT.set(True)  # nothing of the victim's is playing: the listener waits
    start = time.perf_counter()
    stream = engine.synthesize(HELLO)
    try:
        await anext(stream)  # type: ignore[call-overload]
        return time.perf_counter() - start
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def measure(engine: PiperTTS, reps: int, flooders: int, rng: np.random.Generator) -> list[float]:
    tasks = [asyncio.create_task(flooder(engine, f"flooder-{i}")) for i in range(flooders)]
    try:
        if tasks:
            await asyncio.sleep(1.5)  # the flood is under way: both workers in the word's pieces
        out = []
        for _ in range(reps):
            out.append(await first_audio(engine))
            # Arrivals at varying moments of the flood pieces in hand.
            await asyncio.sleep(0.4 + float(rng.uniform(0, 0.6)))
        return out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def summary(name: str, values: list[float]) -> tuple[float, float]:
    ms = np.array(values) * 1000
    median, p90 = float(np.median(ms)), float(np.percentile(ms, 90))
    print(f"{name:<34} median {median:7.0f} ms   p90 {p90:7.0f} ms   max {ms.max():7.0f} ms")
    return median, p90


async def run(reps: int, flooders: int) -> None:
    engine = PiperTTS()
    await engine.load()
    for _ in range(2):
        await first_audio(engine)  # warm
    rss_before = rss_mb()
    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {}
    for _round in range(2):  # interleaved, so that slow drifts of the machine hit all three
        results.setdefault("no flood", []).extend(await measure(engine, reps // 2, 0, rng))
        results.setdefault("flood (preemption)", []).extend(
            await measure(engine, reps // 2, flooders, rng)
        )
        engine.scheduler = FairScheduler(2, preempt=False)
        results.setdefault("flood (queue order only)", []).extend(
            await measure(engine, reps // 2, flooders, rng)
        )
        engine.scheduler = FairScheduler(2)
    print(f"first audio of {HELLO!r}, {flooders} flooding sessions, {reps} requests each:")
    base, base90 = summary("no flood", results["no flood"])
    for name in ("flood (preemption)", "flood (queue order only)"):
        median, p90 = summary(name, results[name])
        print(f"{'':<34} ratio to no flood: median {median / base:.2f}x, p90 {p90 / base90:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS: {rss_before:.0f} MB after warm-up, peak {peak:.0f} MB over the run")
    await engine.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--flooders", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.reps, args.flooders))


if __name__ == "__main__":
    main()
