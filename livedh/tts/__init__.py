"""Text to speech. Every engine implements one async generator of PCM chunks."""

from livedh.tts.base import TTSEngine

__all__ = ["TTSEngine"]
