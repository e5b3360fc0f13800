"""Actions named in text and in LiveTalking's ``audiotype``: which of an avatar's action clips
a request means.

An answer (typed, from the LLM or the knowledge base) can carry tags such as ``[wave]``: they are
taken out of what is spoken and shown, and the avatar plays the action when the sentence starts
playing. Only ``[`` + a name that starts with a letter + ``]`` is a tag, so ``[1]`` (a citation)
or ``[see above]`` are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from livedh.errors import InvalidInputError

#: longest action name a request may carry (names are short words: "wave", "bye")
MAX_ACTION_CHARS = 64
#: an action tag: ``[name]`` with a name of letters, digits, ``_`` and ``-`` (up to 40)
_TAG_RE = re.compile(r"\[([A-Za-z][A-Za-z0-9_-]{0,39})\]")


def split_action_tags(text: str) -> tuple[str, list[str]]:
    """``"[wave] Hello there"`` -> ``("Hello there", ["wave"])``: the text without its tags
    (whitespace collapsed where a tag was) and the tag names in order."""
    names = [m.group(1) for m in _TAG_RE.finditer(text)]
    if not names:
        return text, []
    return " ".join(_TAG_RE.sub(" ", text).split()), names


def match_actions(names: Sequence[str], actions: Sequence[str]) -> tuple[list[str], list[str]]:
    """Tag names -> (the avatar's actions they name, the names that are none). A name matches
    exactly, else ignoring case (an LLM writes ``[Wave]`` as readily as ``[wave]``)."""
    folded = {a.casefold(): a for a in reversed(actions)}
    known, unknown = [], []
    for name in names:
        action = name if name in actions else folded.get(name.casefold())
        if action is None:
            unknown.append(name)
        else:
            known.append(action)
    return known, unknown


def audiotype_action(audiotype: int, actions: Sequence[str]) -> str | None:
    """LiveTalking's ``audiotype`` -> the action it means: 0 and 1 are its normal states (None:
    back to the plain motion), 2, 3, ... number the avatar's actions in manifest order."""
    if audiotype < 0:
        raise InvalidInputError("'audiotype' must be 0 or more")
    if audiotype < 2:
        return None
    if not actions:
        raise InvalidInputError("this avatar has no actions")
    if audiotype - 2 >= len(actions):
        listing = ", ".join(f"{k + 2}={name}" for k, name in enumerate(actions))
        raise InvalidInputError(f"no action has audiotype {audiotype}; this avatar's: {listing}")
    return actions[audiotype - 2]
