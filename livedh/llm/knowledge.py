"""A knowledge base: a folder of Markdown / text / FAQ files, searched by sentence embeddings.

Two chat models use it:

* ``KnowledgeAnswerer`` answers with no LLM at all: it speaks the best-matching passage, or a
  fixed "I don't know" sentence when nothing matches well enough (the offline default);
* ``GroundedChat`` wraps an LLM and puts the best passages into its system message.

The folder format, the threshold and grounding are described in docs/knowledge-base.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedh.errors import InvalidInputError, NotConfiguredError
from livedh.files import atomic_file
from livedh.llm.base import ChatLLM, ChatMessage
from livedh.llm.embeddings import Embedder
from livedh.logs import log_event

logger = logging.getLogger(__name__)

#: file types read from a knowledge-base folder
SUFFIXES = (".md", ".txt", ".faq")
# Calibrated on tests/data/kb with all-MiniLM-L6-v2: paraphrases of what it answers score
# 0.50 or more, unrelated questions 0.35 or less (see tests/test_knowledge.py). Nearer the
# unrelated side than the midpoint would be: a wrong answer is worse than "ask staff".
DEFAULT_THRESHOLD = 0.45
DEFAULT_K = 3
# About 40 s of speech: a prose passage longer than that is cut at paragraphs, then sentences.
DEFAULT_CHUNK_CHARS = 600
DEFAULT_DONT_KNOW = "Sorry, I don't know that. Please ask a member of staff."
DEFAULT_GROUNDING_PROMPT = (
    "Answer using only these passages; if they don't contain the answer, say you don't know."
)
_MIN_CHUNK_CHARS = 100
# Characters per streamed delta: a few deltas per answer, like an LLM's (but cheaper).
_DELTA_CHARS = 24


@dataclass
class KnowledgeConfig:
    #: folder of .md / .txt / .faq files; None: no knowledge base
    folder: Path | None = None
    #: a best match whose cosine similarity is below this gets ``dont_know_text`` instead
    threshold: float = DEFAULT_THRESHOLD
    #: passages put into a grounded LLM's system message
    k: int = DEFAULT_K
    dont_know_text: str = DEFAULT_DONT_KNOW
    #: prose is cut into passages of at most this many characters (Q/A answers never are)
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    #: keep embeddings in a file next to the folder, so a restart only embeds what changed
    cache: bool = True
    #: what a grounded LLM is told before the passages
    grounding_prompt: str = DEFAULT_GROUNDING_PROMPT


@dataclass(frozen=True)
class Passage:
    """A unit of knowledge: what is spoken (or shown to an LLM) when it matches."""

    #: the answer of a Q/A pair, or a piece of prose
    text: str
    #: file it comes from, relative to the knowledge-base folder (POSIX separators)
    source: str
    #: the headings it sits under ("Parking > Car park"), or the file's name
    title: str
    #: the question, for a Q/A pair
    question: str | None = None
    #: more texts that should find this passage: other wordings of a Q/A pair's question
    #: (extra ``Q:`` lines), or the heading of a Markdown section without sub-sections
    also_matches: tuple[str, ...] = ()

    def embedding_texts(self) -> list[str]:
        """What is matched against a question (the best score counts): a Q/A pair's questions
        and its answer; prose together with its headings, which say what it is about."""
        if self.question is not None:
            return [self.question, *self.also_matches, self.text]
        return [*self.also_matches, f"{self.title}\n{self.text}"]

    def for_prompt(self) -> str:
        if self.question is not None:
            return f"({self.source}, {self.title})\nQ: {self.question}\nA: {self.text}"
        return f"({self.source}, {self.title})\n{self.text}"


@dataclass(frozen=True)
class Hit:
    passage: Passage
    #: cosine similarity with the question, -1..1 (unrelated text scores about 0..0.35)
    score: float

    @property
    def source(self) -> str:
        return self.passage.source


# --- reading a folder ------------------------------------------------------------------------

_FRONT_MATTER_RE = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
# A closing run of #s needs a space before it: "# Learn C#" keeps its "#".
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM_RE = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_FAQ_LINE_RE = re.compile(r"^\s*([QA]):\s*(.*)$", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+")


def load_passages(folder: Path, *, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[Passage]:
    """Read every .md / .txt / .faq file under ``folder`` (sub-folders too; hidden files and
    folders are skipped), in path order. Raises InvalidInputError for a missing folder, one
    with nothing to read, or a file that cannot be parsed."""
    if chunk_chars < _MIN_CHUNK_CHARS:
        raise InvalidInputError(f"chunk_chars must be at least {_MIN_CHUNK_CHARS}")
    folder = Path(folder)
    if not folder.exists():
        raise InvalidInputError(f"knowledge base folder {folder} does not exist")
    if not folder.is_dir():
        raise InvalidInputError(f"knowledge base {folder} is not a folder")
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise InvalidInputError(
            f"knowledge base folder {folder} has no {', '.join(SUFFIXES)} files"
        )
    passages: list[Passage] = []
    for path in files:
        source = path.relative_to(folder).as_posix()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"knowledge base file {source} is not UTF-8 text") from exc
        except OSError as exc:
            raise InvalidInputError(f"cannot read knowledge base file {source}: {exc}") from exc
        passages.extend(parse_file(text, source, chunk_chars=chunk_chars))
    if not passages:
        raise InvalidInputError(f"the files in knowledge base folder {folder} are all empty")
    return passages


def parse_file(text: str, source: str, *, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[Passage]:
    """Passages of one file, by its suffix: .faq is Q:/A: pairs, .txt is Q:/A: pairs if it has
    a ``Q:`` line and paragraphs otherwise, .md is Markdown."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    suffix = Path(source).suffix.lower()
    if suffix == ".faq" or (suffix == ".txt" and any(_is_question(line) for line in text.split("\n"))):
        return parse_faq(text, source)
    if suffix == ".md":
        return parse_markdown(text, source, chunk_chars=chunk_chars)
    title = _file_title(source)
    return [
        Passage(chunk, source, title)
        for paragraph in _paragraphs(text.split("\n"))
        for chunk in _chunk([paragraph], chunk_chars)
    ]


