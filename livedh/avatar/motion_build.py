"""The motion step of a video avatar build (``livedh avatar build``, ``livedh avatar graph``).

From a built avatar folder it writes ``motion/poses.npz`` (upper-body pose per frame),
``motion/graph.npz`` (the motion graph, see livedh/avatar/motion_graph.py) and ``motion/speech.npy``
(whether the filmed person speaks in each frame), plus the manifest's ``motion`` entry:
``{"version": 1, "actions": {name: [start, end]}, "source_frames": N}``. Action clips are a time
range of the avatar's own video or a separate video whose frames are appended to the footage
(frames ``source_frames`` and on); each is joined to the graph at its ends.

The folder is rewritten as a whole with ``building()`` (unchanged files hard-linked), so a crash
never leaves a manifest that disagrees with its files.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
import wave
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livedh.avatar import landmarks as lm
from livedh.avatar.build import BuildParams, BuildProgress, ProgressCallback
from livedh.avatar.format import (
    MANIFEST,
    MASKS_DIR,
    AvatarManifest,
    building,
    frame_file,
    load_array,
    load_manifest,
    mask_file,
    save_array,
    save_gray,
    save_image,
    save_json,
    write_manifest,
)
from livedh.avatar.motion import GRAPH_FILE, MOTION_DIR, MOTION_VERSION, POSES_FILE, SPEECH_FILE
from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph, detect_cuts, join_spans
from livedh.avatar.pose import NUM_KEYPOINTS, PoseResult, PoseTracker
from livedh.avatar.video import (
    clip_mouth_box,
    face_crop,
    lower_face_mask,
    smooth_track,
    square_boxes,
)
from livedh.errors import InvalidInputError
from livedh.files import atomic_file

log = logging.getLogger(__name__)

_ACTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_RANGE = re.compile(r"^(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)$")
#: side of the grey thumbnails cut detection compares
_THUMB = 64
#: the filmed person speaks where a frame's loudness is within this factor of the clip's loud level
_SPEECH_REL = 0.1
#: ... and above this absolute RMS (about -50 dBFS): a silent track has no speech
_SPEECH_FLOOR = 3e-3
#: pauses shorter than this many frames are part of the speech; blips shorter are not speech
_SPEECH_GAP, _SPEECH_MIN = 4, 3


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


@dataclass(frozen=True)
class MotionBuildResult:
    #: the manifest's ``motion`` entry (None: the footage has no loop, it is played as before)
    entry: dict[str, Any] | None
    #: nodes, transitions, gesture share, cuts, actions, seconds per step (also in summary.json)
    summary: dict[str, Any]


@dataclass
class _Footage:
    """The frames the motion graph is built over: the avatar's own, then appended action videos."""

    n: int
    own: int  # frames of the avatar's own video kept (the rest are appended now)
    landmarks: np.ndarray
    boxes: np.ndarray
    joins: list[int]  # first frame of each appended clip: a cut
    audio: np.ndarray | None  # float32 16 kHz, or None without audio.wav
    put_frame: dict[int, Callable[[Path], None]]  # writers of appended frames and masks
    put_mask: dict[int, Callable[[Path], None]]


