"""A session's conversation: the system prompt plus a bounded window of recent exchanges."""

from __future__ import annotations

from livedh.errors import InvalidInputError
from livedh.llm.base import ChatMessage

#: appended to a reply cut short by barge-in, so the model knows it was interrupted
INTERRUPTED_MARK = "…"


class ChatHistory:
    """Per-session chat history. The system prompt always comes first; when more than
    ``max_messages`` user/assistant messages are kept, the oldest exchanges go first."""

    def __init__(self, system_prompt: str, max_messages: int = 20) -> None:
        if max_messages < 0:
            raise InvalidInputError("max_messages must be 0 or more")
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self._turns: list[ChatMessage] = []

    @property
    def messages(self) -> list[ChatMessage]:
        """The conversation so far, system prompt first (a copy)."""
        return self._with_system(self._turns)

    def messages_for(self, user_text: str) -> list[ChatMessage]:
        """What to send the model to answer ``user_text``. Records nothing: the exchange is
        added once the answer is known (``add_exchange`` or ``add_partial``)."""
        return self._with_system([*self._turns, {"role": "user", "content": user_text}])

    def add_exchange(self, user: str, assistant: str) -> None:
        """Record a completed exchange. One with no answer (the LLM failed before saying
        anything) is not recorded: some servers reject empty assistant messages."""
        if not assistant.strip():
            return
        self._append(user, assistant.strip())

    def add_partial(self, user: str, spoken: str) -> None:
        """Record an answer interrupted by barge-in as the part that was actually spoken, marked
        as cut off, so the model neither believes it said the rest nor repeats it."""
        spoken = spoken.strip()
        self._append(user, f"{spoken} {INTERRUPTED_MARK}" if spoken else INTERRUPTED_MARK)

    def clear(self) -> None:
        self._turns.clear()

    def __len__(self) -> int:
        """User and assistant messages kept (the system prompt is not counted)."""
        return len(self._turns)

    def _append(self, user: str, assistant: str) -> None:
        self._turns.append({"role": "user", "content": user})
        self._turns.append({"role": "assistant", "content": assistant})
        # Whole exchanges are dropped so the history never starts with an orphan reply.
        while len(self._turns) > self.max_messages:
            del self._turns[:2]

    def _with_system(self, turns: list[ChatMessage]) -> list[ChatMessage]:
        system: list[ChatMessage] = (
            [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        )
        return [*system, *(turn.copy() for turn in turns)]
