"""An avatar's frames and audio, ready to train its Ultralight model on.

Every frame is cut at its crop box and resized to the network's 160 px exactly as the renderer
cuts it (``Compositor.cut``), so the network trains on the crops it sees at run time; the crops
are kept in memory as uint8 (77 KB a frame: a 3 minute clip is ~350 MB). Each frame's audio is
the mel window the engine gives the generator for that frame (``frame_mel_windows``).

The last ``holdout`` fraction of the clip is held out for the report; training uses only 5-frame
windows that lie wholly before it, so no window of consecutive frames spans the split.
"""

from __future__ import annotations

import logging
import os
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedh.avatar import landmarks as lm
from livedh.avatar.compositor import Compositor
from livedh.avatar.format import load_array, load_manifest
from livedh.avatar.video import VideoAvatar
from livedh.errors import InvalidInputError
from livedh.lipsync.generators import UltralightGenerator
from livedh.lipsync.mel import frame_mel_windows
from livedh.lipsync.nets.ultralight import SIZE

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: consecutive frames the SyncNet judges (and the sync loss is computed on)
WINDOW = 5
#: the held-out part must hold at least this many frames (two SyncNet windows)
MIN_HOLDOUT = 2 * WINDOW
#: the training part must hold at least this many frames
MIN_TRAIN = 4 * WINDOW
#: an audio track whose peak stays under this (-60 dBFS) holds no speech
SILENT_PEAK = 1e-3
AUDIO_FILE = "audio.wav"
MEL_FILE = "features/mel.npy"


@dataclass
class TrainingData:
    """One avatar's training material. Frames ``[0, train_frames)`` train; frames
    ``[holdout_start, frame_count)`` are held out."""

    avatar: VideoAvatar
    #: uint8 (N, 160, 160, 3) RGB crops, cut as the renderer cuts them
    crops: np.ndarray
    #: float32 (N, 1, 80, 16) per-frame mel windows, as the engine gives them at run time
    mels: np.ndarray
    #: float32 16 kHz mono audio starting with frame 0
    audio: np.ndarray
    #: float32 (N, 4) mouth box (x0, y0, x1, y1) of every frame in crop pixels
    mouth_boxes: np.ndarray
    holdout_start: int

    @property
    def name(self) -> str:
        return self.avatar.manifest.name

    @property
    def fps(self) -> int:
        return self.avatar.manifest.fps

    @property
    def frame_count(self) -> int:
        return len(self.crops)

    @property
    def train_frames(self) -> int:
        return self.holdout_start

    def train_window_starts(self) -> np.ndarray:
        """First frames of the 5-frame windows that lie wholly in the training part."""
        return np.arange(self.train_frames - WINDOW + 1)

    def holdout_indices(self) -> np.ndarray:
        return np.arange(self.holdout_start, self.frame_count)


