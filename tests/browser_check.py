"""Drive the page in headless Debian chromium (run inside the test's network namespace).

Usage: python tests/browser_check.py URL SCREENSHOT.png MIC.wav [VIDEO.mp4]  -> prints one JSON
line of findings. With VIDEO, the page's form also builds an avatar from it.
"""

from __future__ import annotations

import json
import sys
import time

from playwright.sync_api import sync_playwright

from livedh.testing.browser_latency import FLAGS as CHROMIUM_FLAGS

AUDIO_STATS = """async () => {
  const stats = await window.livedh.pc.getStats();
  let out = {bytes: 0, energy: 0, samples: 0};
  stats.forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out = {bytes: s.bytesReceived || 0, energy: s.totalAudioEnergy || 0,
             samples: s.totalSamplesReceived || 0};
    }
  });
  return out;
}"""


def main(url: str, screenshot: str, mic_wav: str, video: str | None = None) -> dict:
    found: dict = {"console_errors": []}
    with sync_playwright() as p:
        flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}"]
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_page()
        page.on("console", lambda m: m.type == "error" and found["console_errors"].append(m.text))
        found["failed_requests"] = []
        page.on("response", lambda r: r.status >= 400 and found["failed_requests"].append(
            f"{r.request.method} {r.url} {r.status}"))
        page.goto(url)
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('state').textContent.trim() === 'connected'", timeout=30000
        )
        found["connected"] = True
        t0 = page.evaluate("document.getElementById('video').currentTime")
        time.sleep(2.0)
        found["video_time_advance"] = page.evaluate(
            "document.getElementById('video').currentTime") - t0
        found["video_width"] = page.evaluate("document.getElementById('video').videoWidth")
        found["video_paused"] = page.evaluate("document.getElementById('video').paused")
        before = page.evaluate(AUDIO_STATS)
        found["audio_bytes_idle"] = before["bytes"]
        page.fill("#text", "Hello from the browser test. Can you hear me speaking?")
        page.press("#text", "Enter")
        page.wait_for_function(
            "document.getElementById('speaking').dataset.on === 'true'", timeout=10000
        )
        found["speaking_indicator"] = True
        # The avatar's state arrives over the events data channel.
        page.wait_for_function(
            "document.getElementById('avatar-state').textContent === 'speaking'", timeout=10000
        )
        found["state_event"] = True
        time.sleep(3.0)
        after = page.evaluate(AUDIO_STATS)
        found["audio_energy_idle"] = before["energy"]
        found["audio_energy_speech"] = after["energy"] - before["energy"]
        found["audio_samples"] = after["samples"] - before["samples"]
        found["subtitles"] = page.evaluate("document.getElementById('subtitles').textContent")
        found["mic_sending"] = page.evaluate("""async () => {
          const stats = await window.livedh.pc.getStats();
          let bytes = 0;
          stats.forEach(s => { if (s.type === 'outbound-rtp' && s.kind === 'audio') bytes = s.bytesSent; });
          return bytes;
        }""")
        page.screenshot(path=screenshot)
        page.click("#stop")
        page.wait_for_function(
            "['closed','idle'].includes(document.getElementById('state').textContent.trim())",
            timeout=10000,
        )
        found["error_text"] = page.evaluate("document.getElementById('error-text').textContent")
        if video is not None:
            page.fill("#avatar-name", "me")
            page.set_input_files("#avatar-file", video)
            page.click("#avatar-build")
            page.wait_for_function(
                "document.getElementById('avatar-status').textContent.includes('is built')"
                " || document.getElementById('error-text').textContent !== ''",
                timeout=120000,
            )
            found["avatar_status"] = page.evaluate("document.getElementById('avatar-status').textContent")
            found["avatar_error"] = page.evaluate("document.getElementById('error-text').textContent")
        browser.close()
    return found


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
