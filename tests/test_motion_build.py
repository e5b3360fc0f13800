"""The motion step of the avatar build (livedh/avatar/motion_build.py, motion_actions.py): poses,
cuts, speech, the graph and its action clips, `livedh avatar graph`, and format 1 avatars.

Footage is made here: the astronaut photo swaying, with a magenta disc (a "hand") circling; a fake
pose tracker finds the disc, so the poses are known without the pose model. One test builds from
a real synthetic video with the real pose model (a separate action video appended)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from skimage import data

from livedh import cli
from livedh.avatar import motion_build as mb
from livedh.avatar.build import BuildParams, build_avatar
from livedh.avatar.format import load_manifest
from livedh.avatar.landmarks import detect_landmarks
from livedh.avatar.motion import ActionClip
from livedh.avatar.motion_actions import ActionSpec, parse_action, parse_actions
from livedh.avatar.motion_graph import (
    TRANSITION,
    MotionGraphConfig,
    build_motion_graph,
    join_spans,
)
from livedh.avatar.motion_labels import Appearance
from livedh.avatar.planner import MotionPlanner
from livedh.avatar.pose import NUM_KEYPOINTS, PoseResult
from livedh.avatar.video import VideoAvatar, write_video_avatar
from livedh.errors import InvalidInputError
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.generator import FaceGenerator
from livedh.lipsync.neural import NeuralLipSync
from livedh.testing.talking_video import VideoSpec, write_talking_video

SIZE, FPS, N = 256, 25, 75
HIDDEN = range(30, 34)  # frames without the disc: the tracker finds no person
OFFSETS = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1).reshape(-1, 2)[:NUM_KEYPOINTS] * 6.0


def disc_centre(i: int) -> tuple[float, float]:
    t = i / FPS
    return 128 + 50 * np.sin(2 * np.pi * t), 170 + 30 * np.cos(2 * np.pi * t)  # a 1 s loop


class FakeTracker:
    """Finds the magenta disc; keypoints are fixed offsets around its centre."""

    seen: ClassVar[list[float]] = []

    def process(self, rgb: np.ndarray) -> PoseResult:
        r, g, b = (rgb[..., k].astype(int) for k in range(3))
        ys, xs = np.nonzero((r > 180) & (g < 90) & (b > 180))
        if xs.size < 20:
            return PoseResult.empty()
        centre = np.array([xs.mean(), ys.mean()])
        FakeTracker.seen.append(float(centre[0]))
        return PoseResult((centre + OFFSETS).astype(np.float32), np.ones(NUM_KEYPOINTS, bool))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def footage() -> tuple[list[np.ndarray], np.ndarray]:
    photo = cv2.resize(np.ascontiguousarray(data.astronaut()), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    base = detect_landmarks(photo)
    assert base is not None
    frames, points = [], []
    for i in range(N):
        dx = 2.0 * np.sin(2 * np.pi * i / 40)
        frame = cv2.warpAffine(photo, np.float32([[1, 0, dx], [0, 1, 0]]), (SIZE, SIZE),
                               borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        if i not in HIDDEN:
            x, y = disc_centre(i)
            cv2.circle(frame, (round(x), round(y)), 12, (255, 0, 255), -1)
        frames.append(frame)
        points.append(base + np.float32([dx, 0]))
    return frames, np.stack(points)


@pytest.fixture
def avatar(footage: tuple[list[np.ndarray], np.ndarray], tmp_path: Path) -> Path:
    frames, points = footage
    out = tmp_path / "avatars" / "mover"
    write_video_avatar(out, frames, FPS, "mover", points, model="wav2lip", progress=False)
    return out


def test_parse_actions() -> None:
    assert parse_action("wave=12.0-14.5") == ActionSpec("wave", start_s=12.0, end_s=14.5)
    assert parse_action(f"bye={__file__}").video == Path(__file__)
    for bad, says in [("wave", "NAME=START-END"), ("9wave=1-2", "name"), ("../x=1-2", "name"),
                      ("wave=3-2", "after the start"), ("w=no.mp4", "no video file 'no.mp4'")]:  # fmt: skip
        with pytest.raises(InvalidInputError, match=says):
            parse_action(bad)
    with pytest.raises(InvalidInputError, match="'wave' is given more than once"):
        parse_actions(["wave=1-2", "wave=3-4"])


def test_speech_frames_follow_the_loudness() -> None:
    sr, n = 16000, 50
    audio = np.zeros(n * sr // FPS, np.float32)
    tone = 0.5 * np.sin(np.arange(audio.size) / 5.0).astype(np.float32)
    speak = np.zeros(n, bool)
    speak[10:20] = speak[22:30] = speak[40:41] = True  # a 2-frame pause inside, a 1-frame blip
    for i in np.flatnonzero(speak):
        audio[i * 640 : (i + 1) * 640] = tone[i * 640 : (i + 1) * 640]
    got = mb.speech_frames(audio, n, FPS)
    want = np.zeros(n, bool)
    want[10:30] = True  # the pause is filled, the blip dropped
    assert got.tolist() == want.tolist()
    assert not mb.speech_frames(None, n, FPS).any()
    assert not mb.speech_frames(np.zeros_like(audio), n, FPS).any()  # a silent track


def test_strided_poses_interpolate_and_survive_missing_people(
    avatar: Path, footage: tuple[list[np.ndarray], np.ndarray]
) -> None:
    paths = [avatar / f"frames/{i:06d}.jpg" for i in range(N)]
    FakeTracker.seen = []
    kp, vis = mb.strided_poses(paths, np.array([50]), 2, FakeTracker)
    assert kp.shape == (N, NUM_KEYPOINTS, 2) and vis.shape == (N, NUM_KEYPOINTS)
    # every 2nd frame of each shot and each shot's last: 0, 2 .. 48, 49 | 50, 52 .. 74
    assert len(FakeTracker.seen) == 25 + 1 + 13 - len([i for i in HIDDEN if i % 2 == 0])
    for i in (0, 2, 49, 50, 74):
        assert np.allclose((kp[i] - OFFSETS).mean(axis=0), disc_centre(i), atol=1.0), i
    assert np.allclose(kp[11], (kp[10] + kp[12]) / 2, atol=1e-4)  # interpolated between samples
    # no person in 30..33, nor half-way to it (29, between 28 and 30); 34 is sampled again
    assert not vis[HIDDEN.start - 1 : HIDDEN.stop].any()
    assert vis[: HIDDEN.start - 1].all() and vis[HIDDEN.stop :].all()


def test_pose_workers_split_the_shots_and_agree_with_one(avatar: Path) -> None:
    paths = [avatar / f"frames/{i:06d}.jpg" for i in range(N)]
    one = mb.strided_poses(paths, np.array([50]), 1, FakeTracker, workers=1)
    two = mb.strided_poses(paths, np.array([50]), 1, FakeTracker, workers=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    shots = [np.arange(0, 50), np.arange(50, N)]
    pieces = mb._pieces(shots, N, 2)
    assert len(pieces) == 3  # the 50-frame shot in two pieces of 25, the other whole
    assert [kept.tolist() for _, kept in mb._pieces(shots, N, 1)] == [s.tolist() for s in shots]
    assert np.sort(np.concatenate([kept for _, kept in pieces])).tolist() == list(range(N))
    for warm, kept in pieces:  # a piece inside a shot is tracked from the 4 samples before it
        starts_shot = kept[0] in (0, 50)
        assert warm.tolist() == ([] if starts_shot else list(range(kept[0] - 4, kept[0])))
        assert np.all(np.diff(kept) == 1) and (kept[0] < 50) == (kept[-1] < 50)  # never across the cut


def test_build_motion_writes_graph_action_and_manifest(avatar: Path) -> None:
    result = mb.build_motion(avatar, actions=[ActionSpec("wave", 2.0, 2.6)], tracker=FakeTracker,
                             progress=False)  # fmt: skip
    entry = {"version": 1, "actions": {"wave": [50, 65]}, "source_frames": N}
    assert result.entry == entry
    manifest = load_manifest(avatar)
    assert manifest.format_version == 2 and manifest.motion == entry and manifest.frame_count == N
    with np.load(avatar / "motion/poses.npz") as z:
        assert z["keypoints"].shape == (N, NUM_KEYPOINTS, 2) and z["visible"].shape == (N, NUM_KEYPOINTS)
        assert z["appearance"].shape[:2] == z["appearance_present"].shape == (N, 3)  # frame, 2 hands
        assert np.isfinite(z["appearance"]).all() and z["appearance_present"][:, 0].all()
    assert np.load(avatar / "motion/speech.npy").shape == (N,)  # no audio.wav: all silent
    loaded = VideoAvatar.load(avatar)
    assert loaded.motion is not None
    assert loaded.motion.action("wave") == ActionClip("wave", 50, 65)
    graph = loaded.motion.graph
    assert set(range(50, 65)) <= set(graph.nodes.tolist())
    into = [i for i in graph.nodes if (65 > i or i < 50) and (50, "transition") in graph.edges(int(i))]
    out = [t for t, kind in graph.edges(64) if kind == "transition" and not 50 <= t < 65]
    assert len(into) >= 4 and len(out) >= 4
    summary = json.loads((avatar / "summary.json").read_text())["motion"]
    assert summary == result.summary and summary["nodes"] == graph.nodes.size
    assert summary["transitions"] == graph.n_transitions > 0
    assert {"cuts", "gesture_share", "seconds"} <= set(summary)


def test_join_spans_keeps_a_clip_the_graph_would_drop() -> None:
    t = np.arange(100)
    centre = np.stack([100 + 40 * np.sin(2 * np.pi * t / 25), 100 + 20 * np.cos(2 * np.pi * t / 25)], 1)
    centre[80:] = np.stack([100 + 3 * (t[80:] - 80), np.full(20, 60.0)], 1)  # a one-off gesture after a cut
    kp = (centre[:, None] + OFFSETS[None]).astype(np.float32)
    vis = np.ones((100, NUM_KEYPOINTS), bool)
    boxes = np.tile([80.0, 20.0, 180.0, 120.0], (100, 1))
    graph = build_motion_graph(kp, vis, boxes, np.array([80]), MotionGraphConfig())
    assert 80 not in graph.nodes and 99 not in graph.nodes  # a dead end: pruned
    joined = join_spans(graph, kp, vis, [(80, 100)], k=3, face_boxes=boxes)
    assert set(range(80, 100)) <= set(joined.nodes.tolist())
    sources = [i for i in range(80) if 80 in joined.successors(i)]
    assert len(sources) == 3
    # the closest poses to frame 80's (centre (100, 60)): the loop frames nearest that point
    dist = np.linalg.norm(centre[:80] - centre[80], axis=1)
    assert dist[sources].max() <= np.sort(dist)[2] + 1e-3
    lo, hi = joined.indptr[99], joined.indptr[100]
    assert (joined.kinds[lo:hi] == TRANSITION).all() and hi - lo == 3
    assert all(t not in range(80, 100) for t in joined.successors(99))
    with pytest.raises(InvalidInputError, match="outside"):
        join_spans(graph, kp, vis, [(90, 101)])


def test_join_spans_prefers_frames_that_look_alike() -> None:
    t = np.arange(100)
    centre = np.stack([100 + 40 * np.sin(2 * np.pi * t / 25), 100 + 20 * np.cos(2 * np.pi * t / 25)], 1)
    centre[80:] = np.stack([100 + 3 * (t[80:] - 80), np.full(20, 60.0)], 1)  # as above
    kp = (centre[:, None] + OFFSETS[None]).astype(np.float32)
    vis = np.ones((100, NUM_KEYPOINTS), bool)
    boxes = np.tile([80.0, 20.0, 180.0, 120.0], (100, 1))
    graph = build_motion_graph(kp, vis, boxes, np.array([80]), MotionGraphConfig())
    features = np.zeros((100, 3, 16), np.float32)
    features[:50, 1] = 1.0  # frames 0-49 hold a prop in the left hand; the clip 80-99 does not
    looks = Appearance(features, np.ones((100, 3), bool))
    plain = join_spans(graph, kp, vis, [(80, 100)], k=3, face_boxes=boxes)
    joined = join_spans(graph, kp, vis, [(80, 100)], k=3, face_boxes=boxes, appearance=looks)
    before = [i for i in range(80) if 80 in plain.successors(i)]
    sources = [i for i in range(80) if 80 in joined.successors(i)]
    assert min(before) < 50 and len(sources) == 3 and min(sources) >= 50  # pose alone picks a prop frame
    dist = np.linalg.norm(centre[50:80] - centre[80], axis=1)
    assert np.linalg.norm(centre[sources] - centre[80], axis=1).max() <= np.sort(dist)[2] + 1e-3
    assert all(t >= 50 for t in joined.successors(99) if t < 80)


class BlackMouth(FaceGenerator):
    size, audio_window, audio_lookahead = 32, 640, 0

    def generate(self, crops: np.ndarray, references: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return np.zeros_like(crops)


def _to_format_1(avatar: Path) -> None:
    raw = json.loads((avatar / "avatar.json").read_text())
    raw["format_version"] = 1
    raw.pop("motion", None)
    (avatar / "avatar.json").write_text(json.dumps(raw))


def test_format_1_avatar_loads_and_graph_upgrades_it(
    avatar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _to_format_1(avatar)
    assert load_manifest(avatar).format_version == 1
    assert VideoAvatar.load(avatar).motion is None  # as before: the footage is looped
    old = NeuralLipSync.from_dir(avatar, BlackMouth())
    assert old.motion is None
    silent, speech = np.zeros(640, np.float32), (0.3 * np.sin(np.arange(640) * 0.3)).astype(np.float32)
    # ping-pong: frame N + 3 shows footage N - 5; speech gets a mouth drawn
    frames = old.infer([LipSyncRequest(N + 3, silent), LipSyncRequest(4, speech)])
    assert np.array_equal(frames[0], old.avatar.frame(N - 5))
    assert not np.array_equal(frames[1], old.avatar.frame(4))
    monkeypatch.setattr(mb, "PoseTracker", FakeTracker)
    args = ["avatar", "graph", "mover", "--avatars-dir", str(avatar.parent), "--progress", "none"]
    assert cli.main([*args, "--action", "wave=2.0-2.6"]) == 0
    assert "motion graph of 'mover'" in capsys.readouterr().out
    manifest = load_manifest(avatar)
    assert manifest.format_version == 2 and manifest.motion is not None
    upgraded = NeuralLipSync.from_dir(avatar, BlackMouth())
    assert upgraded.motion is not None and upgraded.motion.action_names == ["wave"]
    planner = MotionPlanner(upgraded.motion, seed=1)
    picks = [planner.next(np.zeros(1, np.float32)) for _ in range(30)]
    rendered = upgraded.infer([LipSyncRequest(i, speech, footage=p) for i, p in enumerate(picks)])
    assert len(rendered) == 30 and all(f.shape == (SIZE, SIZE, 3) for f in rendered)
    # without --action the actions are kept; with --action they are replaced
    assert cli.main(args) == 0
    assert load_manifest(avatar).motion == {"version": 1, "actions": {"wave": [50, 65]}, "source_frames": N}
    assert cli.main([*args, "--action", "nod=0.2-0.8"]) == 0
    assert load_manifest(avatar).motion["actions"] == {"nod": [5, 20]}  # type: ignore[index]


def test_motion_entry_is_validated(avatar: Path) -> None:
    mb.build_motion(avatar, tracker=FakeTracker, progress=False)
    raw = json.loads((avatar / "avatar.json").read_text())
    for motion, says in [({"actions": {}}, "version"), ({"version": 1, "actions": {"w": [70, 90]}}, "w"),
                         ({"version": 1, "actions": {}, "x": 1}, "unknown")]:  # fmt: skip
        (avatar / "avatar.json").write_text(json.dumps({**raw, "motion": motion}))
        with pytest.raises(InvalidInputError, match=says):
            load_manifest(avatar)
    (avatar / "avatar.json").write_text(json.dumps({**raw, "format_version": 1}))
    with pytest.raises(InvalidInputError, match="format_version 2"):
        load_manifest(avatar)


@pytest.mark.parametrize(
    ("action", "says"),
    [("9bad=1-2", "the name must be"), ("wave=2.5-9", "outside the video"),
     ("bye=missing.mp4", "no video file 'missing.mp4'"), ("wave", "NAME=START-END")],
)  # fmt: skip
def test_cli_bad_action_exits_2(
    avatar: Path, action: str, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mb, "PoseTracker", FakeTracker)
    before = (avatar / "avatar.json").read_text()
    code = cli.main(["avatar", "graph", "mover", "--avatars-dir", str(avatar.parent), "--progress", "none",
                     "--action", action])  # fmt: skip
    assert code == 2
    assert says in capsys.readouterr().err
    assert (avatar / "avatar.json").read_text() == before  # untouched
    twice = ["--action", "wave=1-2", "--action", "wave=3-4"]
    code = cli.main(["avatar", "build", str(avatar / "nothing.mp4"), "--name", "x", "--avatars-dir",
                     str(avatar.parent), "--progress", "none", *twice])  # fmt: skip
    assert code == 2 and "more than once" in capsys.readouterr().err


def test_build_appends_a_separate_action_video(tmp_path: Path) -> None:
    """The real pipeline: FaceMesh, the real pose model, audio; the clip joins after a cut."""
    main, _ = write_talking_video(tmp_path / "main.mp4", VideoSpec(seconds=2.4))
    clip, _ = write_talking_video(tmp_path / "bye.mp4", VideoSpec(seconds=1.2, seed=3))
    calls: list[tuple[str, int, int]] = []
    progress: Callable[[str, int, int], None] = lambda *call: calls.append(call)  # noqa: E731
    result = build_avatar(main, "me", tmp_path / "avatars", BuildParams(min_seconds=1.0), progress=progress,
                          actions=parse_actions(["wave=0.4-1.0", f"bye={clip}"]))  # fmt: skip
    m = result.manifest
    assert m.frame_count == 90 and m.format_version == 2
    assert m.motion == {"version": 1, "actions": {"wave": [10, 25], "bye": [60, 90]}, "source_frames": 60}
    avatar = VideoAvatar.load(result.path)
    assert avatar.landmarks.shape[0] == avatar.boxes.shape[0] == 90 and avatar.mask(89) is not None
    assert np.load(result.path / "features/mel.npy").shape[0] == 90
    assert avatar.motion is not None and 60 in avatar.motion.graph.cuts.tolist()
    assert set(range(60, 90)) | set(range(10, 25)) <= set(avatar.motion.graph.nodes.tolist())
    assert avatar.motion.speech.any()  # the clip speaks
    assert result.summary["motion"]["actions"] == {"wave": [10, 25], "bye": [60, 90]}
    for step in ("pose", "cuts", "motion graph", "action videos"):
        assert any(s == step and done == total for s, done, total in calls), step
