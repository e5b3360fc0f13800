"""End of the person's voice -> first avatar audio, in a real browser (Debian chromium).

Run inside the test namespace: python -m livedh.testing.browser_conversation URL WAV
Chromium's fake microphone plays WAV (once, then silence) into the page, which talks to the
server hands-free. The page taps its own microphone track and the received stream with WebAudio
analysers and times the gap between the last loud microphone sample and the first loud answer
sample, both on its own clock. Prints the gap in milliseconds as JSON (null: no answer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from livedh.testing.browser_latency import connected_page

MEASURE = """async () => {
  const pc = window.livedh.pc;
  const mic = pc.getSenders().map(s => s.track).find(t => t && t.kind === 'audio');
  const received = document.querySelector('video').srcObject.getAudioTracks()[0];
  const ctx = new AudioContext();
  const tap = (track) => {
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 256;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    return analyser;
  };
  const heard = tap(mic), said = tap(received);
  const samples = new Float32Array(256);
  const loud = (analyser, level) => {
    analyser.getFloatTimeDomainData(samples);
    return samples.some(v => Math.abs(v) > level);
  };
  let lastVoice = null;
  const t0 = performance.now();
  while (performance.now() - t0 < 20000) {
    const now = performance.now();
    if (loud(heard, 0.02)) lastVoice = now;
    else if (lastVoice !== null && now - lastVoice > 50 && loud(said, 0.01)) return now - lastVoice;
    await new Promise(r => setTimeout(r, 1));
  }
  return null;
}"""


def main(url: str, wav: Path) -> float | None:
    """``wav`` should start with a few seconds of silence: the page connects meanwhile."""
    with connected_page(url, "open", [f"--use-file-for-fake-audio-capture={wav}%noloop"]) as page:
        result = page.evaluate(MEASURE)
    return None if result is None else float(result)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
