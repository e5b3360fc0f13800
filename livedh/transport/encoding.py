"""Video encoding done by us (not by aiortc): cheaper settings, in a named worker pool.

aiortc encodes H.264 with x264's default preset, about 10 ms per 512x512 frame here; real-time
streaming wants `ultrafast` + `zerolatency` (bench/bench_encode.py compares them). The packets
go to aiortc already encoded (it only packetizes them), and the same encoded stream can feed
other outputs.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

VIDEO_CLOCK_RATE = 90000


class H264Encoder:
    """One per stream; not thread-safe (a stream encodes one frame at a time).

    700 kbit/s suits a 512x512 talking head over still footage, and matters beyond quality:
    every RTP packet costs the server's event loop Python time (aiortc), so fewer packets per
    frame means more sessions per process.
    """

    def __init__(self, width: int, height: int, fps: int, bitrate: int = 700_000,
                 keyframe_interval_s: float = 2.0) -> None:
        self.fps = fps
        self._ticks = VIDEO_CLOCK_RATE // fps
        codec = av.CodecContext.create("libx264", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.framerate = Fraction(fps, 1)
        codec.time_base = Fraction(1, fps)
        codec.bit_rate = bitrate
        codec.profile = "Baseline"
        keyint = max(1, round(keyframe_interval_s * fps))
        kbps = bitrate // 1000
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "level": "31",
            # Periodic keyframes with SPS/PPS, so a viewer who lost packets (or joins) recovers;
            # a bounded rate buffer, so one busy frame cannot burst the network.
            "x264-params": (
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:repeat-headers=1:"
                f"vbv-maxrate={kbps}:vbv-bufsize={kbps}:threads=1"
            ),
        }
        self._codec = codec

    def encode(self, image: np.ndarray, pixel_format: str, index: int,
               keyframe: bool = False) -> list[av.Packet]:
        """Encode frame ``index`` (pts index/fps on the session clock); blocking."""
        frame = av.VideoFrame.from_ndarray(image, format=pixel_format)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = index
        frame.time_base = Fraction(1, self.fps)
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = list(self._codec.encode(frame))
        for packet in packets:
            # Same clock as the audio: frame i is due at i / fps.
            packet.pts = packet.dts = index * self._ticks
            packet.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        return packets


#: Opus's RTP clock is 48 kHz whatever the audio's own rate
OPUS_CLOCK_RATE = 48000


class OpusEncoder:
    """Mono Opus for a session's 16 kHz speech, one 20 ms block at a time; blocking, not
    thread-safe (one stream). aiortc's own encoder resamples to 48 kHz stereo at 96 kbit/s and
    runs one executor job per 20 ms block; speech at 16 kHz needs neither, and this one
    encodes the blocks of a frame in one job."""

    def __init__(self, sample_rate: int = 16000, block_samples: int = 320,
                 bitrate: int = 32_000) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = sample_rate
        codec.time_base = Fraction(1, sample_rate)
        codec.bit_rate = bitrate
        codec.options = {"application": "voip", "frame_duration": "20"}
        codec.open()
        if codec.frame_size != block_samples:
            raise ValueError(f"Opus takes {codec.frame_size}-sample frames, not {block_samples}")
        self._codec = codec
        self._rate = sample_rate
        self._block = block_samples
        self._ticks = OPUS_CLOCK_RATE * block_samples // sample_rate

    def encode(self, first_index: int, blocks: list[np.ndarray]) -> list[av.Packet]:
        """One packet per block: block ``first_index + j`` gets RTP time (index) * 20 ms."""
        packets: list[av.Packet] = []
        for j, block in enumerate(blocks):
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = (first_index + j) * self._block
            frame.time_base = Fraction(1, self._rate)
            # libopus returns exactly one packet per 20 ms frame (its look-ahead delay shifts
            # the audio by 6.5 ms, as aiortc's encoder does): time them by block index.
            for packet in self._codec.encode(frame):
                packet.pts = (first_index + j) * self._ticks
                packet.time_base = Fraction(1, OPUS_CLOCK_RATE)
                packets.append(packet)
        return packets
