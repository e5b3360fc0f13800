"""Chat models: streamed text deltas from a conversation."""

from livedh.llm.base import ChatLLM, ChatMessage

__all__ = ["ChatLLM", "ChatMessage"]
