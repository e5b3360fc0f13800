"""End-to-end figures over real WebRTC on this machine: latency, pacing, CPU, memory, capacity.

Runs the real server and aiortc probe clients in a private network namespace (root needed).
The clients share the machine's cores with the server, so capacity figures are conservative.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from livedh.testing.live import LiveServer, live_server
from livedh.testing.netns import netns_available

SENTENCE = "Hello there! Thanks for stopping by. How can I help you today?"
LONG = (
    "Welcome to the demonstration of a real-time digital human. I can speak for as long as "
    "you like, and my lips follow my voice while the video streams at twenty-five frames "
    "per second to every person connected to this server."
)


def health(server: LiveServer) -> dict[str, Any]:
    return dict(server.get("/api/v1/health")[1])


def wait_idle(server: LiveServer) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    h = health(server)
    while h["sessions"] and time.monotonic() < deadline:
        time.sleep(0.3)
        h = health(server)
    time.sleep(1.0)
    return health(server)


def latency(server: LiveServer, trials: int) -> None:
    rows = [server.probe("--seconds", "5", "--say", SENTENCE, "--say-at", "1.0")
            for _ in range(trials)]
    first = [r["first_audio_after_say_ms"] for r in rows if r["first_audio_after_say_ms"]]
    print(f"\n## one session, piper voice ({trials} trials)")
    print(f"/human -> first speech audio at client: median {statistics.median(first):.0f} ms, "
          f"min {min(first):.0f}, max {max(first):.0f}")
    print(f"delivered fps: {statistics.median(r['fps'] for r in rows):.2f}; "
          f"frame gap p50 {statistics.median(r['frame_gap_p50_ms'] for r in rows):.1f} ms, "
          f"p99 {max(r['frame_gap_p99_ms'] for r in rows):.1f} ms (worst trial)")
    print(f"mouth/audio correlation: {statistics.median(r['mouth_audio_corr'] for r in rows):.2f} "
          f"(best lag {statistics.median(r['best_lag_frames'] for r in rows):+.0f} frames)")


def browser_latency(server: LiveServer, trials: int) -> None:
    import shutil

    if shutil.which("chromium") is None:
        print("\n(browser latency skipped: Debian chromium not installed)")
        return
    done = server.run_python(["-m", "livedh.testing.browser_latency", server.url, str(trials)],
                             timeout=180)
    if done.returncode != 0:
        print(f"\n(browser latency failed: {done.stderr[-500:]})")
        return
    import json

    values = [v for v in json.loads(done.stdout.strip().splitlines()[-1]) if v is not None]
    print(f"\n## in Chromium (WebAudio on the received stream, after its jitter buffer), "
          f"{len(values)} trials")
    print(f"/human -> audible speech in the page: median {statistics.median(values):.0f} ms, "
          f"min {min(values):.0f}, max {max(values):.0f}")
    lat = [int(line.split("latency_ms=")[1].split()[0]) for line in server.log().splitlines()
           if "latency_ms=" in line]
    if lat:
        print(f"server: request -> first speech frame due on the wire: median "
              f"{statistics.median(lat):.0f} ms (all sessions so far)")


def run_parallel(server: LiveServer, n: int, seconds: float) -> tuple[list[dict[str, Any]], float,
                                                                         float, float]:
    cpu0 = server.cpu_seconds()
    rss_samples: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(n + 1) as pool:
        futures = [pool.submit(server.probe, "--light", "--seconds", str(seconds), "--say", LONG,
                               "--say-at", "1.0", "--hold", "1.0") for _ in range(n)]
        time.sleep(seconds / 2 + 1)
        h = health(server)
        rss_samples.append(h["runtime"]["rss_mb"])
        sessions_mid = h["sessions"]
        time.sleep(seconds / 2 + 0.3)  # the probes' end, before they hang up
        states = server.get("/api/v1/sessions")[1]["sessions"]
        late = max((s["video_late_p99_ms"] for s in states), default=0.0)
        results = [f.result(timeout=120) for f in futures]
        for r in results:
            r["server_late_p99_ms"] = late
    cpu = server.cpu_seconds() - cpu0
    return results, cpu, rss_samples[0], sessions_mid


def capacity(server: LiveServer, counts: list[int], seconds: float, idle_rss: float) -> None:
    print("\n## concurrent speaking sessions (clients on the same 2 cores)")
    print(f"{'sessions':>8} {'min fps':>8} {'worst p99 gap':>14} {'server late p99':>16} "
          f"{'server CPU %':>13} {'CPU ms/frame':>13} {'RSS MB':>8} {'RSS/session':>12}")
    sustained = 0
    for n in counts:
        results, cpu, rss, live = run_parallel(server, n, seconds)
        frames = sum(r["video_frames"] for r in results)
        min_fps = min(r["fps"] for r in results)
        p99 = max(r["frame_gap_p99_ms"] for r in results)
        wall = seconds + 3.5
        per_session = (rss - idle_rss) / max(live, 1)
        late = results[0].get("server_late_p99_ms", 0.0)
        print(f"{n:>8} {min_fps:>8.2f} {p99:>12.1f}ms {late:>14.1f}ms {100 * cpu / wall:>12.0f}% "
              f"{1000 * cpu / max(frames, 1):>13.2f} {rss:>8.1f} {per_session:>11.1f}")
        if min_fps >= 24.0 and p99 <= 60.0 and not any(r["errors"] for r in results):
            sustained = n
        wait_idle(server)
    print(f"sessions sustained at 25 fps (min fps >= 24, p99 gap <= 60 ms): {sustained}")


def churn(server: LiveServer, idle: dict[str, Any], cycles: int) -> None:
    for _ in range(cycles):
        server.probe("--light", "--seconds", "2.5", "--say", "Hello, nice to meet you.",
                     "--say-at", "0.2")
    after = wait_idle(server)
    print(f"\n## {cycles} sessions opened, spoke a sentence, closed")
    print(f"RSS idle {idle['runtime']['rss_mb']:.1f} MB -> after {after['runtime']['rss_mb']:.1f} MB "
          f"(+{after['runtime']['rss_mb'] - idle['runtime']['rss_mb']:.1f}); tasks "
          f"{idle['runtime']['tasks']} -> {after['runtime']['tasks']}; threads "
          f"{idle['runtime']['threads']} -> {after['runtime']['threads']}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--sessions", default="1,2,4,6,8")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--churn", type=int, default=20)
    args = parser.parse_args()
    why = netns_available()
    if why:
        print(f"skipped: {why}")
        return 0
    # The phrase cache is off: every trial says the same sentence, and each must synthesize it.
    with tempfile.TemporaryDirectory() as tmp, live_server(
        Path(tmp), "--max-sessions", "32", "--tts-cache-mb", "0"
    ) as srv:
        srv.probe("--seconds", "2", "--say", "Warm up.", "--say-at", "0.3")
        idle = wait_idle(srv)
        print(f"idle server: RSS {idle['runtime']['rss_mb']} MB, {idle['runtime']['tasks']} tasks, "
              f"{idle['runtime']['threads']} threads")
        churn(srv, idle, args.churn)
        # A second round tells one-time growth (pools reaching their size) from a leak.
        churn(srv, idle, args.churn)
        latency(srv, args.trials)
        browser_latency(srv, args.trials)
        capacity(srv, [int(n) for n in args.sessions.split(",")], args.seconds,
                 idle["runtime"]["rss_mb"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
