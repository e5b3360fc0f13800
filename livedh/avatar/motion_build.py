"""The motion step of a video avatar build (``livedh avatar build``, ``livedh avatar graph``).

From a built avatar folder it writes ``motion/poses.npz`` (upper-body pose per frame),
``motion/graph.npz`` (the motion graph, see livedh/avatar/motion_graph.py) and ``motion/speech.npy``
(whether the filmed person speaks in each frame), plus the manifest's ``motion`` entry:
``{"version": 1, "actions": {name: [start, end]}, "source_frames": N}``. Action clips (a time
range of the avatar's own video or a separate video appended to the footage, see
livedh/avatar/motion_actions.py) are joined to the graph at their ends.

The folder is rewritten as a whole with ``building()`` (unchanged files hard-linked), so a crash
never leaves a manifest that disagrees with its files.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livedh.avatar.build import BuildProgress, ProgressCallback
from livedh.avatar.format import (
    AvatarManifest,
    building,
    frame_file,
    load_manifest,
    save_array,
    save_json,
    write_manifest,
)
from livedh.avatar.motion import GRAPH_FILE, MOTION_DIR, MOTION_VERSION, POSES_FILE, SPEECH_FILE
from livedh.avatar.motion_actions import ActionSpec, Footage, add_actions, link_tree, own_footage
from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph, join_spans
from livedh.avatar.motion_labels import appearance_features, detect_cuts
from livedh.avatar.pose import NUM_KEYPOINTS, PoseResult, PoseTracker
from livedh.avatar.video import clip_mouth_box
from livedh.errors import InvalidInputError
from livedh.files import atomic_file

log = logging.getLogger(__name__)

#: side of the grey thumbnails cut detection compares
_THUMB = 64
#: least long side of the grey frames kept for cuts and appearance (a hand patch is then >= 10 px)
_GREY = 128
#: the filmed person speaks where a frame's loudness is within this factor of the clip's loud level
_SPEECH_REL = 0.1
#: ... and above this absolute RMS (about -50 dBFS): a silent track has no speech
_SPEECH_FLOOR = 3e-3
#: pauses shorter than this many frames are part of the speech; blips shorter are not speech
_SPEECH_GAP, _SPEECH_MIN = 4, 3


@dataclass(frozen=True)
class MotionBuildResult:
    #: the manifest's ``motion`` entry (None: the footage has no loop, it is played as before)
    entry: dict[str, Any] | None
    #: nodes, transitions, gesture share, cuts, actions, seconds per step (also in summary.json)
    summary: dict[str, Any]


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
            footage = own_footage(avatar_dir, manifest, manifest.frame_count)
            spans = {k: (int(v[0]), int(v[1])) for k, v in old.get("actions", {}).items()}
        else:
            footage = own_footage(avatar_dir, manifest, source_frames)
            spans = add_actions(footage, actions, manifest, source_frames, Path(scratch), report)
        seconds["actions"] = time.monotonic() - t
        with building(avatar_dir) as tmp:
            link_tree(avatar_dir, tmp, manifest, footage)
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
    footage: Footage,
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
    side = max(manifest.width, manifest.height)
    with report.step("cuts", n) as advance:
        grey = np.stack(list(_prefetch(lambda p: small_grey(p, side), paths, advance, depth=32, workers=2)))
    cuts = np.union1d(detect_cuts(cut_thumbs(grey)), np.asarray(footage.joins, dtype=np.int64))
    cuts = cuts.astype(np.int64)
    seconds["cuts"] = time.monotonic() - t
    t = time.monotonic()
    reduce = 4 if side >= 2560 else 2 if side >= 1280 else 1
    keypoints, visible = _cached_poses(paths, cuts, stride, tracker, cache_dir, report, reduce)
    seconds["pose"] = time.monotonic() - t
    t = time.monotonic()
    speech = speech_frames(footage.audio, n, manifest.fps)
    with report.step("motion graph", 1) as advance:
        looks = appearance_features(grey, keypoints, visible, frame_width=manifest.width)
        graph = build_motion_graph(keypoints, visible, footage.boxes, cuts, config, appearance=looks)
        if spans:
            graph = join_spans(graph, keypoints, visible, list(spans.values()), face_boxes=footage.boxes,
                               appearance=looks, config=config)  # fmt: skip
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
        np.savez_compressed(
            f, keypoints=keypoints.astype(np.float32), visible=visible.astype(bool),
            appearance=looks.features.astype(np.float16), appearance_present=looks.present,
        )  # fmt: skip
    graph.save(tmp / GRAPH_FILE)
    save_array(tmp / SPEECH_FILE, speech.astype(bool))
    return {"version": MOTION_VERSION, "actions": {k: list(v) for k, v in spans.items()}}, summary


def small_grey(path: Path, side: int) -> np.ndarray:
    """The frame in grey, decoded at 1/2, 1/4 or 1/8 of its size (``side``: its long side) so that
    its long side is ``_GREY`` to twice that (JPEG's reduced decoding is the cheap part of a read)."""
    reduce = next(r for r in (8, 4, 2, 1) if side >= r * _GREY or r == 1)
    flag = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
            2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 1: cv2.IMREAD_GRAYSCALE}[reduce]  # fmt: skip
    gray = cv2.imread(str(path), flag)
    if gray is None:
        raise InvalidInputError(f"{path.name}: not a readable image")
    return gray


