"""What a session needs to hear the person: shared models (VAD, ASR) and the turn settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from livedh.asr.base import ASREngine
from livedh.asr.turns import TurnConfig
from livedh.asr.vad import SileroVADModel


@dataclass
class HearingConfig:
    #: whisper language: "auto", "en", "zh" ...
    language: str = "auto"
    turn: TurnConfig = field(default_factory=TurnConfig)
    #: seconds between partial transcripts while the person speaks (0: none)
    partial_interval: float = 0.8
    #: the person's voice interrupts the avatar
    barge_in: bool = True


@dataclass
class Hearing:
    """Shared by every session: one VAD model and one ASR engine per server."""

    vad: SileroVADModel
    asr: ASREngine
    config: HearingConfig
