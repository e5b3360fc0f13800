"""The whole promise, end to end: a person's video -> `livedh avatar build` -> `livedh avatar
train --quick` -> the server streams that avatar over WebRTC, its mouth following the speech."""

from __future__ import annotations

import subprocess
import sys

import pytest

from livedh.testing.live import ROOT, live_server
from livedh.testing.netns import netns_available
from livedh.testing.talking_video import VideoSpec, write_talking_video

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]


def _livedh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livedh.cli", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=600,
    )


def test_video_to_trained_avatar_to_live_stream(tmp_path):
    video, _ = write_talking_video(tmp_path / "me.mp4", VideoSpec(seconds=4.0, size=(480, 480)))
    avatars = tmp_path / "avatars"
    built = _livedh("avatar", "build", str(video), "--name", "me", "--avatars-dir", str(avatars),
                    "--min-seconds", "2", "--progress", "none")
    assert built.returncode == 0, built.stderr[-3000:]
    trained = _livedh("avatar", "train", "me", "--avatars-dir", str(avatars), "--quick")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (avatars / "me" / "weights" / "ultralight.pth").is_file()

    # --model is not given: it follows the avatar (ultralight, with its own trained weights)
    with live_server(tmp_path, "--avatar", "me", "--avatars-dir", str(avatars), "--asr", "off") as server:
        status, avatar = server.get("/api/v1/avatar")
        assert status == 200 and avatar["model"] == "ultralight" and avatar["name"] == "me"
        result = server.probe("--seconds", "8", "--say", "Hello! I was trained on my own video.",
                              "--say-at", "1.0")
    assert result["errors"] == []
    assert result["video_size"] == [480, 480]
    assert result["fps"] >= 23.0, result
    assert result["speech_seconds"] > 1.0, result
    # the generated mouth shows in the mouth box while the avatar speaks
    assert result["mouth_audio_corr"] is not None and result["mouth_audio_corr"] > 0.2, result