def parse_faq(text: str, source: str) -> list[Passage]:
    """``Q: question`` / ``A: answer`` pairs. Several ``Q:`` lines before one ``A:`` are
    wordings of the same question. A question or answer may continue on the following lines,
    a blank line inside an answer starts a paragraph, lines starting with ``#`` are comments."""
    title = _file_title(source)
    # Per pair: the lines of each wording of its question, its answer's lines, its first line.
    pairs: list[tuple[list[list[str]], list[str], int]] = []
    field: list[str] | None = None
    for number, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("#"):
            continue
        match = _FAQ_LINE_RE.match(line)
        if match and match.group(1).upper() == "Q":
            if not pairs or pairs[-1][1]:
                pairs.append(([], [], number))
            field = [match.group(2)]
            pairs[-1][0].append(field)
        elif match:
            if not pairs or pairs[-1][1]:
                raise InvalidInputError(f"{source} line {number}: an A: without a Q: before it")
            field = pairs[-1][1]
            field.append(match.group(2))
        elif field is not None:
            field.append(line)
        elif line.strip():
            raise InvalidInputError(
                f"{source} line {number}: text before the first Q: (comment lines start with #)"
            )
    passages = []
    for question_lines, answer_lines, number in pairs:
        questions = [" ".join(_paragraphs(lines)) for lines in question_lines]
        answer = "\n\n".join(_paragraphs(answer_lines))
        if not answer_lines:
            raise InvalidInputError(f"{source} line {number}: a Q: without an A:")
        if not all(questions) or not answer:
            raise InvalidInputError(f"{source} line {number}: a Q: or A: with no text")
        passages.append(Passage(answer, source, title, questions[0], tuple(questions[1:])))
    return passages


