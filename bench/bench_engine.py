"""The shared lip-sync engine against the bare model it wraps (issue 3's engine figures).

N simulated sessions submit one frame at a time (each waits for its frame, as a session does);
the engine batches across them. Compared side by side in one run: frames/s of the bare network
called directly at batch N, and frames/s through the engine with N sessions; plus the latency
the engine adds to a frame (its queueing and routing, beyond the inference of its batch).
On this CPU the sessions run back to back rather than at 25 fps (the network is slower than
real time here); on a GPU the same script measures the real thing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import torch

from livedh.lipsync.base import LipSyncModel, LipSyncRequest
from livedh.lipsync.engine import LipSyncEngine
from livedh.lipsync.generators import Wav2LipGenerator
from livedh.lipsync.nets import calibrate_batchnorm
from livedh.lipsync.nets.wav2lip import build_wav2lip
from livedh.lipsync.runtime import RuntimeConfig, make_runtime


class TimedGenerator(LipSyncModel):
    """The bare generator as a LipSyncModel, recording how long each batch's inference took."""

    def __init__(self, generator: Wav2LipGenerator) -> None:
        self.generator = generator
        self.audio_window = generator.audio_window
        self.batch_seconds: list[tuple[int, float]] = []
        s = generator.size
        self._crops = np.random.default_rng(0).integers(0, 255, (64, s, s, 3), dtype=np.uint8)

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        n = len(batch)
        audio = np.stack([r.audio for r in batch])
        start = time.perf_counter()
        out = self.generator.generate(self._crops[:n], self._crops[:n], audio)
        self.batch_seconds.append((n, time.perf_counter() - start))
        return list(out)


def bare_fps(model: TimedGenerator, batch: int, rounds: int) -> float:
    audio = np.random.default_rng(1).standard_normal((batch, model.audio_window)).astype(np.float32)
    model.generator.generate(model._crops[:batch], model._crops[:batch], audio * 0.1)
    start = time.perf_counter()
    for _ in range(rounds):
        model.generator.generate(model._crops[:batch], model._crops[:batch], audio * 0.1)
    return batch * rounds / (time.perf_counter() - start)


async def engine_run(model: TimedGenerator, sessions: int, frames: int) -> tuple[float, float, float]:
    engine = LipSyncEngine(model, max_batch=sessions, max_wait=0.02)
    rng = np.random.default_rng(2)
    latencies: list[float] = []

    async def session(seed: int) -> None:
        for i in range(frames):
            audio = (rng.standard_normal(model.audio_window) * 0.1).astype(np.float32)
            start = time.perf_counter()
            await engine.render(LipSyncRequest(i, audio, seed))
            latencies.append(time.perf_counter() - start)

    model.batch_seconds.clear()
    start = time.perf_counter()
    await asyncio.gather(*(session(s) for s in range(sessions)))
    wall = time.perf_counter() - start
    await engine.aclose()
    infer = dict(model.batch_seconds)
    mean_infer = float(np.mean([t for _, t in model.batch_seconds]))
    added = np.array(latencies) - mean_infer
    del infer
    return sessions * frames / wall, float(np.percentile(added, 99) * 1000), float(
        np.mean([n for n, _ in model.batch_seconds]))


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    network = build_wav2lip("96")
    calibrate_batchnorm(network, 96, (1, 80, 16))
    runtime = make_runtime(RuntimeConfig(kind="torch", device="cpu"), module=network)
    model = TimedGenerator(Wav2LipGenerator(runtime, size=96))
    print("Wav2Lip-96 (random weights), torch fp32 CPU, 2 threads")
    print(f"{'sessions':>8} {'bare fps @batch':>16} {'engine fps':>11} {'ratio':>6} "
          f"{'mean batch':>11} {'added p99 ms':>13}")
    for n in (1, 2, 4):
        bare = bare_fps(model, n, rounds=max(2, 12 // n))
        fps, added_p99, mean_batch = asyncio.run(engine_run(model, n, frames=max(6, 24 // n)))
        print(f"{n:>8} {bare:>16.1f} {fps:>11.1f} {fps / bare:>6.2f} {mean_batch:>11.1f} "
              f"{added_p99:>13.1f}")


if __name__ == "__main__":
    main()
