"""Voice conversation figures over real WebRTC: end of the person's speech -> first avatar
audio at the client (knowledge base, no LLM), and talking over the avatar -> silence."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from livedh.media.pcm import write_wav
from livedh.testing.live import live_server
from livedh.testing.netns import netns_available
from livedh.testing.speech import synthesize

KB = Path(__file__).resolve().parent.parent / "tests" / "data" / "kb"
QUESTIONS = ["When are you open on Sunday?", "Where can I park my car?",
             "How do I connect to the Wi-Fi?"]
MIN_SPEECH_S = 0.25  # the server's default voice duration before barge-in
TALK = "Our opening hours are nine to eight on weekdays, and ten to five on Sundays, all year."


def _field(line: str, name: str) -> int:
    return int(line.split(f"{name}=")[1].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end-silence", type=float, default=0.5,
                        help="the server's turn-end silence (its default is 0.5 s)")
    args = parser.parse_args()
    why = netns_available()
    if why:
        print(f"skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        *questions, talk_over = synthesize([*QUESTIONS, "Sorry, stop for a moment please."])
        clips = []
        for i, samples in enumerate(questions):
            clips.append(tmp / f"q{i}.wav")
            write_wav(clips[-1], samples)
        over = tmp / "over.wav"
        write_wav(over, talk_over)
        with live_server(tmp, "--kb", str(KB), "--end-silence", str(args.end_silence)) as server:
            server.probe("--seconds", "1.5", "--say", "Ready.", "--say-at", "0.2")
            answers, silences, after_vad, asr = [], [], [], []
            for clip in clips * 2:
                r = server.probe("--seconds", "14", "--mic", "1.0", str(clip),
                                 "--talk-over", "1.5", str(over))
                if r["answer_after_speech_end_ms"] is not None:
                    answers.append(r["answer_after_speech_end_ms"])
                if r["silence_after_talk_over_ms"] is not None:
                    silences.append(r["silence_after_talk_over_ms"])
                if r["silence_after_barge_in_ms"] is not None:
                    after_vad.append(r["silence_after_barge_in_ms"])
            # The same client decoding each packet as it arrives: what the server delivers.
            unbuffered = []
            for clip in clips:
                r = server.probe("--seconds", "8", "--mic", "1.0", str(clip), "--packet-buffer")
                if r["answer_after_speech_end_ms"] is not None:
                    unbuffered.append(r["answer_after_speech_end_ms"])
            in_browser = []
            if shutil.which("chromium"):
                for i, samples in enumerate(questions):
                    # The page connects during the lead silence; its fake microphone plays once.
                    lead = tmp / f"browser{i}.wav"
                    write_wav(lead, np.concatenate([np.zeros(4 * 16000, np.int16), samples,
                                                    np.zeros(10 * 16000, np.int16)]))
                    done = server.run_python(
                        ["-m", "livedh.testing.browser_conversation", server.url, str(lead)],
                        timeout=120)
                    value = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout else None
                    if value is not None:
                        in_browser.append(value)
            stops = []
            for _ in range(3):
                r = server.probe("--seconds", "5", "--say", TALK, "--say-at", "0.5",
                                 "--interrupt-at", "2.0")
                if r["silence_after_interrupt_ms"] is not None:
                    stops.append(r["silence_after_interrupt_ms"])
            log = server.log().splitlines()
    asr = [_field(line, "asr_ms") for line in log if "event=transcript" in line]
    released = [line for line in log if "event=turn_released" in line]
    ready = [_field(line, "ready_ms") for line in released]
    on_time = sum("scheduled=True" in line for line in released)
    dropped = sum("event=turn_dropped" in line for line in log)
    print("## voice conversation (piper-spoken questions as the client's microphone, KB, no LLM)")
    if answers:
        print(f"end of the voice -> first avatar audio at the aiortc client: median "
              f"{statistics.median(answers):.0f} ms (min {min(answers):.0f}, max {max(answers):.0f},"
              f" n={len(answers)}); the turn ends after {args.end_silence * 1000:.0f} ms of silence")
    if unbuffered:
        print(f"  the same client decoding each packet as it arrives (no aiortc 80 ms buffer): "
              f"median {statistics.median(unbuffered):.0f} ms (min {min(unbuffered):.0f}, "
              f"max {max(unbuffered):.0f}, n={len(unbuffered)})")
    if in_browser:
        print(f"  in Chromium (the page times its own microphone track and received audio): "
              f"median {statistics.median(in_browser):.0f} ms (min {min(in_browser):.0f}, "
              f"max {max(in_browser):.0f}, n={len(in_browser)})")
    if asr:
        print(f"  whisper per transcription (server): median {statistics.median(asr):.0f} ms, "
              f"n={len(asr)}")
    if ready:
        print(f"  answers made during the pause: {len(ready)} played, {dropped} dropped; audio "
              f"ready when the turn ended: median {statistics.median(ready):.0f} ms; "
              f"{on_time} of {len(ready)} put in the stream ahead, timed to the turn's end")
    if silences:
        med = statistics.median(silences)
        print(f"talk-over start -> avatar silent at client: median {med:.0f} ms "
              f"(includes the {MIN_SPEECH_S * 1000:.0f} ms of voice that confirm it), "
              f"n={len(silences)}")
    if stops:
        print(f"/interrupt_talk -> avatar silent at client: median {statistics.median(stops):.0f} ms "
              f"(max {max(stops):.0f}), n={len(stops)}")
    if after_vad:
        print(f"server's barge-in event at client -> avatar silent at client: median "
              f"{statistics.median(after_vad):.0f} ms (max {max(after_vad):.0f}), n={len(after_vad)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