def build_motion(
    avatar_dir: Path,
    *,
    actions: Sequence[ActionSpec] | None = None,
    config: MotionGraphConfig | None = None,
    pose_stride: int = 2,
    progress: bool | ProgressCallback | BuildProgress = True,
    tracker: Callable[[], Any] | None = None,
    cache_dir: Path | None = None,
) -> MotionBuildResult:
    """Builds the motion graph of the video avatar ``avatar_dir`` and rewrites the folder with it
    (manifest bumped to format 2). ``actions``: the action clips (replacing the avatar's), or None to
    keep the ones it has. Pose runs on every ``pose_stride``-th frame (and at cuts), interpolated
    between; ``tracker()`` makes the pose tracker (default: mediapipe's PoseTracker). ``cache_dir``
    keeps the poses between runs (the build's work folder), so a crashed build does not redo them."""
    config = config or MotionGraphConfig()
    if pose_stride < 1:
        raise InvalidInputError(f"pose_stride must be >= 1, got {pose_stride}")
    report = progress if isinstance(progress, BuildProgress) else BuildProgress(progress)
    avatar_dir = Path(avatar_dir)
    manifest = load_manifest(avatar_dir)
    if manifest.kind != "video":
        raise InvalidInputError(f"avatar {manifest.name!r} is a {manifest.kind} avatar: no footage to move")
    seconds: dict[str, float] = {}
    old = manifest.motion or {}
    source_frames = int(old.get("source_frames", manifest.frame_count))
    with tempfile.TemporaryDirectory(dir=avatar_dir.parent, prefix=f".{manifest.name}.actions-") as scratch:
        t = time.monotonic()
        if actions is None:  # keep the avatar's clips and their frames
            footage = _own_footage(avatar_dir, manifest, manifest.frame_count)
            spans = {k: (int(v[0]), int(v[1])) for k, v in old.get("actions", {}).items()}
        else:
            footage = _own_footage(avatar_dir, manifest, source_frames)
            spans = _add_actions(footage, actions, manifest, source_frames, Path(scratch), report)
        seconds["actions"] = time.monotonic() - t
        with building(avatar_dir) as tmp:
            _link_tree(avatar_dir, tmp, manifest, footage)
            motion, summary = _motion_files(tmp, footage, spans, manifest, config, pose_stride, report,
                                            tracker or PoseTracker, cache_dir, seconds)  # fmt: skip
            entry = None if motion is None else {**motion, "source_frames": source_frames}
            landmarks = footage.landmarks
            new = replace(
                manifest, frame_count=footage.n, format_version=2, motion=entry,
                mouth_box=clip_mouth_box(landmarks, manifest.width, manifest.height),
            )  # fmt: skip
            AvatarManifest.from_json(new.to_json(), where=f"avatar {manifest.name!r}")
            _update_summary(avatar_dir, tmp, summary)
            write_manifest(tmp, new)  # last: a folder without a manifest is never trusted
    return MotionBuildResult(entry, summary)


def rebuild_motion(
    avatars_dir: Path,
    name: str,
    *,
    actions: Sequence[ActionSpec] | None = None,
    pose_stride: int = 2,
    progress: bool | ProgressCallback = True,
    config: MotionGraphConfig | None = None,
) -> MotionBuildResult:
    """``livedh avatar graph``: :func:`build_motion` on ``avatars_dir/name``, holding the avatar's
    build lock (a build of the same name would swap the folder under it)."""
    from livedh.avatar.build import _exclusive
    from livedh.avatar.format import check_name

    check_name(name)
    avatars_dir = Path(avatars_dir)
    load_manifest(avatars_dir / name)  # NotFoundError before the lock file is made
    with _exclusive(avatars_dir, name):
        return build_motion(avatars_dir / name, actions=actions, pose_stride=pose_stride, progress=progress,
                            config=config)  # fmt: skip


def _own_footage(avatar_dir: Path, manifest: AvatarManifest, frames: int) -> _Footage:
    n_all = manifest.frame_count
    landmarks = load_array(avatar_dir / "landmarks.npy", (n_all, lm.NUM_LANDMARKS, 2)).astype(np.float32)
    boxes = load_array(avatar_dir / "boxes.npy", (n_all, 4)).astype(np.float32)
    audio = None
    if (avatar_dir / "audio.wav").is_file():
        audio = _read_wav(avatar_dir / "audio.wav")
        audio = _fit(audio, _samples(frames, manifest.fps))
    return _Footage(frames, frames, landmarks[:frames], boxes[:frames], [], audio, {}, {})


def _samples(frames: int, fps: int) -> int:
    return round(frames * 16000 / fps)


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    return np.pad(audio[:n], (0, max(0, n - len(audio)))).astype(np.float32)


def _read_wav(path: Path) -> np.ndarray:
    """16 kHz mono 16-bit WAV (as the build writes it) -> float32."""
    try:
        with wave.open(str(path), "rb") as f:
            if (f.getframerate(), f.getnchannels(), f.getsampwidth()) != (16000, 1, 2):
                raise InvalidInputError(f"{path.name}: not 16 kHz mono 16-bit; rebuild the avatar")
            raw = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise InvalidInputError(f"{path.name}: not a readable WAV file ({type(e).__name__})") from None
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


# --- action clips ----------------------------------------------------------------------------------