def parse_markdown(text: str, source: str, *, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> list[Passage]:
    """A section whose heading ends with ``?`` is a Q/A pair (the heading is the question, the
    text up to the next heading the answer). Other sections are prose, cut into passages of at
    most ``chunk_chars`` at paragraphs (then sentences); their title is the heading trail."""
    text = _HTML_COMMENT_RE.sub("", _FRONT_MATTER_RE.sub("", text))
    # Each section: its heading trail [(level, heading)...] and its body lines.
    sections: list[tuple[list[tuple[int, str]], list[str]]] = [([], [])]
    fenced = False
    for line in text.split("\n"):
        if _FENCE_RE.match(line):
            fenced = not fenced
        heading = None if fenced else _HEADING_RE.match(line)
        if heading is None:
            sections[-1][1].append(line)
            continue
        level = len(heading.group(1))
        trail = [(lvl, h) for lvl, h in sections[-1][0] if lvl < level]
        sections.append(([*trail, (level, heading.group(2))], []))

    passages: list[Passage] = []
    for index, (trail, body) in enumerate(sections):
        paragraphs = _paragraphs(body)
        if not paragraphs:
            continue
        if trail and trail[-1][1].endswith("?"):
            parents = " > ".join(h for _, h in trail[:-1]) or _file_title(source)
            passages.append(Passage("\n\n".join(paragraphs), source, parents, trail[-1][1]))
            continue
        title = " > ".join(h for _, h in trail) or _file_title(source)
        # A heading is matched on its own only when it heads no sub-sections: a parent's
        # heading ("Opening hours") names its children's content better than its intro text.
        next_trail = sections[index + 1][0] if index + 1 < len(sections) else []
        leaf = bool(trail) and len(next_trail) <= len(trail)
        also = (trail[-1][1],) if leaf else ()
        chunks = _chunk(paragraphs, chunk_chars)
        passages.extend(Passage(chunk, source, title, None, also) for chunk in chunks)
    return passages


def _is_question(line: str) -> bool:
    match = _FAQ_LINE_RE.match(line)
    return match is not None and match.group(1).upper() == "Q"


def _file_title(source: str) -> str:
    stem = Path(source).stem.replace("_", " ").replace("-", " ").strip()
    return stem[:1].upper() + stem[1:]


def _paragraphs(lines: Iterable[str]) -> list[str]:
    """Blank-line separated paragraphs with their soft line breaks joined: the speech side
    cuts sentences at newlines, so a wrapped line must not end one. List items keep their own
    lines."""
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in [*lines, ""]:
        line = raw.strip()
        if not line:
            if current:
                paragraphs.append("\n".join(current))
                current = []
        elif current and not _LIST_ITEM_RE.match(line):
            current[-1] = f"{current[-1]} {line}"
        else:
            current.append(line)
    return paragraphs


def _chunk(paragraphs: Sequence[str], chunk_chars: int) -> list[str]:
    """Pack paragraphs into chunks of at most ``chunk_chars``; a longer paragraph is cut at
    sentence ends (a longer sentence at spaces)."""
    pieces: list[tuple[int, str]] = []  # (paragraph index, text)
    for index, paragraph in enumerate(paragraphs):
        for sentence in _SENTENCE_END_RE.split(paragraph) if len(paragraph) > chunk_chars else [paragraph]:
            while len(sentence) > chunk_chars:
                cut = sentence.rfind(" ", 0, chunk_chars + 1)
                cut = cut if cut > 0 else chunk_chars
                pieces.append((index, sentence[:cut].rstrip()))
                sentence = sentence[cut:].lstrip()
            if sentence:
                pieces.append((index, sentence))
    chunks: list[str] = []
    current, last_index = "", -1
    for index, piece in pieces:
        separator = " " if index == last_index else "\n\n"  # same paragraph, or the next
        if not current:
            current = piece
        elif len(current) + len(separator) + len(piece) <= chunk_chars:
            current = f"{current}{separator}{piece}"
        else:
            chunks.append(current)
            current = piece
        last_index = index
    if current:
        chunks.append(current)
    return chunks


# --- the index -------------------------------------------------------------------------------


def cache_path_for(folder: Path) -> Path:
    """Where the embeddings of ``folder`` are cached: a hidden file beside it (not inside, so
    the folder holds only what its owner put there)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.kb-cache.npz"


class KnowledgeBase:
    """Passages and their embeddings, searched by cosine similarity. Immutable once built, so
    searches may run in several threads at once.

    Building embeds every passage (blocking, tens of ms per text): at start-up, call it in a
    worker thread (``load_knowledge_base`` does).
    """

    def __init__(
        self, passages: Sequence[Passage], embedder: Embedder, *, cache_file: Path | None = None
    ) -> None:
        if not passages:
            raise InvalidInputError("a knowledge base needs at least one passage")
        self.embedder = embedder
        self._passages = tuple(passages)
        texts: list[str] = []
        owners: list[int] = []
        for index, passage in enumerate(self._passages):
            for text in passage.embedding_texts():
                texts.append(text)
                owners.append(index)
        self._owners = np.asarray(owners, dtype=np.intp)
        self._vectors = _embed_cached(embedder, texts, cache_file)

    @classmethod
    def from_folder(
        cls,
        path: Path,
        embedder: Embedder,
        *,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        cache: bool = True,
    ) -> KnowledgeBase:
        """Read and embed a folder (see ``load_passages``). With ``cache``, embeddings are
        kept in ``cache_path_for(path)``, keyed by each text's hash, so a restart embeds only
        what changed."""
        passages = load_passages(path, chunk_chars=chunk_chars)
        return cls(passages, embedder, cache_file=cache_path_for(path) if cache else None)

    @classmethod
    def from_config(cls, config: KnowledgeConfig, embedder: Embedder) -> KnowledgeBase:
        if config.folder is None:
            raise NotConfiguredError("no knowledge base folder is configured")
        return cls.from_folder(
            config.folder, embedder, chunk_chars=config.chunk_chars, cache=config.cache
        )

    @property
    def passages(self) -> tuple[Passage, ...]:
        return self._passages

    def __len__(self) -> int:
        return len(self._passages)

    def search(self, question: str, k: int = DEFAULT_K) -> list[Hit]:
        """The ``k`` passages most similar to ``question``, best first. A Q/A pair scores the
        better of its question's and its answer's similarity. Blocking (embeds the question)."""
        if not question.strip():
            raise InvalidInputError("the question is empty")
        if k < 1:
            raise InvalidInputError("k must be 1 or more")
        query = self.embedder.embed([question])[0]
        scores = self._vectors @ query
        best = np.full(len(self._passages), -np.inf, dtype=np.float32)
        np.maximum.at(best, self._owners, scores)
        order = np.argsort(-best, kind="stable")[:k]
        return [Hit(self._passages[i], float(best[i])) for i in order]


async def load_knowledge_base(config: KnowledgeConfig, embedder: Embedder) -> KnowledgeBase:
    """``KnowledgeBase.from_config`` in a worker thread, for start-up code on the event loop."""
    return await asyncio.to_thread(KnowledgeBase.from_config, config, embedder)


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _embed_cached(embedder: Embedder, texts: list[str], cache_file: Path | None) -> np.ndarray:
    keys = [_text_key(t) for t in texts]
    cached = _read_cache(cache_file, embedder) if cache_file is not None else {}
    missing = list(dict.fromkeys(t for t, key in zip(texts, keys, strict=True) if key not in cached))
    fresh = embedder.embed(missing) if missing else np.empty((0, 0), dtype=np.float32)
    known = cached | {_text_key(t): v for t, v in zip(missing, fresh, strict=True)}
    vectors = np.stack([known[key] for key in keys]).astype(np.float32, copy=False)
    if cache_file is not None and (missing or set(cached) != set(keys)):
        _write_cache(cache_file, embedder, keys, vectors)
    return vectors


def _read_cache(path: Path, embedder: Embedder) -> dict[bytes, np.ndarray]:
    """The cached vectors, or nothing when the file is absent, unreadable, or made by another
    model: the cache only ever saves time, so a bad one is rebuilt, never an error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            model, keys, vectors = str(data["model"]), data["keys"], data["vectors"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log_event(logger, "kb_cache_unreadable", level=logging.WARNING, path=path, error=exc)
        return {}
    if (
        model != embedder.name
        or vectors.ndim != 2
        or len(keys) != len(vectors)
        or (embedder.dim and vectors.shape[1] != embedder.dim)
    ):
        return {}
    return {bytes(key): vector for key, vector in zip(keys, vectors.astype(np.float32), strict=True)}


def _write_cache(path: Path, embedder: Embedder, keys: list[bytes], vectors: np.ndarray) -> None:
    unique = dict(zip(keys, vectors, strict=True))
    try:
        # A crash mid-write never leaves a truncated cache behind.
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                model=np.array(embedder.name),
                keys=np.array(list(unique), dtype="S32"),
                vectors=np.stack(list(unique.values())),
            )
    except OSError as exc:
        # A read-only disk costs restart time, not the knowledge base.
        log_event(logger, "kb_cache_not_written", level=logging.WARNING, path=path, error=exc)


# --- chat models -----------------------------------------------------------------------------


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The latest user message's text, stripped ("" when there is none)."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"].strip()
    return ""


class _Searcher:
    """Runs searches on its own worker thread: embedding a question is ~10 ms of CPU that
    must not stall the event loop (audio and video are paced on it)."""

    def __init__(self, kb: KnowledgeBase, name: str) -> None:
        self.kb = kb
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"livedh-{name}")

    async def search(self, question: str, k: int) -> list[Hit]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.kb.search, question, k)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _validate(config: KnowledgeConfig) -> None:
    if not -1.0 <= config.threshold <= 1.0:
        raise InvalidInputError("the knowledge base threshold is a cosine similarity, -1..1")
    if config.k < 1:
        raise InvalidInputError("k must be 1 or more")


