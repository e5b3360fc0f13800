"""One engine per lip-sync model, shared by every session: a dynamic batcher.

Sessions submit one request per frame and await the frame. A single worker collects what is
queued across sessions (up to ``max_batch``, waiting at most ``max_wait`` for more), runs one
batched ``infer`` in the engine's own thread, and routes each result back. The event loop never
blocks on inference, and an idle session submits nothing, so it costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from livedh.lipsync.base import LipSyncModel, LipSyncRequest
from livedh.logs import log_event

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    batches: int = 0
    frames: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class LipSyncEngine:
    def __init__(
        self,
        model: LipSyncModel,
        *,
        max_batch: int = 16,
        max_wait: float = 0.0,
        name: str = "livedh-lipsync",
        output_format: str = "rgb24",
    ) -> None:
        """``output_format`` "yuv420p" converts frames to I420 in the worker thread: video
        encoders take I420, and converting here keeps that work off the event loop and off
        the encoder's slower generic converter."""
        if output_format not in ("rgb24", "yuv420p"):
            raise ValueError(f"unsupported output format {output_format!r}")
        self.output_format = output_format
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.name = name
        self.stats = EngineStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        #: where the sessions' motion planners run their steps (and are built), off the event
        #: loop: a replan takes milliseconds. Shared by the sessions of this model's avatar; its
        #: threads start on first use. Replaceable (tests run steps inline).
        self.motion_executor: Executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="livedh-motion")
        self._queue: asyncio.Queue[tuple[LipSyncRequest, asyncio.Future[np.ndarray]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def render(self, request: LipSyncRequest) -> np.ndarray:
        if self._closed:
            raise RuntimeError("lip-sync engine is closed")
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name=f"{self.name}-batcher")
        assert self._queue is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _collect(self) -> list[tuple[LipSyncRequest, asyncio.Future[np.ndarray]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        # A session that left mid-batch cancelled its future: skip its work.
        return [(req, fut) for req, fut in batch if not fut.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            requests = [req for req, _ in batch]
            try:
                frames = await loop.run_in_executor(self._executor, self._infer, requests)
                if len(frames) != len(requests):
                    raise RuntimeError(
                        f"{type(self.model).__name__}.infer returned {len(frames)} frames "
                        f"for {len(requests)} requests"
                    )
            except Exception as exc:  # routed to every waiting session, worker keeps going
                log_event(logger, "lipsync_error", level=logging.ERROR, error=repr(exc))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.frames += len(frames)
            self.stats.batch_sizes[len(frames)] = self.stats.batch_sizes.get(len(frames), 0) + 1
            for (_, fut), frame in zip(batch, frames, strict=True):
                if not fut.done():
                    fut.set_result(frame)

    def _infer(self, requests: list[LipSyncRequest]) -> list[np.ndarray]:
        frames = self.model.infer(requests)
        if self.output_format == "yuv420p":
            return [cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420) for frame in frames]
        return frames

    async def aclose(self) -> None:
        """Stop the worker, fail pending requests, join the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        await asyncio.get_running_loop().run_in_executor(None, self.motion_executor.shutdown, True)
        self.model.close()
