"""Chat through any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama, LM Studio...)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import urlsplit

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
#: what the page is told; the endpoint's address is never part of a message (strangers see them)
_WHO = "the LLM"

Phase = Literal["first token", "between tokens"]


class OpenAIChat(ChatLLM):
    """Streams a reply from ``POST {base_url}/chat/completions`` with ``stream=True``.

    One request per reply, bounded by ``config``'s deadlines: ``connect_timeout`` to connect,
    ``timeout`` from the request to the first streamed chunk (connecting included), then
    ``timeout`` between chunks. ``max_retries`` (default none) lets the SDK retry connection
    errors, 408/409/429 and 5xx within that same first-token deadline.

    Every failure is a ProviderError saying what went wrong (and whether retrying can help),
    never where the endpoint is: error messages reach the page.
    """

    def __init__(self, config: LLMConfig, *, max_retries: int = 0) -> None:
        if not config.configured:
            raise NotConfiguredError(NOT_CONFIGURED_MESSAGE)
        self._config = config
        # A local server needs no key, but the SDK refuses an empty one (and would otherwise
        # pick up OPENAI_API_KEY from the environment, which config has already read).
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "not-needed",
            # The deadlines in stream() govern; the SDK's own only tells a failed connect apart
            # (its default read timeout, per retry, is what made a frozen endpoint take twice
            # the configured time).
            timeout=openai.Timeout(None, connect=min(config.connect_timeout, config.timeout)),
            max_retries=max_retries,
        )
        self._addresses = _address_forms(str(self._client.base_url))

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield the reply's text deltas. Raises ProviderError (retryable for connection
        problems, timeouts, 5xx and an empty reply; not for other 4xx such as a bad key or an
        unknown model, nor for a reply that is not a chat-completions stream).

        Cancelling the consumer, or closing this generator, closes the HTTP response at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.timeout
        try:
            async with asyncio.timeout_at(deadline):
                chunks = await self._client.chat.completions.create(
                    model=self._config.model,
                    messages=cast("list[ChatCompletionMessageParam]", messages),
                    stream=True,
                )
        except TimeoutError as exc:
            raise self._timeout("first token") from exc
        except openai.OpenAIError as exc:
            raise self._provider_error(exc) from exc
        received = 0  # stream chunks
        said = False  # any text that is not blank
        try:
            while True:
                try:
                    # Never across a yield: the consumer's time is not the endpoint's.
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._timeout("between tokens" if received else "first token") from exc
                except openai.OpenAIError as exc:
                    raise self._provider_error(exc, mid_reply=True) from exc
                except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                    raise _not_a_stream(f"a line that is not chat-completions JSON ({exc})") from exc
                received += 1
                # Any chunk shows the endpoint is at work (reasoning models stream no content
                # for a while); the next one is due within the timeout.
                deadline = loop.time() + self._config.timeout
                content = _content(chunk)
                if content:
                    said = said or not content.isspace()
                    yield content
            if not said:
                raise self._empty_reply(chunks.response.headers.get("content-type"), received)
        finally:
            # Runs on completion, error, cancellation (barge-in) and aclose(): without it the
            # server keeps generating into a connection nobody reads.
            await chunks.close()

    async def aclose(self) -> None:
        await self._client.close()

    def _timeout(self, phase: Phase) -> ProviderError:
        seconds = self._config.timeout
        if phase == "first token":
            return ProviderError(f"{_WHO} sent no reply within {seconds:g} s (waiting for the "
                                 "first token)")
        return ProviderError(f"{_WHO} stopped sending for {seconds:g} s mid-reply (timeout "
                             "between tokens)")

    def _empty_reply(self, content_type: str | None, received: int) -> ProviderError:
        if received:
            return ProviderError(f"{_WHO} sent an empty reply (no text in {received} chunks)")
        if content_type is not None and "text/event-stream" not in content_type:
            # A JSON chat.completion (streaming off or unsupported), an HTML error page...
            kind = content_type.split(";")[0].strip()[:60]
            return _not_a_stream(f"{kind} instead of an event stream")
        return ProviderError(f"{_WHO} sent an empty reply (the stream had no chunks)")

    def _provider_error(self, exc: openai.OpenAIError, *, mid_reply: bool = False) -> ProviderError:
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._scrub(_error_detail(exc))
            if status in (401, 403):
                hint = " (check --llm-api-key / LIVEDH_LLM_API_KEY)"
            elif status == 404:
                hint = f" (is the model name {self._config.model!r} right?)"
            else:
                hint = ""
            return ProviderError(
                f"{_WHO} answered HTTP {status}: {detail}{hint}",
                retryable=status >= 500 or status in _RETRYABLE_STATUSES,
            )
        if isinstance(exc, openai.APITimeoutError):
            if type(exc.__cause__).__name__ == "ConnectTimeout":
                connect = min(self._config.connect_timeout, self._config.timeout)
                return ProviderError(f"cannot connect to {_WHO} within {connect:g} s (connect "
                                     "timeout)")
            return ProviderError(f"{_WHO} timed out")
        if isinstance(exc, openai.APIConnectionError):
            cause = self._scrub(str(exc.__cause__ or exc)) or type(exc.__cause__ or exc).__name__
            if mid_reply:
                return ProviderError(f"the connection to {_WHO} broke mid-reply: {cause}")
            return ProviderError(f"cannot reach {_WHO}: {cause}")
        if isinstance(exc, openai.APIResponseValidationError):
            return _not_a_stream("a reply that is not chat-completions JSON")
        # An error event inside the stream: the server failed mid-answer.
        return ProviderError(f"{_WHO} failed mid-reply: {self._scrub(str(exc))}")

    def _scrub(self, text: str) -> str:
        """``text`` without the endpoint's address (an SDK or server message may repeat it)."""
        for address in self._addresses:
            text = text.replace(address, "<llm>")
        return text[:300]


def _not_a_stream(what: str) -> ProviderError:
    # The endpoint is not an OpenAI-compatible streaming one: retrying will not help.
    return ProviderError(f"{_WHO} sent {what}; it must stream chat completions (stream=true, "
                         "server-sent events)", retryable=False)


def _content(chunk: object) -> str | None:
    """The text of a chunk's first choice; None for a role-only, final or odd chunk (the SDK
    does not validate what it parsed)."""
    for choice in getattr(chunk, "choices", None) or ():
        content = getattr(getattr(choice, "delta", None), "content", None)
        if isinstance(content, str):
            return content
    return None


def _address_forms(base_url: str) -> list[str]:
    """The ways a message could spell the endpoint, longest first."""
    parts = urlsplit(base_url)
    forms = {base_url, base_url.rstrip("/"), parts.netloc, parts.hostname or ""}
    return sorted((form for form in forms if form), key=len, reverse=True)


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, str) and body.lstrip().startswith("<"):
        return "an HTML page"
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        return json.dumps(error)[:200]
    return exc.message
