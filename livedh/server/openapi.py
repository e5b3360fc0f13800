"""OpenAPI 3.1 description of /api/v1 (and of the LiveTalking-compatible routes)."""

from __future__ import annotations

from typing import Any

from livedh import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_OK = {"$ref": "#/components/schemas/Ok"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, *, body: dict[str, Any] | None = None, ok: dict[str, Any] | None = None,
        status: str = "200", multipart: bool = False, errors: tuple[str, ...] = ("400", "404"),
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: {"description": "OK"}}}
    if ok is not None:
        op["responses"][status].update(_json(ok))
    for code in errors:
        op["responses"][code] = {"description": "error", **_json(_ERROR)}
    if body is not None:
        kind = "multipart/form-data" if multipart else "application/json"
        op["requestBody"] = {"required": True, "content": {kind: {"schema": body}}}
    return op


_SID = {"name": "sessionid", "in": "path", "required": True, "schema": {"type": "integer"}}
_OFFER = {
    "type": "object",
    "required": ["sdp", "type"],
    "properties": {
        "sdp": {"type": "string"},
        "type": {"const": "offer"},
        "tts": {"$ref": "#/components/schemas/TTSChoice"},
    },
}
_ANSWER = {
    "type": "object",
    "properties": {"sdp": {"type": "string"}, "type": {"const": "answer"},
                   "sessionid": {"type": "integer"}},
}
_SAY = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "mode": {"enum": ["echo", "chat"], "default": "echo"},
        "interrupt": {"type": "boolean", "default": False},
    },
}
_UPLOAD = {
    "type": "object",
    "required": ["file"],
    "properties": {"sessionid": {"type": "integer"}, "file": {"type": "string", "format": "binary"}},
}
_SESSION_ID_PROPS: dict[str, Any] = {"sessionid": {"type": "integer"}}
_SESSION_ID_BODY: dict[str, Any] = {
    "type": "object", "required": ["sessionid"], "properties": _SESSION_ID_PROPS
}


_JOB_ID: dict[str, Any] = {"name": "job_id", "in": "path", "required": True,
                           "schema": {"type": "string"}}
_AVATAR_UPLOAD: dict[str, Any] = {
    "type": "object", "required": ["name", "file"],
    "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                   "replace": {"type": "boolean"},
                   "file": {"type": "string", "format": "binary"}},
}
_JOB: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                   "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
                   "step": {"type": ["string", "null"]}, "done": {"type": "integer"},
                   "total": {"type": "integer"}, "error": {"type": ["object", "null"]},
                   "summary": {"type": ["object", "null"]}},
}
_JOB_ACCEPTED: dict[str, Any] = {
    "type": "object", "properties": {"job": _JOB, "status_url": {"type": "string"}},
}


def openapi_document() -> dict[str, Any]:
    session = {"$ref": "#/components/schemas/Session"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "livedh", "version": __version__,
                 "description": "Real-time digital human server."},
        "paths": {
            "/api/v1/health": {"get": _op("Server health", ok={"type": "object"}, errors=())},
            "/api/v1/openapi.json": {"get": _op("This document", ok={"type": "object"},
                                                errors=())},
            "/api/v1/avatar": {"get": _op("The avatar being streamed (size, mouth box)",
                                          ok={"type": "object"}, errors=())},
            "/api/v1/tts/engines": {"get": _op("TTS engines and their default voices",
                                               ok={"type": "object"}, errors=())},
            "/api/v1/sessions": {
                "get": _op("List sessions", ok={"type": "object"}, errors=()),
                "post": _op("Open a session from a WebRTC offer", body=_OFFER, ok=_ANSWER,
                            status="201", errors=("400", "503")),
            },
            "/api/v1/sessions/{sessionid}": {
                "parameters": [_SID],
                "get": _op("Session state", ok=session),
                "patch": _op("Change the session's TTS engine or voice",
                             body={"type": "object",
                                   "properties": {"tts": {"$ref": "#/components/schemas/TTSChoice"}}},
                             ok=session),
                "delete": _op("Close the session", ok=_OK),
            },
            "/api/v1/sessions/{sessionid}/say": {
                "parameters": [_SID],
                "post": _op("Speak text (echo) or answer it (chat)", body=_SAY, ok=_OK,
                            errors=("400", "404", "409", "503")),
            },
            "/api/v1/sessions/{sessionid}/audio": {
                "parameters": [_SID],
                "post": _op("Speak an uploaded recording", body=_UPLOAD, ok=_OK, multipart=True,
                            errors=("400", "404", "413", "415")),
            },
            "/api/v1/sessions/{sessionid}/interrupt": {
                "parameters": [_SID],
                "post": _op("Stop the current speech everywhere in the pipeline", ok=_OK),
            },
            "/api/v1/avatars": {
                "get": _op("Avatars on disk and build jobs", ok={"type": "object"}, errors=()),
                "post": _op("Build an avatar from an uploaded video (background job)",
                            body=_AVATAR_UPLOAD, ok=_JOB_ACCEPTED, status="202", multipart=True,
                            errors=("400", "409", "413")),
            },
            "/api/v1/avatars/jobs/{job_id}": {
                "parameters": [_JOB_ID],
                "get": _op("Progress of a build job", ok=_JOB),
                "delete": _op("Cancel a build job", ok=_JOB),
            },
            "/offer": {"post": _op("LiveTalking: open a session", body=_OFFER, ok=_ANSWER,
                                   errors=("400", "503"))},
            "/human": {"post": _op("LiveTalking: speak or chat", ok=_OK, body={
                **_SESSION_ID_BODY, "properties": {**_SESSION_ID_PROPS,
                                                   "text": {"type": "string"},
                                                   "type": {"enum": ["echo", "chat"]},
                                                   "interrupt": {"type": "boolean"}}})},
            "/humanaudio": {"post": _op("LiveTalking: speak an upload", body=_UPLOAD, ok=_OK,
                                        multipart=True, errors=("400", "404", "413", "415"))},
            "/interrupt_talk": {"post": _op("LiveTalking: interrupt", body=_SESSION_ID_BODY, ok=_OK)},
            "/is_speaking": {"post": _op("LiveTalking: is the avatar speaking",
                                         body=_SESSION_ID_BODY,
                                         ok={"type": "object",
                                             "properties": {"code": {"type": "integer"},
                                                            "data": {"type": "boolean"}}})},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "msg"],
                    "properties": {"code": {"const": -1}, "error": {"type": "string"},
                                   "msg": {"type": "string"}, "retryable": {"type": "boolean"}},
                },
                "Ok": {"type": "object", "properties": {"code": {"const": 0},
                                                        "msg": {"type": "string"}}},
                "TTSChoice": {"type": "object",
                              "properties": {"engine": {"enum": ["piper", "espeak", "edge"]},
                                             "voice": {"type": "string"}}},
                "Session": {
                    "type": "object",
                    "properties": {
                        "sessionid": {"type": "integer"}, "connection": {"type": "string"},
                        "speaking": {"type": "boolean"}, "queued": {"type": "integer"},
                        "tts_engine": {"type": "string"}, "tts_voice": {"type": ["string", "null"]},
                        "frames_sent": {"type": "integer"}, "uptime": {"type": "number"},
                        "video_late_p99_ms": {"type": "number"},
                        "errors": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }
