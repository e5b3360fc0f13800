"""Chat through any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama, LM Studio...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, cast

import openai

from livedh.config import LLMConfig
from livedh.errors import NotConfiguredError, ProviderError
from livedh.llm.base import ChatLLM, ChatMessage

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

NOT_CONFIGURED_MESSAGE = (
    "chat mode needs an LLM endpoint: set --llm-base-url / LIVEDH_LLM_BASE_URL "
    "(and --llm-api-key / LIVEDH_LLM_API_KEY if it needs one), or use echo mode"
)
# Statuses worth retrying later: timeouts, lock conflicts, rate limits (as the openai SDK does).
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


class OpenAIChat(ChatLLM):
    """Streams a reply from ``POST {base_url}/chat/completions`` with ``stream=True``.

    ``config.timeout`` bounds both the wait for the response and each gap between streamed
    chunks. ``max_retries`` retries the request (not a reply already streaming) on connection
    errors, 408/409/429 and 5xx.
    """

    def __init__(self, config: LLMConfig, *, max_retries: int = 1) -> None:
        if not config.configured:
            raise NotConfiguredError(NOT_CONFIGURED_MESSAGE)
        self._config = config
        # A local server needs no key, but the SDK refuses an empty one (and would otherwise
        # pick up OPENAI_API_KEY from the environment, which config has already read).
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "not-needed",
            timeout=config.timeout,
            max_retries=max_retries,
        )
        self._endpoint = str(self._client.base_url).rstrip("/")

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield the reply's text deltas. Raises ProviderError (retryable for connection
        problems, timeouts and 5xx; not for other 4xx such as a bad key or an unknown model).

        Cancelling the consumer, or closing this generator, closes the HTTP response at once.
        """
        try:
            chunks = await self._client.chat.completions.create(
                model=self._config.model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                stream=True,
            )
        except openai.OpenAIError as exc:
            raise self._provider_error(exc) from exc
        try:
            while True:
                try:
                    # Per-chunk, not per-request: a long answer may stream for longer than the
                    # timeout, but a stall (or keep-alive comments only) must not hang the turn.
                    async with asyncio.timeout(self._config.timeout):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise ProviderError(
                        f"the LLM at {self._endpoint} sent nothing for {self._config.timeout:g} s"
                    ) from exc
                except openai.OpenAIError as exc:
                    raise self._provider_error(exc) from exc
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
        finally:
            # Runs on completion, error, cancellation (barge-in) and aclose(): without it the
            # server keeps generating into a connection nobody reads.
            await chunks.close()

    async def aclose(self) -> None:
        await self._client.close()

    def _provider_error(self, exc: openai.OpenAIError) -> ProviderError:
        where = f"the LLM at {self._endpoint}"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _error_detail(exc)
            if status in (401, 403):
                hint = " (check --llm-api-key / LIVEDH_LLM_API_KEY)"
            elif status == 404:
                hint = f" (is the model name {self._config.model!r} right?)"
            else:
                hint = ""
            return ProviderError(
                f"{where} answered HTTP {status}: {detail}{hint}",
                retryable=status >= 500 or status in _RETRYABLE_STATUSES,
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(f"{where} timed out after {self._config.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return ProviderError(f"cannot reach {where}: {cause}")
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderError(f"{where} sent a reply that is not chat-completions JSON")
        # An error event inside the stream: the server failed mid-answer.
        return ProviderError(f"{where} failed: {exc}")


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return exc.message
