"""The LLM role against a local fake of the OpenAI chat-completions streaming API, the sentence
splitter and the chat history."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from aiohttp import web

from livedh.config import LLMConfig
from livedh.errors import InvalidInputError, NotConfiguredError, ProviderError
from livedh.llm.history import INTERRUPTED_MARK, ChatHistory
from livedh.llm.openai_chat import OpenAIChat
from livedh.llm.sentences import clean_markdown, split_sentences, split_text

# Generous hang guard for "the server notices"; never a speed requirement.
GUARD_S = 10

REPLY = ["Hel", "lo", " there", ".", " How", " can I", " help?"]


def _chunk(content: str | None, *, role: str | None = None, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    payload = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


class FakeOpenAI:
    """Speaks just enough of ``POST /v1/chat/completions`` (stream=True). The requested model
    name picks the behaviour: ``stall`` sends the first delta then only keep-alive comments until
    the client goes away; ``bad-key`` answers 401; ``broken`` answers 500; the faults of
    ``FAULTS`` and ``frozen`` (accepts the request, never answers) break the protocol."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.disconnected = asyncio.Event()
        self.reply = list(REPLY)
        #: set at teardown: what a frozen request waits for
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        model = body.get("model")
        if model == "bad-key":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error",
                     "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        if model == "broken":
            error = {"message": "The server had an error", "type": "server_error"}
            return web.json_response({"error": error}, status=500)
        if model in _FAULTS:
            return await _FAULTS[model](self, request)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk("", role="assistant"))
        if model == "stall":
            await response.write(_chunk(self.reply[0]))
            await self._keep_alive_until_disconnect(response)
            return response
        for piece in self.reply:
            await response.write(_chunk(piece))
        await response.write(_chunk(None, finish="stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _keep_alive_until_disconnect(self, response: web.StreamResponse) -> None:
        # SSE comments keep the socket busy (so only the per-chunk idle timeout can fire) and
        # fail to write once the client has closed the connection.
        try:
            while True:
                await asyncio.sleep(0.02)
                await response.write(b": keep-alive\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise


async def _frozen(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    await asyncio.wait_for(fake.release.wait(), GUARD_S)
    return web.Response(status=204)


async def _sse(request: web.Request, *lines: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for line in lines:
        await response.write(line)
    return response


async def _empty(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    response = await _sse(request, _chunk("", role="assistant"), _chunk(None, finish="stop"),
                          b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _blank(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    response = await _sse(request, _chunk(" \n "), b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _no_chunks(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    response = await _sse(request, b": nothing to say\n\n")
    await response.write_eof()
    return response


async def _json(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    # What a server that ignores stream=true sends: one chat.completion object.
    message = {"role": "assistant", "content": "Hello there."}
    return web.json_response({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000,
        "model": "fake", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    })


async def _html(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html><body>Welcome to nginx!</body></html>",
                        content_type="text/html")


async def _garbage(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    response = await _sse(request, _chunk("Hel"), b"data: {this is not json\n\n")
    await response.write_eof()
    return response


async def _cut(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    # The server dies mid-reply: the chunked body ends without its terminating chunk.
    response = await _sse(request, _chunk("Hel"), _chunk("lo"))
    assert request.transport is not None
    request.transport.abort()
    return response


async def _error_event(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    error = {"message": f"model overloaded at http://{request.host}/v1", "type": "server_error"}
    response = await _sse(request, _chunk("Hel"),
                          f"data: {json.dumps({'error': error})}\n\n".encode())
    await response.write_eof()
    return response


async def _leaky(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    error = {"message": f"upstream {request.url} is down", "type": "server_error"}
    return web.json_response({"error": error}, status=503)


_FAULTS = {
    "frozen": _frozen, "empty": _empty, "blank": _blank, "no-chunks": _no_chunks, "json": _json,
    "html": _html, "garbage": _garbage, "cut": _cut, "error-event": _error_event,
    "leaky": _leaky,
}


@pytest.fixture
async def fake_openai() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield fake, f"http://{host}:{port}/v1"
    finally:
        fake.release.set()
        await runner.cleanup()


def _llm(base_url: str, model: str = "fake", timeout: float = 10.0, **kw: Any) -> OpenAIChat:
    config = LLMConfig(base_url=base_url, model=model, timeout=timeout, **kw)
    return OpenAIChat(config, max_retries=0)


async def _collect(llm: OpenAIChat, messages: Any) -> list[str]:
    async with aclosing(llm.stream(messages)) as deltas:
        return [delta async for delta in deltas]


# --- OpenAIChat --------------------------------------------------------------------------------


async def test_streams_deltas_in_order_and_sends_history(fake_openai: tuple[FakeOpenAI, str]):
    fake, url = fake_openai
    history = ChatHistory("Be brief.", max_messages=10)
    history.add_exchange("Hi", "Hello!")
    llm = _llm(url, model="fake-model")
    try:
        messages = history.messages_for("What is up?")
        assert await _collect(llm, messages) == REPLY
    finally:
        await llm.aclose()

    (request,) = fake.requests
    assert request["model"] == "fake-model"
    assert request["stream"] is True
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is up?"},
    ]
    # No key configured: a placeholder, never one picked up from the environment.
    assert fake.auth == ["Bearer not-needed"]


async def test_api_key_is_sent(fake_openai: tuple[FakeOpenAI, str]):
    fake, url = fake_openai
    llm = _llm(url, api_key="sk-test")
    try:
        await _collect(llm, [{"role": "user", "content": "x"}])
    finally:
        await llm.aclose()
    assert fake.auth == ["Bearer sk-test"]


async def test_stream_feeds_sentence_splitter(fake_openai: tuple[FakeOpenAI, str]):
    _, url = fake_openai
    llm = _llm(url)
    try:
        deltas = llm.stream([{"role": "user", "content": "x"}])
        sentences = [s async for s in split_sentences(deltas)]
    finally:
        await llm.aclose()
    assert sentences == ["Hello there.", "How can I help?"]


async def _until_error(llm: OpenAIChat) -> tuple[list[str], ProviderError]:
    """The deltas streamed before the ProviderError that must end the reply, and that error."""
    received: list[str] = []
    try:
        with pytest.raises(ProviderError) as info:
            async with aclosing(llm.stream([{"role": "user", "content": "x"}])) as deltas:
                async for delta in deltas:
                    received.append(delta)
    finally:
        await llm.aclose()
    return received, info.value


async def test_idle_timeout_is_retryable(fake_openai: tuple[FakeOpenAI, str]):
    fake, url = fake_openai
    llm = _llm(url, model="stall", timeout=0.3)
    received, error = await _until_error(llm)
    assert received == [REPLY[0]]
    assert error.retryable
    assert "0.3 s" in error.message and "between tokens" in error.message
    # The stalled response was closed, not left open.
    await asyncio.wait_for(fake.disconnected.wait(), GUARD_S)


async def test_unauthorized_is_not_retryable(fake_openai: tuple[FakeOpenAI, str]):
    _, url = fake_openai
    llm = _llm(url, model="bad-key")
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(llm, [{"role": "user", "content": "x"}])
    finally:
        await llm.aclose()
    assert not info.value.retryable
    assert "401" in info.value.message
    assert "Incorrect API key provided" in info.value.message


async def test_server_error_is_retryable(fake_openai: tuple[FakeOpenAI, str]):
    _, url = fake_openai
    llm = _llm(url, model="broken")
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(llm, [{"role": "user", "content": "x"}])
    finally:
        await llm.aclose()
    assert info.value.retryable
    assert "500" in info.value.message


async def test_connection_refused_is_retryable():
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = _llm(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(llm, [{"role": "user", "content": "x"}])
    finally:
        await llm.aclose()
    assert info.value.retryable
    assert "cannot reach" in info.value.message
    assert str(port) not in info.value.message  # messages never name the endpoint


async def test_cancelling_consumer_closes_connection(fake_openai: tuple[FakeOpenAI, str]):
    fake, url = fake_openai
    llm = _llm(url, model="stall", timeout=60)
    first = asyncio.Event()

    async def consume() -> None:
        async for _delta in llm.stream([{"role": "user", "content": "x"}]):
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), GUARD_S)
        assert not fake.disconnected.is_set()
        task.cancel()  # what barge-in does
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.disconnected.wait(), GUARD_S)
    finally:
        task.cancel()
        await llm.aclose()


async def test_closing_sentence_stream_closes_connection(fake_openai: tuple[FakeOpenAI, str]):
    fake, url = fake_openai
    fake.reply = ["First sentence here. ", "Second"]
    llm = _llm(url, model="stall", timeout=60)
    try:
        sentences = split_sentences(llm.stream([{"role": "user", "content": "x"}]))
        assert await anext(sentences) == "First sentence here."
        await sentences.aclose()
        await asyncio.wait_for(fake.disconnected.wait(), GUARD_S)
    finally:
        await llm.aclose()


@pytest.mark.parametrize(
    ("model", "received", "expected", "retryable"),
    [
        ("empty", [], "empty reply", True),
        ("blank", [" \n "], "empty reply", True),
        ("no-chunks", [], "empty reply", True),
        ("json", [], "application/json instead of an event stream", False),
        ("html", [], "text/html instead of an event stream", False),
        ("garbage", ["Hel"], "not chat-completions JSON", False),
        ("cut", ["Hel", "lo"], "broke mid-reply", True),
        ("error-event", ["Hel"], "failed mid-reply: model overloaded", True),
        ("leaky", [], "HTTP 503", True),
    ],
)
async def test_a_broken_reply_is_a_typed_error_that_names_no_address(
    fake_openai: tuple[FakeOpenAI, str], model: str, received: list[str], expected: str,
    retryable: bool,
):
    fake, url = fake_openai
    llm = _llm(url, model=model)
    deltas, error = await _until_error(llm)
    assert deltas == received
    assert expected in error.message, error.message
    assert error.retryable == retryable
    port = url.split(":")[2].split("/")[0]
    assert "127.0.0.1" not in error.message and port not in error.message
    assert len(fake.requests) == 1


async def test_a_frozen_endpoint_fails_once_at_the_configured_timeout(
    fake_openai: tuple[FakeOpenAI, str],
):
    """It accepts the request and sends nothing: one request (the client does not retry on
    its own, which doubled the wait), failed by the first-token deadline, which the message
    names."""
    fake, url = fake_openai
    llm = OpenAIChat(LLMConfig(base_url=url, model="frozen", timeout=0.3))  # default retries
    try:
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(_collect(llm, [{"role": "user", "content": "x"}]), GUARD_S)
    finally:
        await llm.aclose()
    assert info.value.message == "the LLM sent no reply within 0.3 s (waiting for the first token)"
    assert info.value.retryable
    assert len(fake.requests) == 1


@pytest.mark.parametrize("model", ["empty", "json", "html", "garbage", "cut", "frozen"])
async def test_a_broken_reply_reaches_the_page_and_the_avatar_listens_again(
    fake_openai: tuple[FakeOpenAI, str], model: str,
):
    from livedh.config import SessionConfig
    from livedh.lipsync.engine import LipSyncEngine
    from livedh.session.session import Session
    from tests.fakes import LoudnessModel, make_fake_tts

    _, url = fake_openai
    llm = _llm(url, model=model, timeout=0.3)
    engine = LipSyncEngine(LoudnessModel())
    tts = make_fake_tts()
    session = Session(7, SessionConfig(), engine, tts, llm=llm,
                      history=ChatHistory("be brief", 10))
    events: list[dict[str, Any]] = []
    session.emit = events.append
    try:
        await session.chat("hello")
        task = session._answering.chat_task
        assert task is not None
        await asyncio.wait_for(task, GUARD_S)
        errors = [e for e in events if e["type"] == "error"]
        assert len(errors) == 1 and errors[0]["where"] == "llm", events
        assert "the LLM " in errors[0]["msg"] and "127.0.0.1" not in errors[0]["msg"]
        states = [e["state"] for e in events if e["type"] == "state"]
        assert states == ["thinking", "listening"]
        assert session.state().state == "listening"
        # The person hears why nothing comes (the page may show the error instead).
        for _ in range(100):
            if tts.calls:
                break
            await asyncio.sleep(0.01)
        assert tts.calls[-1].startswith("Sorry")
    finally:
        await session.aclose()
        await engine.aclose()
        await llm.aclose()


async def test_an_answer_with_nothing_to_say_leaves_thinking():
    """A ChatLLM (not the OpenAI one, which calls that an error) streams only markup."""
    from livedh.config import SessionConfig
    from livedh.lipsync.engine import LipSyncEngine
    from livedh.llm.base import ChatLLM
    from livedh.session.session import Session
    from tests.fakes import LoudnessModel, make_fake_tts

    class Blank(ChatLLM):
        async def stream(self, messages: list[Any]) -> AsyncIterator[str]:
            yield "** --- **"

    engine = LipSyncEngine(LoudnessModel())
    session = Session(8, SessionConfig(), engine, make_fake_tts(), llm=Blank(),
                      history=ChatHistory("be brief", 10))
    events: list[dict[str, Any]] = []
    session.emit = events.append
    try:
        await session.chat("hello")
        assert session._answering.chat_task is not None
        await asyncio.wait_for(session._answering.chat_task, GUARD_S)
        assert [e["state"] for e in events if e["type"] == "state"] == ["thinking", "listening"]
        assert not [e for e in events if e["type"] == "error"]
    finally:
        await session.aclose()
        await engine.aclose()


def test_not_configured():
    with pytest.raises(NotConfiguredError) as info:
        OpenAIChat(LLMConfig())
    assert "--llm-base-url" in info.value.message
    assert info.value.http_status == 409


# --- split_sentences / split_text ------------------------------------------------------------


async def _deltas(pieces: list[str]) -> AsyncIterator[str]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


async def _split_stream(pieces: list[str], **kw: Any) -> list[str]:
    return [s async for s in split_sentences(_deltas(pieces), **kw)]


def _every_split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hello there. How are you today? I'm fine! Thanks a lot.",
            ["Hello there.", "How are you today?", "I'm fine!", "Thanks a lot."],
        ),
        ("First part; second part.", ["First part;", "second part."]),
        (
            "Pi is 3.14 and e is 2.718. Also 1,000 is a number.",
            ["Pi is 3.14 and e is 2.718.", "Also 1,000 is a number."],
        ),
        (
            "Mr. Smith met Dr. Jones, e.g. at the U.S. embassy. Then they left.",
            ["Mr. Smith met Dr. Jones, e.g. at the U.S. embassy.", "Then they left."],
        ),
        ("J. R. R. Tolkien wrote books. The end.", ["J. R. R. Tolkien wrote books.", "The end."]),
        (
            "Go to https://example.com/a.b?x=1 for more. Or www.example.org. Bye now.",
            ["Go to https://example.com/a.b?x=1 for more.", "Or www.example.org.", "Bye now."],
        ),
        ('He said "Stop right there." Then he left.', ['He said "Stop right there."',
                                                       "Then he left."]),
        (
            "你好！我是数字人。今天天气很好；我们去公园吧？好的……走吧。",
            ["你好！我是数字人。", "今天天气很好；", "我们去公园吧？", "好的……走吧。"],
        ),
        ("我喜欢Python.它很好用!", ["我喜欢Python.", "它很好用!"]),
        ("Line one here\nLine two here", ["Line one here", "Line two here"]),
        # Tiny fragments merge into the next sentence.
        ("Hi. OK. This sentence is longer.", ["Hi. OK.", "This sentence is longer."]),
        ("好的。我明白了。", ["好的。我明白了。"]),
        # ... and a tiny remainder is still spoken.
        ("This is a sentence. Ok.", ["This is a sentence.", "Ok."]),
        ("", []),
        ("...\n---\n", []),
    ],
)
async def test_split(text: str, expected: list[str]):
    assert split_text(text) == expected
    # Streaming gives the same sentences however the deltas are cut, mid-word included.
    for size in (1, 2, 3, 7):
        assert await _split_stream(_every_split(text, size)) == expected


async def test_split_strips_markdown():
    text = (
        "## The plan\n\n"
        "- **Bold** first item\n"
        "* Second `code` item\n"
        "> Quoted wisdom here\n"
        "1. Numbered item one.\n"
        "```python\nprint('not for speech')\n```\n"
        "See [the docs](https://x.example/docs.html) today. *Bye* now!"
    )
    expected = [
        "The plan",
        "Bold first item",
        "Second code item",
        "Quoted wisdom here",
        "1. Numbered item one.",
        "See the docs today.",
        "Bye now!",
    ]
    assert split_text(text) == expected
    assert await _split_stream(_every_split(text, 3)) == expected


async def test_split_cuts_long_sentences_at_commas():
    text = (
        "This is a rather long sentence without a full stop, which keeps going on and on, "
        "and it only ends here after a while."
    )
    pieces = split_text(text)
    assert pieces == [
        "This is a rather long sentence without a full stop,",
        "which keeps going on and on,",
        "and it only ends here after a while.",
    ]
    assert await _split_stream(_every_split(text, 4)) == pieces
    # Short sentences are not cut at commas.
    assert split_text("Yes, of course, I can.") == ["Yes, of course, I can."]


async def test_first_sentence_is_yielded_before_the_stream_ends():
    release = asyncio.Event()

    async def deltas() -> AsyncIterator[str]:
        yield "The first sentence is ready. The sec"
        await release.wait()
        yield "ond one follows."

    sentences = split_sentences(deltas())
    assert await anext(sentences) == "The first sentence is ready."
    release.set()
    assert [s async for s in sentences] == ["The second one follows."]


async def test_run_on_text_is_cut_eventually():
    text = "word " * 100
    pieces = await _split_stream(_every_split(text, 5))
    assert " ".join(pieces) == text.strip()
    assert len(pieces) > 1


def test_clean_markdown():
    assert clean_markdown("# Title") == "Title"
    assert clean_markdown("__bold__ and snake_case") == "bold and snake_case"
    assert clean_markdown("a - b", line_start=False) == "a - b"


# --- ChatHistory -------------------------------------------------------------------------------


def test_history_keeps_system_first_and_drops_oldest_pairs():
    history = ChatHistory("sys", max_messages=4)
    for i in range(3):
        history.add_exchange(f"q{i}", f"a{i}")
    assert len(history) == 4
    assert history.messages_for("q3") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]
    # messages_for records nothing by itself.
    assert len(history) == 4


def test_history_partial_reply_records_what_was_spoken():
    history = ChatHistory("sys", max_messages=10)
    history.add_partial("Tell me a story", "Once upon a time.")
    history.add_partial("Again", "")
    assert history.messages[1:] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": f"Once upon a time. {INTERRUPTED_MARK}"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": INTERRUPTED_MARK},
    ]


def test_history_skips_unanswered_exchange_and_copies():
    history = ChatHistory("sys", max_messages=10)
    history.add_exchange("Hello?", "  ")
    assert history.messages == [{"role": "system", "content": "sys"}]
    history.messages[0]["content"] = "tampered"
    assert history.messages[0]["content"] == "sys"


def test_history_odd_and_zero_bounds():
    history = ChatHistory("sys", max_messages=3)
    history.add_exchange("q0", "a0")
    history.add_exchange("q1", "a1")
    assert [m["content"] for m in history.messages] == ["sys", "q1", "a1"]
    none_kept = ChatHistory("sys", max_messages=0)
    none_kept.add_exchange("q", "a")
    assert none_kept.messages == [{"role": "system", "content": "sys"}]
    with pytest.raises(InvalidInputError):
        ChatHistory("sys", max_messages=-1)
