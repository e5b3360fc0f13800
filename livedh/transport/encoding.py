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
