"""The LLM role: one hook, ``stream``, an async generator of text deltas."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Literal, TypedDict


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatLLM(ABC):
    """A streaming chat model. Shared by sessions: it keeps no conversation state itself
    (the session owns its history)."""

    #: answers on this machine at no cost per request, so a session may ask it before it is
    #: sure the person has finished (and drop the reply); a remote LLM is asked only then
    local: bool = False

    @abstractmethod
    def stream(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        """Yield text deltas of the assistant's reply as they arrive."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""
