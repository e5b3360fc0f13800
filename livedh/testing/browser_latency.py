"""Time from /human to audible speech in a real browser (Debian chromium via playwright).

Run inside the test namespace: python -m livedh.testing.browser_latency URL TRIALS
The page itself posts /human and polls its own received audio energy (WebRTC stats, after
the browser's jitter buffer), so the figure is what a person at the page would hear.
"""

from __future__ import annotations

import json
import sys
import time

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

MEASURE = """async (text) => {
  const pc = window.livedh.pc;
  const energy = async () => {
    let e = 0;
    (await pc.getStats()).forEach(s => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') e = s.totalAudioEnergy || 0;
    });
    return e;
  };
  const base = await energy();
  const t0 = performance.now();
  fetch('/human', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sessionid: window.livedh.sessionid, text, type: 'echo'})});
  while (performance.now() - t0 < 5000) {
    if (await energy() - base > 1e-5) return performance.now() - t0;
    await new Promise(r => setTimeout(r, 2));
  }
  return null;
}"""


def main(url: str, trials: int) -> list[float | None]:
    out: list[float | None] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.select_option("#mic", "off")
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('state').textContent.trim() === 'connected'", timeout=30000
        )
        time.sleep(1.5)
        for _ in range(trials):
            out.append(page.evaluate(MEASURE, "Hello there! Thanks for stopping by."))
            time.sleep(3.5)  # let the sentence finish
        browser.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
