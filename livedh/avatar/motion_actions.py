"""The footage a motion graph is built over (livedh/avatar/motion_build.py): the avatar's own
frames, then its action clips.

``--action NAME=START-END`` names a time range of the avatar's own video; ``--action NAME=FILE``
builds a separate video the avatar build's way (same fps, model and size) and appends its frames,
landmarks, boxes, masks and audio after the avatar's own (frames ``source_frames`` and on, a cut
before each). :func:`link_tree` writes the new avatar folder: unchanged files hard-linked, the
appended ones and the arrays that change written.
"""

from __future__ import annotations

import os
import re
import shutil
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livedh.avatar import landmarks as lm
from livedh.avatar.build import BuildParams, BuildProgress
from livedh.avatar.format import (
    MANIFEST,
    MASKS_DIR,
    AvatarManifest,
    frame_file,
    load_array,
    mask_file,
    save_array,
    save_gray,
    save_image,
)
from livedh.avatar.motion import MOTION_DIR
from livedh.avatar.video import face_crop, lower_face_mask, smooth_track, square_boxes
from livedh.errors import InvalidInputError

_ACTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_RANGE = re.compile(r"^(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)$")


@dataclass(frozen=True)
class ActionSpec:
    """``--action NAME=START-END`` (seconds of the avatar's video) or ``--action NAME=FILE``."""

    name: str
    start_s: float | None = None
    end_s: float | None = None
    video: Path | None = None


def parse_action(text: str) -> ActionSpec:
    """Parses one ``--action`` value; InvalidInputError saying what is wrong."""
    name, sep, what = text.partition("=")
    name = name.strip()
    if not sep or not what.strip():
        raise InvalidInputError(f"--action {text!r}: expected NAME=START-END (seconds) or NAME=FILE.mp4")
    if not _ACTION_NAME.match(name):
        raise InvalidInputError(
            f"--action {text!r}: the name must be 1-32 letters, digits, '_' or '-', starting with a letter"
        )
    what = what.strip()
    span = _RANGE.match(what)
    if span is not None:
        start, end = float(span.group(1)), float(span.group(2))
        if not end > start:
            raise InvalidInputError(f"--action {text!r}: the end ({end:g} s) must come after the start")
        return ActionSpec(name, start_s=start, end_s=end)
    video = Path(what)
    if not video.is_file():
        raise InvalidInputError(f"--action {text!r}: no video file {video.name!r} (nor a START-END range)")
    return ActionSpec(name, video=video)


def parse_actions(texts: Iterable[str]) -> list[ActionSpec]:
    """Parses every ``--action``; a name given twice is an error."""
    specs = [parse_action(t) for t in texts]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(f"--action: the name {twice[0]!r} is given more than once")
    return specs


@dataclass
class Footage:
    """The frames the motion graph is built over: the avatar's own, then appended action videos."""

    n: int
    own: int  # frames of the avatar's own video kept (the rest are appended now)
    landmarks: np.ndarray
    boxes: np.ndarray
    joins: list[int]  # first frame of each appended clip: a cut
    audio: np.ndarray | None  # float32 16 kHz, or None without audio.wav
    put_frame: dict[int, Callable[[Path], None]]  # writers of appended frames and masks
    put_mask: dict[int, Callable[[Path], None]]


def own_footage(avatar_dir: Path, manifest: AvatarManifest, frames: int) -> Footage:
    n_all = manifest.frame_count
    landmarks = load_array(avatar_dir / "landmarks.npy", (n_all, lm.NUM_LANDMARKS, 2)).astype(np.float32)
    boxes = load_array(avatar_dir / "boxes.npy", (n_all, 4)).astype(np.float32)
    audio = None
    if (avatar_dir / "audio.wav").is_file():
        audio = read_wav(avatar_dir / "audio.wav")
        audio = _fit(audio, _samples(frames, manifest.fps))
    return Footage(frames, frames, landmarks[:frames], boxes[:frames], [], audio, {}, {})


def _samples(frames: int, fps: int) -> int:
    return round(frames * 16000 / fps)


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    return np.pad(audio[:n], (0, max(0, n - len(audio)))).astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    """16 kHz mono 16-bit WAV (as the build writes it) -> float32."""
    try:
        with wave.open(str(path), "rb") as f:
            if (f.getframerate(), f.getnchannels(), f.getsampwidth()) != (16000, 1, 2):
                raise InvalidInputError(f"{path.name}: not 16 kHz mono 16-bit; rebuild the avatar")
            raw = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise InvalidInputError(f"{path.name}: not a readable WAV file ({type(e).__name__})") from None
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def add_actions(
    footage: Footage,
    actions: Sequence[ActionSpec],
    manifest: AvatarManifest,
    source_frames: int,
    scratch: Path,
    report: BuildProgress,
) -> dict[str, tuple[int, int]]:
    """Frame spans of the actions; the frames of separate videos are appended to ``footage``."""
    names = [a.name for a in actions]
    if len(set(names)) != len(names):
        raise InvalidInputError("actions: every action needs its own name")
    fps, spans = manifest.fps, {}
    length = source_frames / fps
    for action in actions:
        if action.video is None:
            start_s, end_s = float(action.start_s or 0.0), float(action.end_s or 0.0)
            a, b = round(start_s * fps), min(source_frames, round(end_s * fps))
            if not 0 <= a < b or end_s > length + 0.5 / fps:
                raise InvalidInputError(
                    f"action {action.name!r}: {start_s:g}-{end_s:g} s is outside the video (0-{length:.2f} s)"
                )
            spans[action.name] = (a, b)
    clips = [a for a in actions if a.video is not None]
    with report.step("action videos", len(clips)) as advance:
        for action in clips:
            assert action.video is not None
            spans[action.name] = _append_clip(footage, action.name, action.video, manifest, scratch)
            advance(1)
    return {name: spans[name] for name in names}  # the order given: LiveTalking numbers them so


