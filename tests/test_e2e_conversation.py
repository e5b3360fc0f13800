"""The whole voice loop over WebRTC: the client's microphone speaks, the server hears it
(VAD + whisper), answers from a knowledge base, and stops when the person talks over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedh.media.pcm import write_wav
from livedh.testing.live import live_server
from livedh.testing.netns import netns_available
from livedh.testing.speech import synthesize

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]

KB = Path(__file__).parent / "data" / "kb"


def test_voice_question_is_answered_from_the_knowledge_base_and_talk_over_stops_it(tmp_path):
    question = tmp_path / "question.wav"
    talk_over = tmp_path / "talk_over.wav"
    spoken = synthesize(["When are you open on Sunday?",
                         "Wait, wait. I have another question about parking."])
    write_wav(question, spoken[0])
    write_wav(talk_over, spoken[1])
    with live_server(tmp_path, "--kb", str(KB)) as server:
        # Warm-up: the first whisper call and the first synthesis are slower.
        server.probe("--seconds", "1.5", "--say", "Ready.", "--say-at", "0.2")
        first = server.probe("--seconds", "20", "--mic", "1.0", str(question))
        transcripts = [e for _, e in first["events"] if e["type"] == "transcript" and e["final"]]
        assert transcripts, first["events"]
        heard = transcripts[0]["text"].lower()
        assert "sunday" in heard and "open" in heard, heard
        subtitles = " ".join(e["text"] for _, e in first["events"] if e["type"] == "subtitle")
        assert "10 am" in subtitles and "5 pm" in subtitles, subtitles
        states = [e["state"] for _, e in first["events"] if e["type"] == "state"]
        assert "thinking" in states and "speaking" in states, states
        assert first["answer_after_speech_end_ms"] is not None, first
        assert first["speech_seconds"] > 2.0, first

        # Now talk over the answer while the avatar speaks.
        second = server.probe("--seconds", "20", "--mic", "1.0", str(question),
                              "--talk-over", "1.5", str(talk_over))
        assert len(second["mic_segments"]) == 2, second
        assert second["silence_after_talk_over_ms"] is not None, second
        log = server.log()
        # The knowledge base's replies were synthesized ahead, so answers start from memory.
        prefill = [line for line in log.splitlines() if "event=tts_prefill " in line]
        assert prefill and "texts=0 " not in prefill[0], prefill
        sid = second["sessionid"]
        assert f"event=barge_in session={sid}" in log
        assert f"event=interrupt session={sid}" in log
