"""What the server builds at start-up and tears down at shutdown; stored on the aiohttp app."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from aiohttp import web

from livedh.config import AppConfig
from livedh.errors import LiveDHError
from livedh.lipsync.engine import LipSyncEngine
from livedh.lipsync.loader import load_lipsync_model, resolve_model
from livedh.llm.base import ChatLLM
from livedh.llm.sentences import split_text
from livedh.logs import log_event
from livedh.metrics import Metrics
from livedh.session.hearing import Hearing, HearingConfig
from livedh.session.manager import SessionManager
from livedh.tts.cache import CachingTTS
from livedh.tts.registry import TTSRegistry

logger = logging.getLogger("livedh.server")


@dataclass
class Services:
    config: AppConfig
    tts: TTSRegistry
    lipsync: LipSyncEngine
    sessions: SessionManager
    llm: ChatLLM | None = None
    hearing: Hearing | None = None
    encode_pool: ThreadPoolExecutor | None = None
    #: start-up work that goes on while the server already serves (the TTS prefill)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    #: the app's metrics: the session manager's, which its sessions report to
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = self.sessions.metrics
        self.metrics.watch_sessions(self.sessions.__len__, self.sessions.connecting)

    async def aclose(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.sessions.aclose()
        await self.lipsync.aclose()
        await self.tts.aclose()
        if self.llm is not None:
            await self.llm.aclose()
        if self.hearing is not None:
            await self.hearing.asr.aclose()
        if self.encode_pool is not None:
            self.encode_pool.shutdown(wait=True, cancel_futures=True)


SERVICES = web.AppKey("services", Services)


def build_chat(config: AppConfig) -> ChatLLM | None:
    """What answers chat and voice turns: the LLM, grounded in the knowledge base when there is
    one; the knowledge base alone (offline) when there is no LLM. Blocking (embeds the KB)."""
    llm: ChatLLM | None = None
    if config.llm.configured:
        from livedh.llm.openai_chat import OpenAIChat

        llm = OpenAIChat(config.llm)
    if config.knowledge_dir is not None:
        from livedh.llm.embeddings import SentenceEmbedder
        from livedh.llm.knowledge import (
            GroundedChat,
            KnowledgeAnswerer,
            KnowledgeBase,
            KnowledgeConfig,
        )

        knowledge = KnowledgeConfig(folder=config.knowledge_dir)
        kb = KnowledgeBase.from_config(knowledge, SentenceEmbedder())
        # Embeddings may come from the cache without loading the model: load it now, or the
        # first question waits seconds for it.
        kb.search("warm up")
        log_event(logger, "knowledge_base", folder=config.knowledge_dir, passages=len(kb))
        llm = GroundedChat(llm, kb, knowledge) if llm is not None else KnowledgeAnswerer(kb, knowledge)
    return llm


async def load_hearing(config: AppConfig) -> Hearing | None:
    """VAD + whisper, shared by all sessions; None (with a warning) when no model is found."""
    if not config.asr.enabled:
        return None
    from livedh.asr.turns import TurnConfig
    from livedh.asr.vad import SileroVADModel
    from livedh.asr.whisper import WhisperASR

    try:
        # Greedy decoding: a live answer waits on this; beam search buys little on short turns.
        # Two workers: a final transcript never queues behind a partial already running.
        asr = WhisperASR(config.asr.model, language=config.asr.language, beam_size=1, workers=2)
        await asr.warmup()
        vad = await asyncio.get_running_loop().run_in_executor(None, SileroVADModel.load)
    except LiveDHError as exc:
        log_event(logger, "hearing_off", level=logging.WARNING, reason=exc.message)
        return None
    turn = TurnConfig(end_silence=config.asr.end_silence, min_speech=config.asr.min_speech,
                      early_silence=config.asr.early_silence)
    hearing_config = HearingConfig(config.asr.language, turn, barge_in=config.asr.barge_in)
    return Hearing(vad, asr, hearing_config)


async def build_services(config: AppConfig) -> Services:
    loop = asyncio.get_running_loop()
    config = replace(config, model=await loop.run_in_executor(None, resolve_model, config))
    # Building the default avatar runs a landmark model: keep it off the event loop.
    model = await loop.run_in_executor(None, load_lipsync_model, config)
    lipsync = LipSyncEngine(
        model, max_batch=config.lipsync.max_batch, max_wait=config.lipsync.max_wait,
        output_format="yuv420p",
    )
    tts = TTSRegistry(config.tts)
    # Load the default voice now: the first /human would otherwise wait ~1 s for it.
    await tts.get(None).warmup()

    llm = await asyncio.get_running_loop().run_in_executor(None, build_chat, config)
    hearing = await load_hearing(config)
    # Video encoding for every session: one thread per core, named for profiles and leak checks.
    encode_pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="livedh-encode")
    sessions = SessionManager(config, lipsync, tts, llm, hearing, encode_pool, metrics=Metrics())
    log_event(
        logger, "ready", model=config.model, avatar=config.avatar, tts=config.tts.engine,
        llm=config.llm.base_url or ("default" if config.llm.configured else "none"),
    )
    services = Services(config, tts, lipsync, sessions, llm, hearing, encode_pool)
    replies = _known_replies(llm)
    if replies and tts.cache.max_bytes:
        services.background.append(asyncio.create_task(
            _prefill(tts.get(None), replies, config.tts.voice), name="tts-prefill"
        ))
    return services


def _known_replies(llm: ChatLLM | None) -> list[str]:
    """The first sentence of every reply an offline knowledge base can give (a session speaks
    a reply sentence by sentence, and the first is what the person waits for)."""
    from livedh.llm.knowledge import KnowledgeAnswerer

    if not isinstance(llm, KnowledgeAnswerer):
        return []
    return [sentences[0] for sentences in map(split_text, llm.replies()) if sentences]


async def _prefill(tts: CachingTTS, texts: list[str], voice: str | None) -> None:
    """Synthesize the knowledge base's replies into the phrase cache, at the TTS workers' low
    priority, so a kiosk's answers start at once; sessions are served meanwhile."""
    started = time.monotonic()
    try:
        done = await tts.prefill(texts, voice)
    except LiveDHError as exc:
        log_event(logger, "tts_prefill_failed", level=logging.WARNING, error=exc.message)
        return
    log_event(logger, "tts_prefill", engine=tts.name, texts=done,
              seconds=round(time.monotonic() - started, 1),
              cache_mb=round(tts.cache_bytes / 2**20, 1))
