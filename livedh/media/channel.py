"""The hand-off from a session's render loop to its transport.

Each rendered frame carries its video and the audio that plays during it, both stamped with the
same frame index on the session clock. The transport reads video per frame and audio in 20 ms
blocks, and paces both from the one clock, so audio and video cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from livedh.media.clock import MediaClock

AUDIO_BLOCK_SECONDS = 0.02


class ChannelClosed(Exception):
    """The channel was closed: the stream is over."""


@dataclass
class AVFrame:
    index: int
    video: np.ndarray  # uint8, in the channel's video_format
    audio: np.ndarray  # int16 mono, exactly one frame period of samples
    speech: bool


class AVChannel:
    """One producer (the render loop), two consumers (the video and the audio track).

    Bounded: if a consumer stops reading, old frames are dropped instead of growing memory.
    """

    def __init__(
        self, clock: MediaClock, fps: int, sample_rate: int, max_frames: int = 50,
        video_format: str = "rgb24",
    ) -> None:
        if sample_rate % fps or (sample_rate // fps) % int(sample_rate * AUDIO_BLOCK_SECONDS):
            raise ValueError("a frame period must hold a whole number of 20 ms audio blocks")
        self.clock = clock
        #: pixel format of AVFrame.video: "rgb24" (H x W x 3) or "yuv420p" (H*3/2 x W)
        self.video_format = video_format
        self.fps = fps
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate // fps
        self.samples_per_block = int(sample_rate * AUDIO_BLOCK_SECONDS)
        self._max_frames = max_frames
        self._video: deque[AVFrame] = deque()
        self._audio: deque[np.ndarray] = deque()
        self._audio_next_block = 0
        self._video_ready = asyncio.Event()
        self._audio_ready = asyncio.Event()
        self._started = asyncio.Event()
        self._closed = False
        #: how late (ms) the transport sent recent video frames after their due time
        self.video_lateness_ms: deque[float] = deque(maxlen=1500)
        #: also told each lateness, in seconds (the session's metrics histogram)
        self.on_lateness: Callable[[float], None] | None = None

    def note_lateness(self, seconds: float) -> None:
        """The transport sent a video frame ``seconds`` after its due time."""
        self.video_lateness_ms.append(seconds * 1000)
        if self.on_lateness is not None:
            self.on_lateness(seconds)

    def lateness_p99_ms(self) -> float:
        if not self.video_lateness_ms:
            return 0.0
        return float(np.percentile(np.fromiter(self.video_lateness_ms, float), 99))

    # -- producer side --------------------------------------------------------------------
    async def wait_started(self) -> None:
        """Wait until a consumer asks for media (the peer is connected)."""
        await self._started.wait()

    def put(self, frame: AVFrame) -> None:
        if self._closed:
            return
        self._video.append(frame)
        # Audio blocks are cut from each frame's samples; the block index follows the frame's.
        step = self.samples_per_block
        self._audio.extend(frame.audio[i : i + step] for i in range(0, self.samples_per_frame, step))
        while len(self._video) > self._max_frames:
            self._video.popleft()
        max_blocks = self._max_frames * (self.samples_per_frame // step)
        while len(self._audio) > max_blocks:
            self._audio.popleft()
            self._audio_next_block += 1
        self._video_ready.set()
        self._audio_ready.set()

    def silence_pending_audio(self) -> int:
        """Barge-in: everything rendered but not yet sent goes silent. Returns blocks silenced."""
        silenced = 0
        for i, block in enumerate(self._audio):
            if block.any():
                self._audio[i] = np.zeros_like(block)
                silenced += 1
        for frame in self._video:
            frame.speech = False
        return silenced

    def pending_speech(self) -> bool:
        return any(frame.speech for frame in self._video) or any(b.any() for b in self._audio)

    def close(self) -> None:
        self._closed = True
        self._video.clear()
        self._audio.clear()
        self._video_ready.set()
        self._audio_ready.set()
        self._started.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- consumer side --------------------------------------------------------------------
    def _start(self) -> None:
        if not self._started.is_set():
            self.clock.start()
            self._started.set()

    async def _wait_for(self, queue: deque[Any], ready: asyncio.Event) -> None:
        """Start the clock on first use; wait until ``queue`` has an item or the channel closes."""
        self._start()
        while not queue:
            if self._closed:
                raise ChannelClosed
            ready.clear()
            await ready.wait()
        if self._closed:
            raise ChannelClosed

    async def next_video(self) -> AVFrame:
        await self._wait_for(self._video, self._video_ready)
        return self._video.popleft()

    async def next_audio(self) -> tuple[int, np.ndarray]:
        """Return (block index, 20 ms of samples); block j is due at j * 20 ms."""
        index, blocks = await self.next_audio_blocks(1)
        return index, blocks[0]

    async def next_audio_blocks(self, most: int) -> tuple[int, list[np.ndarray]]:
        """Return (index of the first block, 1 to ``most`` consecutive blocks): those ready."""
        await self._wait_for(self._audio, self._audio_ready)
        index = self._audio_next_block
        blocks = [self._audio.popleft() for _ in range(min(most, len(self._audio)))]
        self._audio_next_block += len(blocks)
        return index, blocks