def cut_thumbs(grey: np.ndarray) -> np.ndarray:
    """(T, 64, 64) thumbnails of :func:`small_grey` frames for :func:`detect_cuts`."""
    return np.stack([cv2.resize(g, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA) for g in grey])


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
    keypoints, visible = strided_poses(paths, cuts, stride, tracker, report, reduce=reduce,
                                       workers=pose_workers())  # fmt: skip
    if cache is not None:
        with atomic_file(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, keypoints=keypoints, visible=visible, key=np.array(json.dumps(key)))
    return keypoints, visible


def pose_workers() -> int:
    """Pose trackers to run side by side: one per core this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def strided_poses(
    paths: Sequence[Path],
    cuts: np.ndarray,
    stride: int,
    tracker: Callable[[], Any],
    report: BuildProgress | None = None,
    *,
    reduce: int = 1,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Upper-body pose of every frame: the tracker (a new one per shot, as tracking must not cross
    a cut) sees every ``stride``-th frame and each shot's last; keypoints in between are linear
    interpolations, visible where both ends are. A frame without a person is all invisible.
    ``reduce`` (1, 2 or 4): frames are decoded at that fraction of their size for the model.
    ``workers`` trackers run side by side on pieces of the footage (the pose model uses one core
    each); a piece that starts inside a shot is tracked from ``_WARM`` samples earlier, so the
    tracker's smoothing has settled where its results are kept."""
    n = len(paths)
    report = report or BuildProgress(False)
    keypoints = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
    visible = np.zeros((n, NUM_KEYPOINTS), bool)
    bounds = np.unique(np.concatenate([[0], np.asarray(cuts, np.int64), [n]]).clip(0, n))
    shots = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    samples = [np.unique(np.append(np.arange(a, b, stride), b - 1)) for a, b in shots]
    total = int(sum(s.size for s in samples))
    with report.step("pose", total) as advance:
        lock = threading.Lock()

        def run(piece: tuple[np.ndarray, np.ndarray]) -> None:
            warm, picked = piece
            with closing(tracker()) as pose:
                order = np.concatenate([warm, picked])
                frames = _prefetch(lambda p: _pose_input(p, reduce), [paths[i] for i in order], _ignore)
                for k, (i, (rgb, scale)) in enumerate(zip(order, frames, strict=True)):
                    found: PoseResult = pose.process(rgb)
                    if k < warm.size:
                        continue
                    keypoints[i] = np.where(np.isfinite(found.keypoints), found.keypoints * scale, 0.0)
                    visible[i] = found.visible & np.isfinite(found.keypoints).all(axis=1)
                    with lock:
                        advance(1)

        pieces = _pieces(samples, total, workers)
        if workers <= 1 or len(pieces) == 1:
            for piece in pieces:
                run(piece)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="motion-pose") as pool:
                list(pool.map(run, pieces))
        for (a, b), picked in zip(shots, samples, strict=True):
            _interpolate(keypoints, visible, picked, a, b)
    return keypoints, visible


#: a piece of footage for one pose tracker has at least this many samples ...
_MIN_PIECE = 32
#: ... and one that starts inside a shot is tracked from this many samples earlier
_WARM = 4


def _pieces(samples: Sequence[np.ndarray], total: int, workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(warm-up, kept) sample frames per tracker: shots split into pieces of about a quarter of a
    worker's share, largest first, so the pool's workers finish together whatever the shots."""
    size = total if workers <= 1 else max(_MIN_PIECE, -(-total // (4 * workers)))
    out = []
    for picked in samples:
        cuts = np.linspace(0, picked.size, -(-picked.size // size) + 1).round().astype(int)
        for lo, hi in itertools.pairwise(cuts):
            out.append((picked[max(0, lo - _WARM) : lo], picked[lo:hi]))
    if workers > 1:
        out.sort(key=lambda piece: -piece[1].size)
    return out


def _ignore(n: int) -> None:
    pass


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
