"""Streaming sentence segmentation of an LLM reply, so TTS can start on the first sentence while
the rest is still streaming.

Cuts after . ! ? ; (when followed by a space), after the CJK marks 。！？；… and at newlines; at
commas only once the pending text is long, to bound the wait for the first audio. Never cuts
inside numbers (3.14, 1,000), common abbreviations (Mr., e.g.), initials or URLs. Fragments
shorter than ``min_chars`` are merged into the next sentence, none is longer than ``max_chars``
(a run with nowhere to cut is cut hard), and markdown that should not be
spoken (emphasis stars, headings, backticks, list bullets, link targets) is stripped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator

DEFAULT_MIN_CHARS = 6
DEFAULT_LONG_CHARS = 60
#: No sentence is longer: a run without a place to cut (a very long word, CJK text without
#: punctuation) is cut hard, so that one TTS job (and what a barge-in waits for) stays small.
DEFAULT_MAX_CHARS = 120

_ASCII_ENDS = ".!?;"
_CJK_ENDS = "。！？；…"
_ENDS = _ASCII_ENDS + _CJK_ENDS
# Closing quotes, brackets and emphasis marks belong to the sentence they close.
_CLOSERS = "\"')]}”’」』）】》〉*_`"
_ASCII_COMMAS = ",:"
_CJK_COMMAS = "，、：—"
# Lower-cased words that end with a period without ending the sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "approx", "dept",
        "fig", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "vol",
    }
)
_OPENERS = "\"'([{“‘「『（【《〈*_`"

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_LINE_MARKUP_RE = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+)+")
_IMAGE_OR_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_INLINE_NOISE_RE = re.compile(r"[*`]+|~~|(?<!\w)__|__(?!\w)")


def _is_cjk(ch: str) -> bool:
    # CJK ideographs, kana, hangul and full-width forms: scripts written without spaces.
    return "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uff00" <= ch <= "\uffef"


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _join(left: str, right: str) -> str:
    if _is_cjk(left[-1]) or _is_cjk(right[0]):
        return left + right
    return f"{left} {right}"


def clean_markdown(text: str, *, line_start: bool = True) -> str:
    """Strip markdown that should not be spoken and collapse whitespace.

    Line markers (headings, bullets, quotes) are only recognised when ``text`` starts a line.
    """
    if line_start:
        text = _LINE_MARKUP_RE.sub("", text)
    text = _IMAGE_OR_LINK_RE.sub(r"\1", text)
    text = _INLINE_NOISE_RE.sub("", text)
    return " ".join(text.split())


class _Segmenter:
    """Incremental splitter: ``feed`` text as it arrives, ``finish`` at the end."""

    def __init__(self, min_chars: int, long_chars: int, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._max = max(1, max_chars)
        self._long = min(max(1, long_chars), self._max)
        self._min = min(max(0, min_chars), self._long - 1)
        # With no comma to cut at, a run-on text is still cut at a space past this length, or
        # anywhere at it when it has no space either.
        self._hard = min(3 * self._long, self._max)
        self._buf = ""
        self._line_start = True
        self._held = ""
        self._in_code = False

    def feed(self, text: str) -> list[str]:
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> list[str]:
        out = self._drain(final=True)
        if self._buf:
            out.extend(self._emit(len(self._buf)))
        if self._held:
            out.append(self._held)
            self._held = ""
        return out

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while self._buf:
            cut = self._find_cut(final=final)
            if cut is None or cut > self._long:
                # A long sentence is cut early, at a comma, so the first audio is not late.
                soft = self._find_soft_cut(len(self._buf) if cut is None else cut)
                cut = soft if soft is not None else cut
            if cut is None:
                break
            out.extend(self._emit(cut))
        return out

    def _emit(self, cut: int) -> list[str]:
        raw, self._buf = self._buf[:cut], self._buf[cut:]
        line_start, self._line_start = self._line_start, raw.endswith("\n")
        if line_start and _FENCE_RE.match(raw):
            self._in_code = not self._in_code
            return []
        if self._in_code:
            return []  # code is not for reading aloud
        piece = clean_markdown(raw, line_start=line_start)
        if not _speakable(piece):
            return []
        out: list[str] = []
        if self._held:
            joined = _join(self._held, piece)
            if len(joined) <= self._max:
                piece = joined
            else:
                out.append(self._held)  # merging would make the piece too long
            self._held = ""
        if len(piece) < self._min:
            self._held = piece  # too short to be worth a TTS request of its own
            return out
        return [*out, piece]

    def _find_cut(self, *, final: bool) -> int | None:
        """End index of the first sentence in the buffer, or None if there is none yet (or it
        cannot be told until more text arrives)."""
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n":
                return i + 1
            if ch not in _ENDS:
                i += 1
                continue
            j = i + 1
            while j < n and buf[j] in _ENDS:
                j += 1
            while j < n and buf[j] in _CLOSERS:
                j += 1
            if j == n:
                # Whether "3." becomes "3.14", or "。" is followed by a closing quote, is only
                # known from the next delta.
                return n if final else None
            if any(c in _CJK_ENDS for c in buf[i:j]):
                return j
            nxt = buf[j]
            if (nxt.isspace() or _is_cjk(nxt)) and not self._is_abbreviation(i):
                return j
            i = j
        return None

    def _is_abbreviation(self, dot: int) -> bool:
        """Whether the period at ``dot`` belongs to a word rather than ending a sentence."""
        buf = self._buf
        if buf[dot] != ".":
            return False
        start = dot
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:dot].lstrip(_OPENERS)
        if not word:
            return False
        if word.lower() in _ABBREVIATIONS:
            return True
        if len(word) == 1 and word.isupper():
            return True  # an initial: "J. R. R. Tolkien"
        # "1." opening a line is a list number, not the end of a sentence.
        return self._line_start and start == len(buf) - len(buf.lstrip()) and word.isdigit()

    def _find_soft_cut(self, limit: int) -> int | None:
        """A cut at a comma within the first ``limit`` characters once they are long, else at a
        space once they are very long: the price of a late first sentence is silence."""
        buf = self._buf
        n = len(buf)
        if limit <= self._long:
            return None
        # The last comma that keeps the piece within the long length, else the first past it.
        best: int | None = None
        for i in range(self._min, min(limit, self._hard)):
            ch = buf[i]
            if ch in _CJK_COMMAS or (ch in _ASCII_COMMAS and i + 1 < n and buf[i + 1].isspace()):
                if best is not None and i >= self._long:
                    break
                best = i
                if i >= self._long:
                    break
        if best is not None:
            j = best + 1
            while j < n and buf[j] in _CLOSERS:
                j += 1
            return j
        if limit <= self._hard:
            return None
        space = buf.rfind(" ", self._min, self._hard)
        return space + 1 if space > 0 else self._hard


async def split_sentences(
    deltas: AsyncIterator[str],
    min_chars: int = DEFAULT_MIN_CHARS,
    long_chars: int = DEFAULT_LONG_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> AsyncGenerator[str, None]:
    """Yield speakable sentences from a stream of text deltas as soon as each is complete.

    Closing this generator closes ``deltas`` too, so a barge-in stops the LLM request at once.
    """
    segmenter = _Segmenter(min_chars, long_chars, max_chars)
    try:
        async for delta in deltas:
            for sentence in segmenter.feed(delta):
                yield sentence
        for sentence in segmenter.finish():
            yield sentence
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


def split_text(
    text: str,
    min_chars: int = DEFAULT_MIN_CHARS,
    long_chars: int = DEFAULT_LONG_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> list[str]:
    """``split_sentences`` for a whole text at once (echo mode)."""
    segmenter = _Segmenter(min_chars, long_chars, max_chars)
    return segmenter.feed(text) + segmenter.finish()
