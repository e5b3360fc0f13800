"""What the server builds at start-up and tears down at shutdown; stored on the aiohttp app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from livedh.config import AppConfig
from livedh.lipsync.engine import LipSyncEngine
from livedh.lipsync.loader import load_lipsync_model
from livedh.llm.base import ChatLLM
from livedh.logs import log_event
from livedh.session.manager import SessionManager
from livedh.tts.registry import TTSRegistry

logger = logging.getLogger("livedh.server")


@dataclass
class Services:
    config: AppConfig
    tts: TTSRegistry
    lipsync: LipSyncEngine
    sessions: SessionManager
    llm: ChatLLM | None = None

    async def aclose(self) -> None:
        await self.sessions.aclose()
        await self.lipsync.aclose()
        await self.tts.aclose()
        if self.llm is not None:
            await self.llm.aclose()


SERVICES = web.AppKey("services", Services)


async def build_services(config: AppConfig) -> Services:
    loop = asyncio.get_running_loop()
    # Building the default avatar runs a landmark model: keep it off the event loop.
    model = await loop.run_in_executor(None, load_lipsync_model, config)
    lipsync = LipSyncEngine(model, output_format="yuv420p")
    tts = TTSRegistry(config.tts)
    # Load the default voice now: the first /human would otherwise wait ~1 s for it.
    await tts.get(None).warmup()

    llm: ChatLLM | None = None
    if config.llm.configured:
        from livedh.llm.openai_chat import OpenAIChat

        llm = OpenAIChat(config.llm)
    sessions = SessionManager(config, lipsync, tts, llm)
    log_event(
        logger, "ready", model=config.model, avatar=config.avatar, tts=config.tts.engine,
        llm=config.llm.base_url or ("default" if config.llm.configured else "none"),
    )
    return Services(config, tts, lipsync, sessions, llm)