def _append_clip(
    footage: Footage, name: str, video: Path, manifest: AvatarManifest, scratch: Path
) -> tuple[int, int]:
    """Builds ``video`` as an avatar of its own (same fps, model and size, so the same face code
    path), then appends its frames, landmarks, boxes, masks and audio; returns its span."""
    from livedh.avatar.build import build_avatar
    from livedh.avatar.video import VideoAvatar

    w, h = manifest.width, manifest.height
    params = BuildParams(fps=manifest.fps, max_side=max(w, h), min_seconds=2 / manifest.fps,
                         model=manifest.model, motion=False)  # fmt: skip
    clip_name = f"action-{name}"
    try:
        built = build_avatar(video, clip_name, scratch, params, progress=False, source=video.name)
    except InvalidInputError as e:
        raise InvalidInputError(f"action {name!r} ({video.name}): {e.message}") from None
    clip = VideoAvatar.load(built.path, preload=False)
    m, start = clip.frame_count, footage.n
    landmarks, boxes = clip.landmarks, clip.boxes
    if (clip.width, clip.height) != (w, h):
        # filmed at another size: resized to the avatar's, the face crops recomputed the build's way
        scale = np.array([w / clip.width, h / clip.height], np.float32)
        landmarks = landmarks * scale
        raw = np.array([face_crop(p, manifest.model) for p in landmarks])
        boxes = square_boxes(smooth_track(raw, 2.0), w, h)
    for i in range(m):
        footage.put_frame[start + i] = _clip_frame(clip, i, (w, h))
        footage.put_mask[start + i] = _clip_mask(clip, i, landmarks[i], (w, h))
    footage.landmarks = np.concatenate([footage.landmarks, landmarks.astype(np.float32)])
    footage.boxes = np.concatenate([footage.boxes, boxes.astype(np.float32)])
    if footage.audio is not None:
        extra = read_wav(clip.path / "audio.wav") if (clip.path / "audio.wav").is_file() else np.zeros(0)
        footage.audio = np.concatenate([footage.audio, _fit(extra, _samples(m, manifest.fps))])
    footage.joins.append(start)
    footage.n += m
    return start, start + m


def _clip_frame(clip: Any, i: int, size: tuple[int, int]) -> Callable[[Path], None]:
    src = clip.path / frame_file(i)

    def put(dst: Path) -> None:
        if (clip.width, clip.height) == size:
            _link(src, dst)
        else:
            save_image(dst, cv2.resize(clip.frame(i), size, interpolation=cv2.INTER_AREA))

    return put


def _clip_mask(clip: Any, i: int, points: np.ndarray, size: tuple[int, int]) -> Callable[[Path], None]:
    def put(dst: Path) -> None:
        if (clip.width, clip.height) == size and clip.has_masks:
            _link(clip.path / mask_file(i), dst)
        else:
            save_gray(dst, lower_face_mask(points, *size))

    return put


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def link_tree(avatar_dir: Path, tmp: Path, manifest: AvatarManifest, footage: Footage) -> None:
    """Fills the new folder: the avatar's files hard-linked (frames past ``footage``'s own dropped:
    old action videos), appended frames and masks, and the arrays and audio that change."""
    skip = {MANIFEST, "landmarks.npy", "boxes.npy", "audio.wav", "features/mel.npy", "summary.json"}
    for path in sorted(avatar_dir.rglob("*")):
        rel = path.relative_to(avatar_dir).as_posix()
        if rel == MOTION_DIR or rel.startswith(f"{MOTION_DIR}/") or rel in skip:
            continue
        if path.is_dir():
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            continue
        index = _frame_index(rel)
        if index is not None and index >= footage.own:
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(path, tmp / rel)
    has_masks = (avatar_dir / MASKS_DIR).is_dir()
    for i, put in footage.put_frame.items():
        put(tmp / frame_file(i))
        if has_masks:
            footage.put_mask[i](tmp / mask_file(i))
    save_array(tmp / "landmarks.npy", footage.landmarks)
    save_array(tmp / "boxes.npy", footage.boxes)
    if footage.audio is not None:
        from livedh.lipsync.mel import frame_mel_windows
        from livedh.media.pcm import write_wav

        write_wav(tmp / "audio.wav", (np.clip(footage.audio, -1.0, 1.0) * 32767).round(), 16000)
        if (avatar_dir / "features/mel.npy").is_file():
            (tmp / "features").mkdir(exist_ok=True)
            mel = frame_mel_windows(footage.audio, footage.n, manifest.fps).astype(np.float32)
            save_array(tmp / "features/mel.npy", mel)


_FRAME_RE = re.compile(r"^(?:frames|masks)/(\d{6})\.(?:jpg|png)$")


def _frame_index(rel: str) -> int | None:
    match = _FRAME_RE.match(rel)
    return None if match is None else int(match.group(1))
