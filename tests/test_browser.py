"""The page in a real browser (Debian chromium via playwright), in a network namespace."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from livedh.testing.netns import netns_available
from livedh.testing.live import live_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright"),
]


def test_page_connects_plays_and_speaks(tmp_path):
    with live_server(tmp_path) as server:
        shot = tmp_path / "page.png"
        done = server.run_python(["tests/browser_check.py", server.url, str(shot)], timeout=120)
        assert done.returncode == 0, done.stderr[-4000:]
        found = json.loads(done.stdout.strip().splitlines()[-1])
        assert found["connected"]
        assert found["video_width"] == 512
        assert not found["video_paused"]
        assert found["video_time_advance"] > 1.0, found
        assert found["audio_bytes_idle"] > 0, found
        assert found["speaking_indicator"]
        # Speech carries far more energy than the idle stream's silence.
        assert found["audio_energy_speech"] > 0.01, found
        assert found["audio_energy_speech"] > 20 * max(found["audio_energy_idle"], 1e-6), found
        assert found["console_errors"] == [], found
        assert shot.stat().st_size > 10_000
        assert "event=speak_start" in server.log()