def _deltas(text: str) -> list[str]:
    """Cut ``text`` at spaces into pieces of about ``_DELTA_CHARS``; they join back exactly."""
    pieces: list[str] = []
    for word in re.findall(r"\s*\S+", text):
        if pieces and len(pieces[-1]) < _DELTA_CHARS:
            pieces[-1] += word
        else:
            pieces.append(word)
    return pieces


class KnowledgeAnswerer(ChatLLM):
    """Answers from the knowledge base alone, with no LLM: the passage that best matches the
    latest user message is spoken as it is written, when it scores at least
    ``config.threshold``; otherwise ``config.dont_know_text``. Earlier messages are ignored."""

    local = True

    def __init__(self, kb: KnowledgeBase, config: KnowledgeConfig | None = None) -> None:
        self.config = config or KnowledgeConfig()
        _validate(self.config)
        self.kb = kb
        self._searcher = _Searcher(kb, "kb-answer")

    def replies(self) -> list[str]:
        """Everything this answerer can say: each passage, and "I don't know"."""
        return [*(passage.text for passage in self.kb.passages), self.config.dont_know_text]

    async def answer(self, question: str) -> tuple[str, Hit | None]:
        """The reply to ``question`` and the hit it comes from (None: "I don't know")."""
        if not question.strip():
            return self.config.dont_know_text, None
        hits = await self._searcher.search(question, 1)
        best = hits[0]
        answered = best.score >= self.config.threshold
        log_event(logger, "kb_answer", answered=answered, score=f"{best.score:.3f}", source=best.source)
        return (best.passage.text, best) if answered else (self.config.dont_know_text, None)

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        text, _ = await self.answer(last_user_text(messages))
        for delta in _deltas(text):
            yield delta

    async def aclose(self) -> None:
        self._searcher.close()


