"""The LiveTalking HTTP API, kept so its clients work unchanged.

Differences on purpose: errors use real HTTP status codes (with a JSON body {code:-1, msg}), and
a missing or unknown session is a 4xx instead of a server crash.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import numpy as np
from aiohttp import web

from livedh.avatar.actions import audiotype_action
from livedh.errors import InvalidInputError, PayloadTooLargeError
from livedh.media.pcm import decode_audio_bytes
from livedh.server.http import (
    MAX_SDP_CHARS,
    error_response,
    ok,
    optional_str,
    read_json,
    reading_body,
    require_bool,
    require_str,
)
from livedh.server.services import SERVICES
from livedh.session.session import Session

routes = web.RouteTableDef()


def _tts_choice(body: dict[str, Any]) -> tuple[str | None, str | None]:
    tts = body.get("tts")
    if tts is None:
        return None, None
    if not isinstance(tts, dict):
        raise InvalidInputError("'tts' must be an object {engine, voice}")
    return optional_str(tts, "engine", 40), optional_str(tts, "voice", 100)


@routes.post("/offer")
async def offer(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json(request)
    engine, voice = _tts_choice(body)
    session, sdp, sdp_type = await services.sessions.open_webrtc(
        require_str(body, "sdp", MAX_SDP_CHARS), require_str(body, "type"), engine, voice
    )
    return web.json_response({"sdp": sdp, "type": sdp_type, "sessionid": session.id})


async def speak(session: Session, body: dict[str, Any]) -> None:
    """echo: speak the text as is; chat: speak the LLM's answer to it."""
    text = require_str(body, "text")
    mode = body.get("type", body.get("mode", "echo"))
    interrupt = require_bool(body, "interrupt")
    if mode == "echo":
        session.say(text, interrupt=interrupt)
    elif mode == "chat":
        await session.chat(text, interrupt=interrupt)
    else:
        raise InvalidInputError("'type' must be 'echo' or 'chat'")


@routes.post("/human")
async def human(request: web.Request) -> web.Response:
    body = await read_json(request)
    session = request.app[SERVICES].sessions.get(body.get("sessionid"))
    await speak(session, body)
    return ok()


async def read_upload(request: web.Request) -> tuple[Any, bytes]:
    """Read a multipart form with `sessionid` and `file`; returns (sessionid, file bytes)."""
    limit = request.app[SERVICES].config.server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PayloadTooLargeError(f"the upload is larger than the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise InvalidInputError("send multipart/form-data with fields 'sessionid' and 'file'")
    async with reading_body(request):
        form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise InvalidInputError("the form needs a 'file' field holding an audio file")
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the upload is larger than the limit of {limit} bytes")
    return form.get("sessionid"), data


async def decode_upload(request: web.Request, data: bytes) -> np.ndarray:
    """Decode an uploaded audio file off the event loop, refusing audio longer than the cap."""
    cap = request.app[SERVICES].config.server.max_upload_seconds
    decode = functools.partial(decode_audio_bytes, data, max_seconds=cap)
    return await asyncio.get_running_loop().run_in_executor(None, decode)


@routes.post("/humanaudio")
async def humanaudio(request: web.Request) -> web.Response:
    sessionid, data = await read_upload(request)
    session = request.app[SERVICES].sessions.get(sessionid)
    samples = await decode_upload(request, data)
    session.play_audio(samples)
    return ok()


@routes.post("/interrupt_talk")
async def interrupt_talk(request: web.Request) -> web.Response:
    body = await read_json(request)
    request.app[SERVICES].sessions.get(body.get("sessionid")).interrupt()
    return ok()


@routes.post("/is_speaking")
async def is_speaking(request: web.Request) -> web.Response:
    body = await read_json(request)
    session = request.app[SERVICES].sessions.get(body.get("sessionid"))
    return web.json_response({"code": 0, "data": session.speaking})


@routes.post("/set_audiotype")
async def set_audiotype(request: web.Request) -> web.Response:
    """LiveTalking's custom states onto actions: 0 and 1 go back to the plain motion, 2, 3, ...
    play the avatar's actions in manifest order (``reinit`` is accepted: an action always
    plays from its start)."""
    body = await read_json(request)
    session = request.app[SERVICES].sessions.get(body.get("sessionid"))
    audiotype = body.get("audiotype")
    if isinstance(audiotype, str) and audiotype.isdigit() and len(audiotype) < 6:
        audiotype = int(audiotype)  # some LiveTalking pages send the number as a string
    if not isinstance(audiotype, int) or isinstance(audiotype, bool):
        raise InvalidInputError("'audiotype' is required and must be an integer")
    require_bool(body, "reinit", True)
    name = audiotype_action(audiotype, session.actions)
    if name is None:
        session.stop_action()
    else:
        session.play_action(name)
    return ok()


@routes.post("/record")
async def not_supported(request: web.Request) -> web.Response:
    return error_response(501, "not_implemented", f"{request.path} (recording) is not supported yet")
