"""Training speed of `livedh avatar train` and the held-out report after a short run. Prints
figures; asserts nothing.

Trains on a synthetic talking clip (the astronaut, mouth driven by a speech-like sound), or on a
copy of an avatar folder given with --avatar, for a fixed number of steps at the device's default
settings, then projects the time of a full default run on a 3 minute video. The target is
<= 15 minutes for a 2-3 minute video on an H100.

    .venv/bin/python -m bench.bench_train [--seconds 10] [--steps 40] [--syncnet-steps 40]
        [--device auto] [--avatar avatars/NAME]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from livedh.lipsync.training.data import WINDOW, load_training_data
from livedh.lipsync.training.report import format_report
from livedh.lipsync.training.trainer import TrainConfig, pick_device, settings_for, train_avatar

TARGET_MINUTES = 15.0
PROJECT_SECONDS = 180.0


def synthetic_avatar(folder: Path, seconds: float, fps: int = 25) -> None:
    from livedh.avatar.video import write_video_avatar
    from livedh.media.pcm import write_wav
    from livedh.testing.talking_video import speech_like_audio, talking_frames

    audio = speech_like_audio(seconds, seed=1)
    frames = talking_frames(audio, fps)
    write_video_avatar(folder, frames, fps, folder.name, model="ultralight", progress=False)
    write_wav(folder / "audio.wav", np.round(audio * 32767).astype(np.int16))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--avatar", type=Path,
                        help="an Ultralight video avatar folder (copied, not modified)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clip")
    parser.add_argument("--steps", type=int, default=40, help="generator steps to time")
    parser.add_argument("--syncnet-steps", type=int, default=40, help="SyncNet steps to time")
    parser.add_argument("--batch-size", type=int, default=None, help="5-frame windows per step")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        t0 = time.perf_counter()
        if args.avatar:
            shutil.copytree(args.avatar, folder, ignore=shutil.ignore_patterns("training", "weights"))
        else:
            synthetic_avatar(folder, args.seconds)
        print(f"avatar ready in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        frames = load_training_data(folder, progress=False).frame_count
        load_s = time.perf_counter() - t0

        config = TrainConfig(
            steps=args.steps,
            syncnet_steps=args.syncnet_steps,
            batch_size=args.batch_size,
            device=args.device,
            checkpoint_every=10**9,  # time the training, not the disk
            progress=False,
        )
        t0 = time.perf_counter()
        result = train_avatar(folder, config, restart=True)
        total_s = time.perf_counter() - t0

    training = result.report["training"]
    seconds = training["seconds"]
    s = result.settings
    sync_step = seconds["syncnet"] / max(s.syncnet_steps, 1)
    gen_step = seconds["generator"] / max(s.steps, 1)
    report_s = total_s - seconds["syncnet"] - seconds["generator"] - load_s
    print(f"device: {training['device']}   torch threads: {torch.get_num_threads()}")
    print(f"clip: {frames} frames; crops + mel: {load_s:.2f} s ({1000 * load_s / frames:.1f} ms/frame)")
    print(
        f"SyncNet   (width {s.syncnet_width}, {s.syncnet_batch_size} + {s.syncnet_batch_size} pairs/step): "
        f"{sync_step:.3f} s/step, "
        f"{2 * s.syncnet_batch_size / max(sync_step, 1e-9):.0f} pairs/s"
    )
    print(
        f"generator (channels {s.channels}, {s.batch_size * WINDOW} frames/step): {gen_step:.3f} s/step, "
        f"{training['generator_samples_per_s']:.1f} samples/s"
    )
    print(f"report (render + FaceMesh on {result.report['holdout_frames']} frames): {report_s:.1f} s")
    print(format_report(result.report))

    full = settings_for(TrainConfig(), device)
    project_frames = PROJECT_SECONDS * 25
    projected = (
        full.syncnet_steps * sync_step * (full.syncnet_batch_size / s.syncnet_batch_size)
        + full.steps * gen_step * (full.batch_size / s.batch_size)
        + project_frames * load_s / frames
        + report_s * project_frames / frames
    )
    if device.type == "cuda":
        verdict = "within" if projected <= TARGET_MINUTES * 60 else "OVER"
        target = f"{verdict} the {TARGET_MINUTES:.0f} min H100 target"
    else:
        target = f"the {TARGET_MINUTES:.0f} min target is for an H100"
    print(
        f"projected default run on a {PROJECT_SECONDS / 60:.0f} min video ({full.syncnet_steps} SyncNet + "
        f"{full.steps} generator steps of {full.batch_size * WINDOW} frames): {projected / 60:.1f} min "
        f"({target}; time per step assumed to scale with the batch)"
    )


if __name__ == "__main__":
    main()