class GroundedChat(ChatLLM):
    """Wraps an LLM: the ``config.k`` passages best matching the latest user message go into
    the system message (after the existing system prompt), with ``config.grounding_prompt``.
    It owns ``inner``: ``aclose`` closes it too."""

    def __init__(self, inner: ChatLLM, kb: KnowledgeBase, config: KnowledgeConfig | None = None) -> None:
        self.config = config or KnowledgeConfig()
        _validate(self.config)
        self.inner = inner
        self._searcher = _Searcher(kb, "kb-ground")

    async def grounded(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """``messages`` with the passages added to the system message (a new list; the
        caller's messages are not modified)."""
        question = last_user_text(messages)
        if not question:
            return list(messages)
        hits = await self._searcher.search(question, self.config.k)
        context = "\n\n".join(f"[{i}] {hit.passage.for_prompt()}" for i, hit in enumerate(hits, 1))
        grounding = f"{self.config.grounding_prompt}\n\n{context}"
        out = [message.copy() for message in messages]
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{grounding}"
        else:
            out.insert(0, {"role": "system", "content": grounding})
        return out

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        deltas: AsyncIterator[str] = self.inner.stream(await self.grounded(messages))
        try:
            async for delta in deltas:
                yield delta
        finally:
            # Barge-in closes this generator: close the inner stream now too (an HTTP
            # response), not whenever it is garbage-collected.
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aclose(self) -> None:
        self._searcher.close()
        await self.inner.aclose()
