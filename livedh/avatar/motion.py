"""What a video avatar brings for its body's motion, and what a planner hands the renderer.

A *motion library* is read from the avatar folder's ``motion/`` files (written by the build's
motion step, see docs/avatars.md): the motion graph over the footage frames, whether the filmed
person speaks in each frame, and the named action clips. A :class:`FootagePick` is the planner's
answer for one output frame: which footage frame to show, or, during a transition, which two to
blend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from livedh.avatar.motion_graph import MotionGraph
from livedh.errors import InvalidInputError
from livedh.files import atomic_file

MOTION_DIR = "motion"
GRAPH_FILE = "motion/graph.npz"
POSES_FILE = "motion/poses.npz"
SPEECH_FILE = "motion/speech.npy"
#: version of the files under ``motion/``: a newer builder rebuilds older ones
MOTION_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class FootagePick:
    """The footage for one output frame.

    index: the footage frame shown (during a blend: the frame being blended towards).
    blend_from: during a transition blend, the frame of the footage being left (it keeps
        playing on under the fade); None outside blends.
    alpha: weight of ``index`` against ``blend_from``, in (0, 1]; 1.0 outside blends.
    """

    index: int
    blend_from: int | None = None
    alpha: float = 1.0


@dataclass(frozen=True)
class ActionClip:
    """A named gesture: footage frames ``start`` .. ``end - 1``, played forward in one go."""

    name: str
    start: int
    end: int


@dataclass(frozen=True)
class MotionLibrary:
    """An avatar's motion graph, the source's speech per frame, and its action clips (in the order
    the manifest lists them, which is also the order LiveTalking's ``audiotype`` numbers them)."""

    graph: MotionGraph
    #: (n_frames,) bool: the filmed person is speaking in this frame
    speech: np.ndarray
    actions: tuple[ActionClip, ...] = ()
    #: the footage's pose (``motion/poses.npz``): keypoints (n_frames, 23, 2) and visible
    #: (n_frames, 23); None when absent. The planner predicts how smooth each blend is from it.
    keypoints: np.ndarray | None = None
    visible: np.ndarray | None = None
    # what planners derive from the library alone (blend costs: ~0.1 s), made once per avatar
    _derived: dict[Hashable, object] = field(default_factory=dict, init=False, repr=False, compare=False)
    _derived_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                          compare=False)

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, computed on the first call for ``key`` and shared by every later caller (every
        session of this avatar); ``key`` names what the value depends on. Thread-safe; the value
        must not be modified."""
        with self._derived_lock:
            if key not in self._derived:
                self._derived[key] = make()
            return cast(T, self._derived[key])

    @property
    def action_names(self) -> list[str]:
        return [a.name for a in self.actions]

    def action(self, name: str) -> ActionClip:
        """The clip called ``name``; InvalidInputError listing the avatar's actions otherwise."""
        for clip in self.actions:
            if clip.name == name:
                return clip
        have = ", ".join(self.action_names) or "none"
        raise InvalidInputError(f"unknown action {name!r}; this avatar's actions: {have}")

    @classmethod
    def load(cls, avatar_dir: Path, entry: dict[str, Any], frame_count: int) -> MotionLibrary:
        """Reads ``motion/`` of an avatar folder; ``entry`` is the manifest's ``motion`` object.
        Every missing or inconsistent file raises InvalidInputError naming it."""
        avatar_dir = Path(avatar_dir)
        graph = MotionGraph.load(avatar_dir / GRAPH_FILE) if (avatar_dir / GRAPH_FILE).is_file() else None
        if graph is None:
            raise InvalidInputError(f"{avatar_dir / GRAPH_FILE} is missing: run `livedh avatar graph`")
        if graph.n_frames != frame_count:
            raise InvalidInputError(
                f"{avatar_dir / GRAPH_FILE}: {graph.n_frames} frames, the manifest says {frame_count}"
            )
        speech = _load_speech(avatar_dir / SPEECH_FILE, frame_count)
        actions = tuple(parse_actions(entry.get("actions", {}), frame_count, where=str(avatar_dir)))
        keypoints, visible = _load_poses(avatar_dir / POSES_FILE, frame_count)
        return cls(graph=graph, speech=speech, actions=actions, keypoints=keypoints, visible=visible)


def _load_poses(path: Path, frame_count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The poses file's arrays, or (None, None) when it is missing or does not fit: optional."""
    try:
        with np.load(path, allow_pickle=False) as z:
            kp, vis = np.asarray(z["keypoints"], np.float32), np.asarray(z["visible"], bool)
    except (ValueError, KeyError, OSError):
        return None, None
    if kp.ndim != 3 or kp.shape[0] != frame_count or kp.shape[2] != 2 or vis.shape != kp.shape[:2]:
        return None, None
    return kp, vis


def _load_speech(path: Path, frame_count: int) -> np.ndarray:
    if not path.is_file():
        return np.zeros(frame_count, dtype=bool)  # footage without audio: no speech known
    try:
        speech = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"{path}: not a readable array ({type(e).__name__})") from None
    if speech.shape != (frame_count,):
        raise InvalidInputError(f"{path}: shape {speech.shape}, expected ({frame_count},)")
    return speech.astype(bool)


def parse_actions(raw: object, frame_count: int, *, where: str) -> list[ActionClip]:
    """``{"wave": [start, end], ...}`` (manifest order kept) -> clips; InvalidInputError if malformed."""
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: motion.actions must be an object")
    clips = []
    for name, span in raw.items():
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            or not 0 <= span[0] < span[1] <= frame_count
        ):
            raise InvalidInputError(f"{where}: action {name!r} must be [start, end) inside 0..{frame_count}")
        clips.append(ActionClip(str(name), span[0], span[1]))
    return clips


def save_speech(avatar_dir: Path, speech: np.ndarray) -> None:
    path = Path(avatar_dir) / SPEECH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(speech, dtype=bool))
