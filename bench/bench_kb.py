"""Knowledge base speed on this machine: embedding-model load, index build for tests/data/kb
(from scratch and from the embeddings cache), and per-question latency of a search and of a
full ``KnowledgeAnswerer`` reply. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_kb [--rounds 20] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from livedh.llm.embeddings import SentenceEmbedder
from livedh.llm.knowledge import KnowledgeAnswerer, KnowledgeBase, load_passages

KB_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "kb"
QUESTIONS = [
    "when do you open on sunday?",
    "are you open on christmas?",
    "where can I leave my car?",
    "is there somewhere to charge my electric car?",
    "I want to give back a jacket I bought last week",
    "can I swap a present without the receipt?",
    "what's the wifi password?",
    "where are the toilets?",
    "what's the capital of France?",
    "tell me a joke",
]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(label: str, ms: np.ndarray) -> None:
    print(
        f"{label:<34} median {np.median(ms):6.2f} ms  p95 {np.percentile(ms, 95):6.2f}  "
        f"max {ms.max():6.2f}  (n={len(ms)})"
    )


async def answer_latencies(answerer: KnowledgeAnswerer, questions: list[str]) -> np.ndarray:
    ms = []
    for question in questions:
        t0 = time.perf_counter()
        await answerer.answer(question)
        ms.append((time.perf_counter() - t0) * 1000)
    return np.array(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="passes over the question list")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # process-wide: fine in a benchmark, not in the library
    # Other work on the machine shows up as long tails: say how busy it was.
    load1, _, _ = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{os.cpu_count()} CPUs, load average {load1:.1f}")

    # No LRU cache: every question is really embedded, as a new question would be.
    embedder = SentenceEmbedder(cache_size=0)
    print(f"model load (import + weights + warm-up)  {timed(embedder.load):6.2f} s")

    passages = load_passages(KB_DIR)
    texts = sum(len(p.embedding_texts()) for p in passages)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "kb"
        shutil.copytree(KB_DIR, folder)
        cold = timed(lambda: KnowledgeBase.from_folder(folder, embedder))
        warm = timed(lambda: KnowledgeBase.from_folder(folder, embedder))
    print(f"index build, {len(passages)} passages / {texts} texts: {cold * 1000:7.1f} ms "
          f"from scratch, {warm * 1000:6.1f} ms from the cache")

    kb = KnowledgeBase(passages, embedder)
    for question in QUESTIONS:  # untimed: the first inference at each new length is slower
        kb.search(question)
    questions = QUESTIONS * args.rounds
    search_ms = np.array([timed(partial(kb.search, q, k=3)) * 1000 for q in questions])
    report("search (embed question + rank)", search_ms)

    answerer = KnowledgeAnswerer(kb)
    try:
        answer_ms = asyncio.run(answer_latencies(answerer, questions))
    finally:
        asyncio.run(answerer.aclose())
    report("KnowledgeAnswerer.answer (executor)", answer_ms)


if __name__ == "__main__":
    main()
