import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from livedh.lipsync.base import LipSyncModel, LipSyncRequest
from livedh.lipsync.engine import LipSyncEngine


class IndexModel(LipSyncModel):
    """Encodes (seed, frame_index) into the frame so results can be traced to requests."""

    width = height = 2

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.fail_on = fail_on

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        self.batches.append([(r.seed, r.frame_index) for r in batch])
        if self.fail_on is not None and any(r.frame_index == self.fail_on for r in batch):
            raise RuntimeError("boom")
        return [np.full((2, 2, 3), (r.seed, r.frame_index % 256, 0), np.uint8) for r in batch]


def _req(seed: int, index: int) -> LipSyncRequest:
    return LipSyncRequest(index, np.zeros(640, np.float32), seed)


async def test_batches_across_sessions_and_routes_results_in_order():
    model = IndexModel()
    engine = LipSyncEngine(model, max_batch=8, max_wait=0.01)

    async def session(seed: int) -> list[tuple[int, int]]:
        got = []
        for i in range(20):
            frame = await engine.render(_req(seed, i))
            got.append((int(frame[0, 0, 0]), int(frame[0, 0, 1])))
        return got

    results = await asyncio.gather(*(session(s) for s in range(1, 7)))
    for seed, got in zip(range(1, 7), results, strict=True):
        assert got == [(seed, i) for i in range(20)]
    # Six sessions submitting concurrently shared batches.
    assert max(len(b) for b in model.batches) > 1
    assert engine.stats.frames == 120
    await engine.aclose()


async def test_session_leaving_mid_batch_does_not_break_others():
    model = IndexModel()
    engine = LipSyncEngine(model, max_batch=8, max_wait=0.05)
    leaving = asyncio.create_task(engine.render(_req(9, 0)))
    staying = asyncio.create_task(engine.render(_req(3, 1)))
    await asyncio.sleep(0.01)
    leaving.cancel()
    frame = await staying
    assert frame[0, 0, 0] == 3
    with pytest.raises(asyncio.CancelledError):
        await leaving
    # The cancelled request was dropped before inference.
    assert all((9, 0) not in b for b in model.batches)
    await engine.aclose()


async def test_model_error_reaches_callers_and_engine_survives():
    engine = LipSyncEngine(IndexModel(fail_on=5), max_batch=1)
    with pytest.raises(RuntimeError, match="boom"):
        await engine.render(_req(1, 5))
    frame = await engine.render(_req(1, 6))
    assert frame[0, 0, 1] == 6
    await engine.aclose()
    await engine.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await engine.render(_req(1, 7))


async def test_engine_can_hand_out_i420_frames():
    import cv2

    class Solid(IndexModel):
        width = height = 16

        def infer(self, batch):
            return [np.full((16, 16, 3), (200, 30, 60), np.uint8) for _ in batch]

    engine = LipSyncEngine(Solid(), output_format="yuv420p")
    frame = await engine.render(_req(1, 0))
    assert frame.shape == (24, 16)
    back = cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420)
    assert np.abs(back.astype(int) - (200, 30, 60)).max() <= 3
    await engine.aclose()
    with pytest.raises(ValueError):
        LipSyncEngine(Solid(), output_format="nv12")
