"""The project's own API, under /api/v1/, described by /api/v1/openapi.json."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from typing import Any

from aiohttp import web

from livedh import __version__
from livedh.avatar.actions import MAX_ACTION_CHARS
from livedh.server.http import (
    MAX_SDP_CHARS,
    ok,
    optional_str,
    read_json,
    reject_unknown,
    require_bool,
    require_str,
)
from livedh.server.legacy import _tts_choice, decode_upload, read_upload, speak
from livedh.server.openapi import openapi_document
from livedh.server.services import SERVICES

routes = web.RouteTableDef()
PREFIX = "/api/v1"


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _thread_counts() -> dict[str, int]:
    """Live threads by pool (the name without its worker number)."""
    return dict(Counter(t.name.rstrip("_0123456789") for t in threading.enumerate()))


@routes.get(f"{PREFIX}/health")
async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "sessions": len(services.sessions),
            "max_sessions": services.config.server.max_sessions,
            "model": services.config.model,
            # Leak watch for operators: these return to their idle values when sessions end.
            "runtime": {
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count(),
                "thread_names": sorted(_thread_counts()),
                "thread_counts": _thread_counts(),
                "rss_mb": _rss_mb(),
            },
        }
    )


@routes.get(f"{PREFIX}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SERVICES].config))


@routes.get(f"{PREFIX}/avatar")
async def avatar(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    model = services.lipsync.model
    return web.json_response(
        {
            "name": services.config.avatar,
            "model": services.config.model,
            "width": model.width,
            "height": model.height,
            "fps": services.config.session.fps,
            "mouth_box": list(model.mouth_box) if model.mouth_box else None,
            "actions": model.motion.action_names if model.motion is not None else [],
        }
    )


@routes.get(f"{PREFIX}/tts/engines")
async def tts_engines(request: web.Request) -> web.Response:
    return web.json_response({"engines": request.app[SERVICES].tts.available()})


@routes.get(f"{PREFIX}/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    sessions = request.app[SERVICES].sessions.sessions()
    return web.json_response({"sessions": [dataclasses.asdict(s.state()) for s in sessions]})


@routes.post(f"{PREFIX}/sessions")
async def create_session(request: web.Request) -> web.Response:
    body = await read_json(request)
    reject_unknown(body, ("sdp", "type", "tts", "token"))
    engine, voice = _strict_tts_choice(body)
    session, sdp, sdp_type = await request.app[SERVICES].sessions.open_webrtc(
        require_str(body, "sdp", MAX_SDP_CHARS), require_str(body, "type"), engine, voice
    )
    return web.json_response({"sessionid": session.id, "sdp": sdp, "type": sdp_type}, status=201)


def _strict_tts_choice(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """/api/v1 bodies are exact (see openapi.py); LiveTalking's ignore unknown fields."""
    tts = body.get("tts")
    if isinstance(tts, dict):
        reject_unknown(tts, ("engine", "voice"))
    return _tts_choice(body)


@routes.get(PREFIX + "/sessions/{sessionid}")
async def get_session(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    return web.json_response(dataclasses.asdict(session.state()))


@routes.patch(PREFIX + "/sessions/{sessionid}")
async def update_session(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    session = services.sessions.get(request.match_info["sessionid"])
    body = await read_json(request)
    reject_unknown(body, ("tts",))
    engine, voice = _strict_tts_choice(body)
    if engine is not None or voice is not None:
        tts = services.tts.get(engine) if engine is not None else session.tts
        session.set_voice(tts, services.tts.validate_voice(voice))
    return web.json_response(dataclasses.asdict(session.state()))


@routes.delete(PREFIX + "/sessions/{sessionid}")
async def delete_session(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    session = services.sessions.get(request.match_info["sessionid"])
    await services.sessions.close(session.id)
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/say")
async def say(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    body = await read_json(request)
    reject_unknown(body, ("text", "mode", "interrupt"))
    await speak(session, body)
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/audio")
async def say_audio(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    _, data = await read_upload(request)
    samples = await decode_upload(request, data)
    session.play_audio(samples)
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/action")
async def action(request: web.Request) -> web.Response:
    """Play one of the avatar's actions (gesture clips) now."""
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    body = await read_json(request)
    reject_unknown(body, ("name",))
    session.play_action(require_str(body, "name", MAX_ACTION_CHARS))
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    session.interrupt()
    return ok()


__all__ = ["optional_str", "require_bool", "routes"]
