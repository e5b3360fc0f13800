"""Time from /human to audible speech in a real browser (Debian chromium via playwright).

Run inside the test namespace: python -m livedh.testing.browser_latency URL TRIALS
The page itself posts /human and watches its own received audio (a WebAudio analyser on the
remote stream, after the browser's jitter buffer), so the figure is what a person at the page
would hear, less the output device's buffer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from playwright.sync_api import Page, sync_playwright

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

# The page's received audio, tapped with WebAudio after the browser's jitter buffer and
# decoder (what goes to the speakers, less the output device's own buffer), polled every ~1 ms.
# getStats' totalAudioEnergy would do too, but Chromium caches stats for ~50 ms, which
# quantizes the figure (two clusters 100 ms apart from run to run).
MEASURE = """async (text) => {
  if (!window._livedhAnalyser) {
    const stream = document.querySelector('video').srcObject;
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 256;
    source.connect(analyser);
    window._livedhAnalyser = analyser;
    await new Promise(r => setTimeout(r, 300));
  }
  const analyser = window._livedhAnalyser;
  const samples = new Float32Array(analyser.fftSize);
  const loud = () => {
    analyser.getFloatTimeDomainData(samples);
    return samples.some(v => Math.abs(v) > 0.01);
  };
  const t0 = performance.now();
  fetch('/human', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sessionid: window.livedh.sessionid, text, type: 'echo'})});
  while (performance.now() - t0 < 5000) {
    if (loud()) return performance.now() - t0;
    await new Promise(r => setTimeout(r, 1));
  }
  return null;
}"""


@contextmanager
def connected_page(url: str, mic: str, extra_flags: Sequence[str] = ()) -> Iterator[Page]:
    """Chromium on the page at ``url``, with the microphone mode ``mic`` ("off", "open",
    "ptt") chosen and Start pressed, once its connection state reads "connected"."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=[*FLAGS, *extra_flags])
        try:
            page = browser.new_page()
            page.goto(url)
            page.select_option("#mic", mic)
            page.click("#start")
            page.wait_for_function(
                "document.getElementById('state').textContent.trim() === 'connected'",
                timeout=30000,
            )
            yield page
        finally:
            browser.close()


def main(url: str, trials: int) -> list[float | None]:
    out: list[float | None] = []
    with connected_page(url, "off") as page:
        time.sleep(1.5)
        for _ in range(trials):
            out.append(page.evaluate(MEASURE, "Hello there! Thanks for stopping by."))
            time.sleep(3.5)  # let the sentence finish
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
