"""CPU cost of encoding avatar frames with aiortc's encoders (H.264 via x264, VP8 via libvpx)."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from livedh.config import AppConfig
from livedh.lipsync.loader import load_lipsync_model
from livedh.media.pcm import SESSION_SAMPLE_RATE


def frames(count: int) -> list[np.ndarray]:
    model = load_lipsync_model(AppConfig())
    from livedh.lipsync.base import LipSyncRequest

    t = np.arange(model.audio_window) / SESSION_SAMPLE_RATE
    out = []
    for i in range(count):
        level = 0.3 * (0.5 + 0.5 * np.sin(i / 3))
        audio = (np.sin(2 * np.pi * 180 * t) * level).astype(np.float32)
        out.append(model.infer([LipSyncRequest(i, audio, 1)])[0])
    return out


def encode_ms(codec: str, images: list[np.ndarray]) -> tuple[float, float]:
    params = {"H264": RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=102,
        parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1",
                    "profile-level-id": "42e01f"}),
        "VP8": RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)}
    encoder = get_encoder(params[codec])
    times = []
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i * 3600
        frame.time_base = Fraction(1, 90000)
        start = time.perf_counter()
        encoder.encode(frame, force_keyframe=(i == 0))
        times.append((time.perf_counter() - start) * 1000)
    steady = np.array(times[10:])
    return float(steady.mean()), float(np.percentile(steady, 99))


def livedh_h264_ms(images: list[np.ndarray]) -> tuple[float, float, float]:
    import cv2

    from livedh.transport.encoding import H264Encoder

    encoder = H264Encoder(images[0].shape[1], images[0].shape[0], fps=25)
    # The server hands the encoder I420 frames (converted in the lip-sync worker).
    i420 = [cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420) for image in images]
    times, sizes = [], []
    for i, image in enumerate(i420):
        start = time.perf_counter()
        packets = encoder.encode(image, "yuv420p", i, keyframe=(i == 0))
        times.append((time.perf_counter() - start) * 1000)
        sizes.append(sum(p.size for p in packets))
    steady = np.array(times[10:])
    kbps = float(np.mean(sizes[10:])) * 8 * 25 / 1000
    return float(steady.mean()), float(np.percentile(steady, 99)), kbps


def main() -> None:
    images = frames(200)
    print("encode 512x512 avatar frames (one thread, after 10 warm-up frames)")
    print(f"{'encoder':<34} {'mean ms':>8} {'p99 ms':>8}")
    for codec in ("H264", "VP8"):
        mean, p99 = encode_ms(codec, images)
        print(f"{'aiortc ' + codec:<34} {mean:8.2f} {p99:8.2f}")
    mean, p99, kbps = livedh_h264_ms(images)
    print(f"{'livedh H264 (ultrafast, I420 in)':<34} {mean:8.2f} {p99:8.2f}   ({kbps:.0f} kbit/s)")


if __name__ == "__main__":
    main()
