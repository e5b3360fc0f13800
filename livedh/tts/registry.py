"""One place that creates the TTS engines, lazily, and shares them between sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from livedh.config import TTSConfig
from livedh.errors import ForbiddenError, InvalidInputError, LiveDHError
from livedh.tts.cache import CachingTTS, PhraseCache
from livedh.tts.edge import EdgeTTS
from livedh.tts.espeak import EspeakTTS
from livedh.tts.piper import PiperTTS
from livedh.tts.text import validate_voice

log = logging.getLogger(__name__)

_Engine = PiperTTS | EspeakTTS | EdgeTTS
#: engine name -> (works without the network, factory)
_ENGINES: dict[str, tuple[bool, Callable[[TTSConfig], _Engine]]] = {
    "piper": (True, lambda config: PiperTTS(config.piper_model)),
    "espeak": (True, lambda config: EspeakTTS()),
    "edge": (False, lambda config: EdgeTTS()),
}
ENGINE_NAMES = tuple(_ENGINES)


def engine_allowed(config: TTSConfig, name: str) -> bool:
    """The default engine, and those the operator listed, may be chosen by a client."""
    return name == config.engine or name in config.allowed_engines


def check_engine_allowed(config: TTSConfig, name: str) -> None:
    if name in _ENGINES and not engine_allowed(config, name):
        raise ForbiddenError(
            f"the TTS engine {name!r} is not enabled on this server; the operator must allow it "
            f"with --tts-engines (enabled: {', '.join(sorted({config.engine, *config.allowed_engines}))})"
        )


class TTSRegistry:
    """Engines by name. One engine per (name, model) is created on first use and shared, behind
    one phrase cache for all of them."""

    def __init__(self, config: TTSConfig) -> None:
        self._check_name(config.engine)
        for name in config.allowed_engines:
            self._check_name(name)
        validate_voice(config.voice)
        if config.cache_mb < 0:
            raise InvalidInputError("the TTS cache size must be 0 MB or more")
        self._config = config
        self._engines: dict[tuple[str, Path | None], _Engine] = {}
        self._cached: dict[tuple[str, Path | None], CachingTTS] = {}
        self.cache = PhraseCache(config.cache_mb * 2**20)
        self._closed = False

    @staticmethod
    def validate_voice(voice: str | None) -> str | None:
        """Check a caller's voice name (length, charset); None or blank means the default."""
        return validate_voice(voice)

    def get(self, name: str | None = None) -> CachingTTS:
        """The engine called ``name`` (None: the configured default), behind the cache.
        A client's choice: refused (403) unless the operator allowed the engine."""
        if name is not None:
            check_engine_allowed(self._config, name)
        engine = self._get(name)
        key = self._key(engine.name)
        cached = self._cached.get(key)
        if cached is None:
            cached = self._cached[key] = CachingTTS(engine, self.cache)
        return cached

    def _key(self, name: str) -> tuple[str, Path | None]:
        return (name, self._config.piper_model if name == "piper" else None)

    def _get(self, name: str | None) -> _Engine:
        name = self._config.engine if name is None else name
        self._check_name(name)
        if self._closed:
            raise LiveDHError("the TTS engines are shut down")
        key = self._key(name)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = _ENGINES[name][1](self._config)
        return engine

    def default_voice(self, name: str | None = None) -> str:
        """The voice used when a session names none: the configured voice for the default
        engine, else the engine's own default."""
        name = self._config.engine if name is None else name
        if name == self._config.engine and self._config.voice:
            return self._config.voice
        return self._get(name).default_voice

    def available(self) -> list[dict[str, object]]:
        """What a client may choose from (the allowed engines): name, default voice, offline,
        usable now (+ why not)."""
        out: list[dict[str, object]] = []
        for name, (offline, _) in _ENGINES.items():
            if not engine_allowed(self._config, name):
                continue
            problem = self._get(name).problem()
            out.append(
                {
                    "name": name,
                    "default_voice": self.default_voice(name),
                    "offline": offline,
                    "usable": problem is None,
                    "problem": problem,
                }
            )
        return out

    async def aclose(self) -> None:
        """Close every engine created so far. Idempotent."""
        self._closed = True
        engines, self._engines = list(self._engines.values()), {}
        self._cached = {}
        results = await asyncio.gather(*(e.aclose() for e in engines), return_exceptions=True)
        for engine, result in zip(engines, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing TTS engine %s failed: %r", engine.name, result)

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in _ENGINES:
            raise InvalidInputError(
                f"unknown TTS engine {name!r}; valid: {', '.join(ENGINE_NAMES)}"
            )