def read_wav_16k(path: Path) -> np.ndarray:
    """16 kHz mono PCM16 WAV -> float32 in [-1, 1]."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, channels, width = f.getframerate(), f.getnchannels(), f.getsampwidth()
            raw = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise InvalidInputError(f"{path}: not a readable WAV file ({exc})") from exc
    if rate != SAMPLE_RATE or channels != 1 or width != 2:
        raise InvalidInputError(
            f"{path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; training needs 16 kHz mono "
            "16-bit PCM as `livedh avatar build` writes it: rebuild the avatar"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def holdout_split(frame_count: int, holdout: float) -> int:
    """First held-out frame: the last ``holdout`` fraction, at least ``MIN_HOLDOUT`` frames.
    Raises InvalidInputError when the clip is too short to train on."""
    if not 0.0 < holdout < 1.0:
        raise InvalidInputError(f"holdout must be between 0 and 1, got {holdout}")
    held = max(MIN_HOLDOUT, round(frame_count * holdout))
    if frame_count - held < MIN_TRAIN:
        raise InvalidInputError(
            f"the avatar has {frame_count} frames: too few to train on (needs at least "
            f"{MIN_TRAIN + MIN_HOLDOUT} with {held} held out); rebuild it from a longer video"
        )
    return frame_count - held


def check_trainable(avatar_dir: Path) -> None:
    """Cheap checks before anything heavy is loaded: a video avatar built for Ultralight, with
    its sound. NotFoundError / InvalidInputError with what to do."""
    avatar_dir = Path(avatar_dir)
    manifest = load_manifest(avatar_dir)
    name = manifest.name
    if manifest.kind != "video":
        raise InvalidInputError(
            f"avatar {name!r} is a {manifest.kind} avatar; training needs a video avatar: build one "
            f"with `livedh avatar build VIDEO --name {name} --model ultralight`"
        )
    if manifest.model != "ultralight":
        raise InvalidInputError(
            f"avatar {name!r} was built for the {manifest.model!r} model, whose face crop differs "
            f"from Ultralight's: rebuild it with --model ultralight"
        )
    if not (avatar_dir / AUDIO_FILE).is_file():
        raise InvalidInputError(
            f"avatar {name!r} was built from a video without sound: there is no {AUDIO_FILE} to "
            "learn the lip movements from; rebuild it from a video with its audio"
        )


def load_training_data(avatar_dir: Path, holdout: float = 0.1, *, progress: bool = True) -> TrainingData:
    """Loads and checks an avatar for training (see the module docstring)."""
    avatar_dir = Path(avatar_dir)
    check_trainable(avatar_dir)
    # frames are decoded once, cropped and dropped: a long 1080p clip does not fit in memory
    avatar = VideoAvatar.load(avatar_dir, preload=False)
    n = avatar.frame_count
    start = holdout_split(n, holdout)
    audio = read_wav_16k(avatar_dir / AUDIO_FILE)
    if float(np.abs(audio).max(initial=0.0)) < SILENT_PEAK:
        raise InvalidInputError(
            f"avatar {avatar.manifest.name!r} has a silent {AUDIO_FILE}: there is no speech to learn "
            "the lip movements from; rebuild it from a video in which the person speaks"
        )
    mels = _mels(avatar_dir, audio, n, avatar.manifest.fps)
    crops = _crops(avatar, progress=progress)
    mouth = np.stack([_mouth_in_crop(avatar, i) for i in range(n)]).astype(np.float32)
    return TrainingData(avatar, crops, mels, audio, mouth, start)


def _mels(avatar_dir: Path, audio: np.ndarray, n: int, fps: int) -> np.ndarray:
    path = avatar_dir / MEL_FILE
    if path.is_file():
        try:
            return np.ascontiguousarray(load_array(path, (n, 1, 80, 16)), dtype=np.float32)
        except InvalidInputError as exc:
            log.warning("ignoring %s (%s): recomputing the mel windows", path.name, exc)
    return frame_mel_windows(audio, n, fps)


def _crops(avatar: VideoAvatar, *, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    compositor = Compositor(SIZE, UltralightGenerator.mouth_band)
    n = avatar.frame_count
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)

    def cut(i: int) -> None:
        out[i] = compositor.cut(avatar.frame(i), avatar.crop_box(i))

    # JPEG decoding and resizing release the GIL: threads use every core
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(cut, range(n)), total=n, desc="face crops", disable=not progress):
            pass
    return out


def _mouth_in_crop(avatar: VideoAvatar, i: int) -> np.ndarray:
    """Frame ``i``'s mouth box (lips plus jaw drop, ``landmarks.mouth_box``) in crop pixels."""
    x0, y0, x1, y1 = avatar.crop_box(i)
    box = np.array(lm.mouth_box(avatar.landmarks[i], avatar.width, avatar.height), np.float32)
    scale = np.array([SIZE / (x1 - x0), SIZE / (y1 - y0)] * 2, np.float32)
    return np.clip((box - np.array([x0, y0, x0, y0], np.float32)) * scale, 0, SIZE)
