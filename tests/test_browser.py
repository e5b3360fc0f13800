"""The page in a real browser (Debian chromium via playwright), in a network namespace."""

from __future__ import annotations

import importlib.util
import json
import shutil
import wave

import pytest

from livedh.testing.live import live_server
from livedh.testing.netns import netns_available
from livedh.testing.talking_video import VideoSpec, write_talking_video

pytestmark = [
    pytest.mark.browser,
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright"),
]


def test_page_connects_plays_and_speaks(tmp_path):
    # a video for the page's "your own avatar" form: the default minimum is 10 s
    video, _ = write_talking_video(tmp_path / "me.mp4", VideoSpec(seconds=10.5, size=(256, 256)))
    avatars = tmp_path / "avatars"
    with live_server(tmp_path, "--avatars-dir", str(avatars)) as server:
        shot = tmp_path / "page.png"
        silence = tmp_path / "mic.wav"  # the browser's microphone: quiet, so no barge-in
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(48000)
            w.writeframes(bytes(48000 * 2 * 10))
        done = server.run_python(
            ["tests/browser_check.py", server.url, str(shot), str(silence), str(video)], timeout=240
        )
        assert done.returncode == 0, done.stderr[-4000:]
        found = json.loads(done.stdout.strip().splitlines()[-1])
        assert found["connected"]
        assert found["video_width"] == 512
        assert not found["video_paused"]
        assert found["video_time_advance"] > 1.0, found
        assert found["audio_bytes_idle"] > 0, found
        assert found["speaking_indicator"] and found["state_event"]
        assert "Hello from the browser test" in found["subtitles"], found
        assert found["mic_sending"] > 0, found  # hands-free mode sends the microphone
        # Speech carries far more energy than the idle stream's silence.
        assert found["audio_energy_speech"] > 0.01, found
        assert found["audio_energy_speech"] > 20 * max(found["audio_energy_idle"], 1e-6), found
        assert found["console_errors"] == [], found
        assert shot.stat().st_size > 10_000
        log = server.log()
        assert "event=speak_start" in log
        assert "event=hearing_start" in log  # the server receives and listens to the mic
        # the form uploaded the video and followed the build job to its end
        assert found["avatar_error"] == "", found
        assert 'Avatar "me" is built (262 frames)' in found["avatar_status"], found
        assert (avatars / "me" / "avatar.json").is_file()
