"""Speech in: voice activity and turn taking on the microphone stream, then speech recognition.

A session feeds its microphone audio (16 kHz mono) to its own ``TurnDetector`` (which shares
one ``SileroVADModel`` with every session) and transcribes each turn with the shared
``ASREngine`` (``WhisperASR``) off the event loop: at ``SpeechPaused`` already, keeping the
result if ``EndOfTurn`` follows with no ``SpeechResumed`` in between. Nothing here knows about
WebRTC or sessions. faster-whisper is imported only when a whisper model loads.
"""

from livedh.asr.base import ASREngine, Segment, Transcript
from livedh.asr.turns import (
    EndOfTurn,
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEvent,
)
from livedh.asr.vad import SileroVAD, SileroVADModel, VADConfig

__all__ = [
    "ASREngine",
    "EndOfTurn",
    "Segment",
    "SileroVAD",
    "SileroVADModel",
    "SpeechConfirmed",
    "SpeechDiscarded",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "Transcript",
    "TurnConfig",
    "TurnDetector",
    "TurnEvent",
    "VADConfig",
]
