"""`livedh avatar build` speed: wall seconds to build a video avatar against the video's duration
(target: ratio <= 1 on a 2-core machine for a 1080x1920 video), with the time of each step and
the share of frames with a face. Builds the real clips of ../shared/media when present and a
synthetic 1080x1920 talking clip. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_avatar_build [--seconds 10] [--no-real]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from livedh.avatar.build import BuildParams, build_avatar
from livedh.testing.talking_video import VideoSpec, write_talking_video

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
REAL_CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo2_video.mp4")


def bench_one(label: str, video: Path, avatars: Path) -> None:
    t0 = time.perf_counter()
    result = build_avatar(video, "bench", avatars, BuildParams(), progress=False, restart=True)
    wall = time.perf_counter() - t0
    s = result.summary
    duration = s["source"]["duration_s"]
    steps = "  ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items() if k != "total")
    print(
        f"{label:<28} {s['source']['width']}x{s['source']['height']} {s['source']['codec']:<5} "
        f"{duration:5.1f} s video  built in {wall:5.1f} s  ratio {wall / duration:4.2f}  "
        f"face {100 * s['face']['fraction']:5.1f}% ({s['face']['height_px_median']:.0f} px)  "
        f"[{steps}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clip")
    parser.add_argument("--no-real", action="store_true", help="skip the clips of ../shared/media")
    args = parser.parse_args()
    logging.getLogger("livedh").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        avatars = Path(tmp) / "avatars"
        # first build pays the imports and model loads once, like a server's first build
        for clip in () if args.no_real else REAL_CLIPS:
            video = SHARED_MEDIA / clip
            if video.is_file():
                bench_one(clip, video, avatars)
            else:
                print(f"{clip:<28} skipped: {video} is absent")
        synthetic, _ = write_talking_video(
            Path(tmp) / "synthetic.mp4",
            VideoSpec(seconds=args.seconds, size=(1080, 1920), face_scale=2.0),
        )
        bench_one("synthetic 1080x1920 H.264", synthetic, avatars)


if __name__ == "__main__":
    main()
