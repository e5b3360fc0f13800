"""`livedh avatar build`: a video avatar from a video file (livedh/avatar/build.py).

Synthetic clips (livedh.testing.talking_video) are short and small, with ``min_seconds`` lowered,
so the file stays fast; the real clips in ../shared/media are built when present.
"""

from __future__ import annotations

import fcntl
import json
import logging
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from livedh import cli
from livedh.avatar import video as video_mod
from livedh.avatar.build import BuildParams, build_avatar, probe_video, work_dir
from livedh.avatar.format import load_manifest
from livedh.avatar.video import VideoAvatar
from livedh.errors import ConflictError, InvalidInputError, NotFoundError
from livedh.testing.talking_video import VideoSpec, write_talking_video

FAST = BuildParams(min_seconds=1.0)
SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
REAL_CLIPS = ("latentsync_demo1_video.mp4", "latentsync_demo2_video.mp4")


@pytest.fixture(scope="module")
def make_video(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_video(**spec)``: a synthetic talking clip, made once per spec for the module."""
    folder = tmp_path_factory.mktemp("videos")
    made: dict[VideoSpec, Path] = {}

    def make(**kwargs: object) -> Path:
        spec = VideoSpec(**{"seconds": 2.4, "size": (512, 512), **kwargs})  # type: ignore[arg-type]
        if spec not in made:
            made[spec], _ = write_talking_video(folder / f"clip{len(made)}.mp4", spec)
        return made[spec]

    return make


def read_wav(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getnframes()


# --- a good clip -----------------------------------------------------------------------------


def test_good_clip_builds_a_complete_avatar(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video()
    calls: list[tuple[str, int, int]] = []
    result = build_avatar(
        video, "me", tmp_path, FAST, progress=lambda step, done, total: calls.append((step, done, total))
    )
    out = tmp_path / "me"
    assert result.path == out
    n = 60  # 2.4 s at 25 fps
    manifest = load_manifest(out)
    assert (manifest.kind, manifest.model, manifest.fps) == ("video", "ultralight", 25)
    assert manifest.frame_count == n
    assert (manifest.width, manifest.height) == (512, 512)
    for i in (0, n - 1):
        assert (out / f"frames/{i:06d}.jpg").is_file() and (out / f"masks/{i:06d}.png").is_file()
    assert not (out / f"frames/{n:06d}.jpg").exists()
    assert np.load(out / "landmarks.npy").shape == (n, 478, 2)
    assert np.load(out / "boxes.npy").shape == (n, 4)
    assert read_wav(out / "audio.wav") == (16000, 1, round(n / 25 * 16000))
    mel = np.load(out / "features" / "mel.npy")
    assert mel.shape == (n, 1, 80, 16) and mel.dtype == np.float32 and np.isfinite(mel).all()
    assert (out / "preview.jpg").stat().st_size > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary
    assert summary["frames"] == n and summary["fps"] == 25 and summary["audio"] is True
    assert summary["source"]["file"] == video.name
    assert summary["source"]["width"] == 512 and summary["source"]["fps"] == 25.0
    assert summary["source"]["variable_frame_rate"] is False
    assert summary["resampling"] == {"decoded": n, "duplicated": 0, "dropped": 0}
    assert summary["face"]["fraction"] == 1.0 and summary["face"]["frames_with_face"] == n
    assert summary["face"]["height_px_median"] > FAST.min_face_px
    assert summary["rejected_frames"] == {"no_face": [], "several_faces": []}
    assert summary["crop_side_px"]["median"] > 0
    assert set(summary["seconds"]) >= {"probe", "audio", "frames", "assemble", "total"}
    assert summary["build_time_ratio"] > 0
    assert 0 <= summary["preview_frame"] < n

    avatar = VideoAvatar.load(out)
    assert avatar.frame(0).shape == (512, 512, 3) and avatar.has_masks
    # the crop follows the face: the box holds the mouth
    x0, y0, x1, y1 = avatar.crop_box(n // 2)
    mouth = avatar.landmarks[n // 2, 13]
    assert x0 < mouth[0] < x1 and y0 < mouth[1] < y1
    # progress reached every step's end; the work folder is gone
    for step in ("probe", "audio", "frames", "assemble"):
        assert any(s == step and done == total for s, done, total in calls), step
    assert not work_dir(tmp_path, "me").exists()


def test_wav2lip_crop_and_max_side(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video(size=(640, 384), face_scale=0.75)
    params = BuildParams(min_seconds=1.0, max_side=320, min_face_px=40, model="wav2lip")
    result = build_avatar(video, "small", tmp_path, params, progress=False)
    assert (result.manifest.width, result.manifest.height, result.manifest.model) == (320, 192, "wav2lip")
    assert VideoAvatar.load(result.path).frame(0).shape == (192, 320, 3)


# --- validation ------------------------------------------------------------------------------


def test_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a shopping list, not a video\n" * 20)
    with pytest.raises(InvalidInputError, match=r"notes\.mp4 is not a video file"):
        probe_video(fake, FAST)
    with pytest.raises(InvalidInputError, match="is not a video file"):
        build_avatar(fake, "x", tmp_path / "avatars", FAST, progress=False)
    assert not (tmp_path / "avatars" / "x").exists()


def test_audio_file_has_no_video_track(tmp_path: Path) -> None:
    sound = tmp_path / "voice.wav"
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 12, "<i2").tobytes())
    with pytest.raises(InvalidInputError, match=r"voice\.wav has no video track \(an audio file\)"):
        probe_video(sound, FAST)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        build_avatar(tmp_path / "nope.mp4", "x", tmp_path, FAST, progress=False)


def test_too_short(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video()
    with pytest.raises(InvalidInputError, match=r"the video is 2\.4 s long; an avatar needs at least 10 s"):
        build_avatar(video, "x", tmp_path, BuildParams(), progress=False)
    with pytest.raises(InvalidInputError, match=r"at least 5 s of footage"):
        probe_video(video, BuildParams(min_seconds=5))
    assert not (tmp_path / "x").exists() and not work_dir(tmp_path, "x").exists()


def test_no_face(make_video: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"no face found in any frame \(at most 20% allowed\): film"):
        build_avatar(make_video(faces=0), "x", tmp_path, FAST, progress=False)
    assert not (tmp_path / "x").exists()
    assert not work_dir(tmp_path, "x").exists()  # refused input leaves nothing to resume


def test_several_faces(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video(size=(768, 384), faces=2, face_scale=0.7)
    with pytest.raises(
        InvalidInputError,
        match=r"2 or more faces in 100% of the frames \(at most 10% allowed\): only the person should",
    ):
        build_avatar(video, "x", tmp_path, FAST, progress=False)
    assert not (tmp_path / "x").exists()


def test_face_too_small(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video(face_scale=0.35)
    with pytest.raises(
        InvalidInputError,
        match=r"the face is only \d+ px tall \(median.*\); it must be at least 96 px: film closer",
    ):
        build_avatar(video, "x", tmp_path, FAST, progress=False)
    assert not (tmp_path / "x").exists()


def test_tiny_face_in_a_full_hd_portrait_is_refused(make_video: Callable[..., Path], tmp_path: Path) -> None:
    # a tenth-size face in a 1080x1920 frame: too small to use (and to be found at all)
    video = make_video(seconds=1.2, size=(1080, 1920), face_scale=0.1)
    with pytest.raises(InvalidInputError, match=r"no face found|the face is only"):
        build_avatar(video, "x", tmp_path, FAST, progress=False)


def test_missing_audio_builds_without_training_data(
    make_video: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = build_avatar(make_video(audio=False), "mute", tmp_path, FAST, progress=False)
    assert "no audio track: the avatar can be streamed but not trained" in caplog.text
    assert result.summary["audio"] is False and result.summary["audio_duration_s"] is None
    assert not (result.path / "audio.wav").exists() and not (result.path / "features").exists()
    VideoAvatar.load(result.path, preload=False)


def test_variable_frame_rate_is_resampled(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video(variable_frame_rate=True)
    info = probe_video(video, FAST)
    assert info.variable_frame_rate
    result = build_avatar(video, "vfr", tmp_path, FAST, progress=False)
    n = round(info.duration_s * 25)
    assert result.manifest.frame_count == n
    assert len(list((result.path / "frames").iterdir())) == n
    summary = result.summary
    assert summary["source"]["variable_frame_rate"] is True
    assert summary["source"]["frame_interval_ms"][0] < 40 < summary["source"]["frame_interval_ms"][2]
    resampling = summary["resampling"]
    assert resampling["decoded"] == 60
    assert resampling["duplicated"] > 0 and resampling["dropped"] > 0
    # every output frame is one source frame: n = decoded - dropped + duplicated
    assert resampling["decoded"] - resampling["dropped"] + resampling["duplicated"] == n


def test_other_frame_rate_is_resampled(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video(fps=30, seconds=2.0)
    result = build_avatar(video, "thirty", tmp_path, FAST, progress=False)
    assert result.manifest.frame_count == 50 and result.summary["source"]["fps"] == 30.0
    assert result.summary["resampling"] == {"decoded": 60, "duplicated": 0, "dropped": 10}
    assert np.load(result.path / "features" / "mel.npy").shape == (50, 1, 80, 16)


def test_bad_name(make_video: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"avatar name '\.\./evil' is not allowed"):
        build_avatar(make_video(), "../evil", tmp_path, FAST, progress=False)


# --- crashes and resuming --------------------------------------------------------------------


class Crash(RuntimeError):
    pass


def crash_after(chunk: int) -> Callable[[int], None]:
    def on_chunk(c: int) -> None:
        if c == chunk:
            raise Crash(f"crash after chunk {c}")

    return on_chunk


CHUNKED = BuildParams(min_seconds=1.0, chunk_frames=20)  # 60 frames: 3 chunks


def test_crash_halfway_leaves_nothing_and_resumes(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video()
    with pytest.raises(Crash):
        build_avatar(video, "me", tmp_path, CHUNKED, progress=False, on_chunk=crash_after(0))
    assert not (tmp_path / "me").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".me.build")] == []
    steps = work_dir(tmp_path, "me") / "steps"
    assert (steps / "chunk-0000.json").is_file() and not (steps / "chunk-0001.json").exists()

    seen: list[int] = []
    result = build_avatar(video, "me", tmp_path, CHUNKED, progress=False, on_chunk=seen.append)
    assert seen == [1, 2]  # chunk 0 was reused, not redone
    assert result.summary["steps"] == {"audio": "reused", "frames_chunks_reused": 1, "frames_chunks_built": 2}
    assert result.summary["face"]["fraction"] == 1.0
    avatar = VideoAvatar.load(result.path)
    assert avatar.frame_count == 60
    assert not work_dir(tmp_path, "me").exists()


def test_crash_while_assembling_keeps_the_previous_avatar(
    make_video: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_avatar(make_video(audio=False), "me", tmp_path, CHUNKED, progress=False)
    before = (tmp_path / "me" / "avatar.json").read_text()

    def broken_save_json(path: Path, data: object) -> None:
        raise Crash("disk full")

    monkeypatch.setattr(video_mod, "save_json", broken_save_json)
    with pytest.raises(Crash):
        build_avatar(make_video(), "me", tmp_path, CHUNKED, progress=False)
    assert (tmp_path / "me" / "avatar.json").read_text() == before  # untouched
    assert [p.name for p in tmp_path.iterdir() if ".build-" in p.name] == []
    monkeypatch.undo()

    result = build_avatar(make_video(), "me", tmp_path, CHUNKED, progress=False)
    assert result.summary["steps"]["frames_chunks_reused"] == 3
    assert result.summary["audio"] is True  # the new video's avatar replaced the old one
    VideoAvatar.load(result.path)


def test_damaged_work_is_not_trusted(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video()
    with pytest.raises(Crash):
        build_avatar(video, "me", tmp_path, CHUNKED, progress=False, on_chunk=crash_after(1))
    work = work_dir(tmp_path, "me")
    # chunk 0: a frame cut short (as if the disk filled up); chunk 1: a marker half-written
    frame = work / "frames" / "000005.jpg"
    frame.write_bytes(frame.read_bytes()[:100])
    marker = work / "steps" / "chunk-0001.json"
    marker.write_text(marker.read_text()[:30])
    (work / "mel.npy").write_bytes(b"garbage")

    result = build_avatar(video, "me", tmp_path, CHUNKED, progress=False)
    assert result.summary["steps"] == {"audio": "built", "frames_chunks_reused": 0, "frames_chunks_built": 3}
    avatar = VideoAvatar.load(result.path)
    assert avatar.frame(5).shape == (512, 512, 3)
    assert np.load(result.path / "features" / "mel.npy").shape == (60, 1, 80, 16)


def test_changed_params_or_restart_redo_the_work(make_video: Callable[..., Path], tmp_path: Path) -> None:
    video = make_video()
    with pytest.raises(Crash):
        build_avatar(video, "me", tmp_path, CHUNKED, progress=False, on_chunk=crash_after(1))
    with pytest.raises(Crash):  # other frame size: chunk markers no longer match
        build_avatar(video, "me", tmp_path, BuildParams(min_seconds=1.0, chunk_frames=20, max_side=256),
                     progress=False, on_chunk=crash_after(1))  # fmt: skip
    seen: list[int] = []
    build_avatar(video, "me", tmp_path, CHUNKED, progress=False, restart=True, on_chunk=seen.append)
    assert seen == [0, 1, 2]


def test_one_build_per_name_at_a_time(make_video: Callable[..., Path], tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".me.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running build holds it
        with pytest.raises(ConflictError, match="'me' is already being built"):
            build_avatar(make_video(), "me", tmp_path, FAST, progress=False)
    assert not (tmp_path / "me").exists()


# --- command line ----------------------------------------------------------------------------


def test_cli_bad_input_exits_2_with_the_message(
    make_video: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["avatar", "build", str(make_video()), "--name", "me",
                     "--avatars-dir", str(tmp_path), "--progress", "none"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "the video is 2.4 s long; an avatar needs at least 10 s" in err

    code = cli.main(["avatar", "build", str(make_video()), "--name", "me", "--avatars-dir", str(tmp_path),
                     "--min-seconds", "1", "--progress", "json", "--model", "wav2lip"])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"step": "frames", "done": 60, "total": 60} in lines
    assert lines[-1]["done"] is True and lines[-1]["summary"]["frames"] == 60
    assert load_manifest(tmp_path / "me").model == "wav2lip"

    fake = tmp_path / "fake.mp4"
    fake.write_text("hello")
    code = cli.main(["avatar", "build", str(fake), "--name", "me2", "--avatars-dir", str(tmp_path),
                     "--progress", "json"])  # fmt: skip
    assert code == 2
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["code"] == "invalid_input" and "is not a video file" in last["error"]


def test_cli_success_prints_where_and_a_summary(
    make_video: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["avatar", "build", str(make_video()), "--name", "me", "--avatars-dir", str(tmp_path),
                     "--min-seconds", "1", "--progress", "none"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert f"built avatar 'me' in {tmp_path / 'me'}" in out
    assert "60 frames 512x512 at 25 fps, face in 100% of frames" in out


# --- real footage (../shared/media, skipped when absent) -------------------------------------


@pytest.mark.parametrize("clip", REAL_CLIPS)
def test_real_clip_from_shared_media(clip: str, tmp_path: Path) -> None:
    """Uses the real clips of ../shared/media (docs: ../shared/README.md); skipped without them."""
    video = SHARED_MEDIA / clip
    if not video.is_file():
        pytest.skip(f"shared media {video} is absent")
    result = build_avatar(video, "real", tmp_path, BuildParams(), progress=False)
    summary = result.summary
    assert summary["face"]["fraction"] >= 0.95
    assert summary["frames"] == round(summary["source"]["duration_s"] * 25)
    assert summary["face"]["height_px_median"] >= BuildParams().min_face_px
    assert summary["audio"] is True
    VideoAvatar.load(result.path, preload=False)