def _add_actions(
    footage: _Footage,
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
    footage: _Footage, name: str, video: Path, manifest: AvatarManifest, scratch: Path
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
        extra = _read_wav(clip.path / "audio.wav") if (clip.path / "audio.wav").is_file() else np.zeros(0)
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


def _link_tree(avatar_dir: Path, tmp: Path, manifest: AvatarManifest, footage: _Footage) -> None:
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


def _update_summary(avatar_dir: Path, tmp: Path, motion: dict[str, Any]) -> None:
    try:
        summary = json.loads((avatar_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    summary["motion"] = motion
    save_json(tmp / "summary.json", summary)


# --- the graph -------------------------------------------------------------------------------------


def _motion_files(
    tmp: Path,
    footage: _Footage,
    spans: dict[str, tuple[int, int]],
    manifest: AvatarManifest,
    config: MotionGraphConfig,
    stride: int,
    report: BuildProgress,
    tracker: Callable[[], Any],
    cache_dir: Path | None,
    seconds: dict[str, float],
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Cuts, poses, speech and graph of the footage in ``tmp``; writes ``tmp/motion/``."""
    n = footage.n
    paths = [tmp / frame_file(i) for i in range(n)]
    t = time.monotonic()
    with report.step("cuts", n) as advance:
        thumbs = np.stack(list(_prefetch(_thumb, paths, advance, depth=32, workers=2)))
    cuts = np.union1d(detect_cuts(thumbs), np.asarray(footage.joins, dtype=np.int64)).astype(np.int64)
    seconds["cuts"] = time.monotonic() - t
    t = time.monotonic()
    side = max(manifest.width, manifest.height)
    reduce = 4 if side >= 2560 else 2 if side >= 1280 else 1
    keypoints, visible = _cached_poses(paths, cuts, stride, tracker, cache_dir, report, reduce)
    seconds["pose"] = time.monotonic() - t
    t = time.monotonic()
    speech = speech_frames(footage.audio, n, manifest.fps)
    with report.step("motion graph", 1) as advance:
        graph = build_motion_graph(keypoints, visible, footage.boxes, cuts, config)
        if spans:
            graph = join_spans(graph, keypoints, visible, list(spans.values()), face_boxes=footage.boxes)
        advance(1)
    seconds["graph"] = time.monotonic() - t
    summary: dict[str, Any] = {
        "frames": n, "nodes": int(graph.nodes.size), "transitions": graph.n_transitions,
        "transitions_per_node": round(graph.n_transitions / max(graph.nodes.size, 1), 2),
        "gesture_share": round(float(graph.gesture[graph.nodes].mean()) if graph.nodes.size else 0.0, 3),
        "cuts": [int(c) for c in cuts], "pose_stride": stride,
        "pose_visible_share": round(float(visible.mean()) if visible.size else 0.0, 3),
        "speech_share": round(float(speech.mean()) if n else 0.0, 3),
        "actions": {k: list(v) for k, v in spans.items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }  # fmt: skip
    if graph.nodes.size == 0:
        log.warning("avatar %s: the footage has no loop of poses, so it is looped as before", manifest.name)
        summary["note"] = "no loop found in the footage's poses (is the upper body visible?): no motion graph"
        return None, summary
    (tmp / MOTION_DIR).mkdir(exist_ok=True)
    with atomic_file(tmp / POSES_FILE) as path, open(path, "wb") as f:
        np.savez_compressed(f, keypoints=keypoints.astype(np.float32), visible=visible.astype(bool))
    graph.save(tmp / GRAPH_FILE)
    save_array(tmp / SPEECH_FILE, speech.astype(bool))
    return {"version": MOTION_VERSION, "actions": {k: list(v) for k, v in spans.items()}}, summary


def _thumb(path: Path) -> np.ndarray:
    gray = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if gray is None:
        raise InvalidInputError(f"{path.name}: not a readable image")
    return cv2.resize(gray, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA)


def _prefetch(
    read: Callable[[Path], Any],
    paths: Sequence[Path],
    advance: Callable[[int], None],
    depth: int = 8,
    workers: int = 1,
) -> Iterator[Any]:
    """``read(path)`` for each path in order, decoded ``depth`` ahead in ``workers`` threads (cv2
    releases the GIL, so decoding overlaps the consumer's work)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="motion-decode") as pool:
        pending: list[Future[Any]] = [pool.submit(read, p) for p in paths[:depth]]
        for k in range(len(paths)):
            if k + depth < len(paths):
                pending.append(pool.submit(read, paths[k + depth]))
            yield pending[k].result()
            pending[k] = None  # type: ignore[call-overload]  # drop the frame once used
            advance(1)


def _cached_poses(
    paths: Sequence[Path],
    cuts: np.ndarray,
    stride: int,
    tracker: Callable[[], Any],
    cache_dir: Path | None,
    report: BuildProgress,
    reduce: int,
) -> tuple[np.ndarray, np.ndarray]:
    key = {"v": 1, "stride": stride, "reduce": reduce, "cuts": [int(c) for c in cuts],
           "bytes": [p.stat().st_size for p in paths]}  # fmt: skip
    cache = None if cache_dir is None else Path(cache_dir) / "poses.npz"
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if json.loads(str(z["key"])) == key:
                    return z["keypoints"], z["visible"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: redo
    keypoints, visible = strided_poses(paths, cuts, stride, tracker, report, reduce=reduce)
    if cache is not None:
        with atomic_file(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, keypoints=keypoints, visible=visible, key=np.array(json.dumps(key)))
    return keypoints, visible


def strided_poses(
    paths: Sequence[Path],
    cuts: np.ndarray,
    stride: int,
    tracker: Callable[[], Any],
    report: BuildProgress | None = None,
    *,
    reduce: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Upper-body pose of every frame: the tracker (a new one per shot, as tracking must not cross
    a cut) sees every ``stride``-th frame and each shot's last; keypoints in between are linear
    interpolations, visible where both ends are. A frame without a person is all invisible.
    ``reduce`` (1, 2 or 4): frames are decoded at that fraction of their size for the model."""
    n = len(paths)
    report = report or BuildProgress(False)
    keypoints = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
    visible = np.zeros((n, NUM_KEYPOINTS), bool)
    bounds = np.unique(np.concatenate([[0], np.asarray(cuts, np.int64), [n]]).clip(0, n))
    shots = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    samples = [np.unique(np.append(np.arange(a, b, stride), b - 1)) for a, b in shots]
    with report.step("pose", int(sum(s.size for s in samples))) as advance:
        for (a, b), picked in zip(shots, samples, strict=True):
            with _closing(tracker()) as pose:
                frames = _prefetch(lambda p: _pose_input(p, reduce), [paths[i] for i in picked], advance)
                for i, (rgb, scale) in zip(picked, frames, strict=True):
                    found: PoseResult = pose.process(rgb)
                    keypoints[i] = np.where(np.isfinite(found.keypoints), found.keypoints * scale, 0.0)
                    visible[i] = found.visible & np.isfinite(found.keypoints).all(axis=1)
            _interpolate(keypoints, visible, picked, a, b)
    return keypoints, visible


class _closing:
    """``with`` for trackers that only have ``close()``."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def __enter__(self) -> Any:
        return self.tracker

    def __exit__(self, *exc: object) -> None:
        self.tracker.close()


def _pose_input(path: Path, reduce: int) -> tuple[np.ndarray, float]:
    """The frame for the pose model, decoded at ``1 / reduce`` of its size (the model sees 256 px
    anyway; JPEG's reduced decoding is several times faster), and the factor back to pixels."""
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[reduce]
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise InvalidInputError(f"{path.name}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), float(reduce)


def _interpolate(keypoints: np.ndarray, visible: np.ndarray, picked: np.ndarray, a: int, b: int) -> None:
    """Fills frames ``a..b-1`` between the ``picked`` ones (sorted, covering a and b - 1) in place."""
    t = np.arange(a, b)
    right = np.searchsorted(picked, t).clip(0, picked.size - 1)
    left = np.where(picked[right] == t, right, right - 1).clip(0)
    lo, hi = picked[left], picked[right]
    w = np.where(hi > lo, (t - lo) / np.maximum(hi - lo, 1), 0.0).astype(np.float32)[:, None, None]
    keypoints[a:b] = (1 - w) * keypoints[lo] + w * keypoints[hi]
    visible[a:b] = visible[lo] & visible[hi]


def speech_frames(audio: np.ndarray | None, n: int, fps: int, sample_rate: int = 16000) -> np.ndarray:
    """Whether the filmed person speaks in each of ``n`` frames: the frame's RMS is above a tenth of
    the clip's loud level (95th percentile) and above -50 dBFS; pauses of up to ``_SPEECH_GAP``
    frames inside speech count as speech, blips shorter than ``_SPEECH_MIN`` do not. No audio:
    all False."""
    out = np.zeros(n, dtype=bool)
    if audio is None or n == 0 or audio.size == 0:
        return out
    edges = np.round(np.arange(n + 1) * sample_rate / fps).astype(np.int64).clip(0, audio.size)
    squares = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    counts = np.maximum(np.diff(edges), 1)
    rms = np.sqrt((squares[edges[1:]] - squares[edges[:-1]]) / counts)
    loud = float(np.quantile(rms, 0.95))
    out = rms > max(_SPEECH_REL * loud, _SPEECH_FLOOR)
    for value, shortest in ((False, _SPEECH_GAP + 1), (True, _SPEECH_MIN)):
        change = np.nonzero(out[1:] != out[:-1])[0] + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [n]]))
        for s, length in zip(starts, lengths, strict=True):
            inner = value or (s > 0 and s + length < n)  # only pauses between two bits of speech
            if out[s] == value and length < shortest and inner:
                out[s : s + length] = not value
    return out
