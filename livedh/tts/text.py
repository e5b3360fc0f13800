"""Text helpers shared by the TTS engines: sentence splitting and voice-name validation."""

from __future__ import annotations

import re

from livedh.errors import InvalidInputError

MAX_VOICE_CHARS = 64
#: The longest piece of text handed to an engine at once. It bounds one synthesis job: what a
#: barge-in waits for, what another session waits behind, and the size of piper's onnx input
#: (a 4,000-character word in one piece took seconds and gigabytes).
MAX_PIECE_CHARS = 120
# Covers espeak ("en-us", "en+f3", "cmn"), edge ("zh-CN-XiaoxiaoNeural") and piper speaker
# names. No leading "-" (it would read as an option on the espeak command line), no "/" or ".".
_VOICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")

# A sentence ends at . ! ? ; … followed by whitespace, or right after the CJK full-width marks
# (CJK text has no spaces). Newlines end a sentence too.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?;…])\s+|(?<=[。！？；])|\n+")
_CLAUSE_END_RE = re.compile(r"(?<=[,:，、：—])")


def validate_voice(voice: str | None) -> str | None:
    """Return ``voice`` stripped, or None for "use the engine's default" (None or blank)."""
    if voice is None:
        return None
    if not isinstance(voice, str):
        raise InvalidInputError("the voice must be a string")
    voice = voice.strip()
    if not voice:
        return None
    if len(voice) > MAX_VOICE_CHARS:
        raise InvalidInputError(f"the voice name is longer than {MAX_VOICE_CHARS} characters")
    if not _VOICE_RE.fullmatch(voice):
        raise InvalidInputError(
            f"invalid voice name {voice!r}: use letters, digits, '-', '_' or '+' "
            "(e.g. en-us, zh-CN-XiaoxiaoNeural)"
        )
    return voice


def split_sentences(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Split ``text`` into sentences of at most ``max_chars`` characters.

    Synthesizing piece by piece lets the first audio out after the first piece instead of after
    the whole text; long sentences are cut at clause marks, then at spaces, for the same reason,
    and a run with neither (a very long word, CJK text without punctuation) is cut hard.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    pieces: list[str] = []
    for sentence in _SENTENCE_END_RE.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _pack(_CLAUSE_END_RE.split(sentence), max_chars, ""):
            if len(clause) <= max_chars:
                pieces.append(clause)
            else:
                for part in _pack(clause.split(" "), max_chars, " "):
                    pieces.extend(hard_wrap(part, max_chars))
    return pieces


def hard_wrap(text: str, max_chars: int) -> list[str]:
    """``text`` cut into consecutive slices of at most ``max_chars`` characters (it has no
    better place to be cut)."""
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def _pack(parts: list[str], max_chars: int, sep: str) -> list[str]:
    """Join consecutive ``parts`` greedily into strings of at most ``max_chars`` (a single part
    longer than that stays whole)."""
    out: list[str] = []
    current = ""
    for part in parts:
        if not part.strip():
            continue
        candidate = f"{current}{sep}{part}" if current else part.strip()
        if current and len(candidate) > max_chars:
            out.append(current)
            current = part.strip()
        else:
            current = candidate
    if current:
        out.append(current)
    return out
