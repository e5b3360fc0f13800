"""The project's own API, under /api/v1/, described by /api/v1/openapi.json."""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from livedh import __version__
from livedh.media.pcm import decode_audio_bytes
from livedh.server.http import ok, optional_str, read_json, require_bool, require_str
from livedh.server.legacy import _tts_choice, read_upload, speak
from livedh.server.openapi import openapi_document
from livedh.server.services import SERVICES

routes = web.RouteTableDef()
PREFIX = "/api/v1"


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
        }
    )


@routes.get(f"{PREFIX}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


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
    engine, voice = _tts_choice(body)
    session, sdp, sdp_type = await request.app[SERVICES].sessions.open_webrtc(
        require_str(body, "sdp"), require_str(body, "type"), engine, voice
    )
    return web.json_response({"sessionid": session.id, "sdp": sdp, "type": sdp_type}, status=201)


@routes.get(PREFIX + "/sessions/{sessionid}")
async def get_session(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    return web.json_response(dataclasses.asdict(session.state()))


@routes.patch(PREFIX + "/sessions/{sessionid}")
async def update_session(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    session = services.sessions.get(request.match_info["sessionid"])
    body = await read_json(request)
    engine, voice = _tts_choice(body)
    if engine is not None or voice is not None:
        tts = services.tts.get(engine) if engine is not None else session.tts
        session.set_voice(tts, services.tts.check_voice(voice))
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
    body.setdefault("type", body.get("mode", "echo"))
    await speak(session, body)
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/audio")
async def say_audio(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    _, data = await read_upload(request)
    samples = await asyncio.get_running_loop().run_in_executor(None, decode_audio_bytes, data)
    session.play_audio(samples)
    return ok()


@routes.post(PREFIX + "/sessions/{sessionid}/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    session = request.app[SERVICES].sessions.get(request.match_info["sessionid"])
    session.interrupt()
    return ok()


__all__ = ["optional_str", "require_bool", "routes"]
