"""OpenAPI 3.1 description of /api/v1 and of the LiveTalking-compatible routes.

Exact on purpose: the limits are the server's own (from the config), /api/v1 bodies have
``additionalProperties: false`` (the handlers refuse unknown fields), LiveTalking bodies say
``additionalProperties: true`` (its clients send extra fields, which are ignored), and every
error status a route can answer is listed. tests/test_schemathesis.py holds the server to it.
"""

from __future__ import annotations

from typing import Any

from livedh import __version__
from livedh.avatar.actions import MAX_ACTION_CHARS
from livedh.config import AppConfig
from livedh.server.http import MAX_SDP_CHARS
from livedh.session.manager import MAX_SESSION_ID

_ERROR = {"$ref": "#/components/schemas/Error"}
_OK = {"$ref": "#/components/schemas/Ok"}
_SESSION = {"$ref": "#/components/schemas/Session"}
_JOB = {"$ref": "#/components/schemas/Job"}
_JSON = "application/json"
_FORM = "multipart/form-data"
_ERROR_TEXT = {
    "400": "invalid input", "401": "an API key or session token is needed",
    "403": "not allowed from this address", "404": "no such session or job",
    "408": "the body did not arrive in time", "409": "conflicts with the current state",
    "413": "the body or upload is too large", "415": "unsupported content type or media",
    "429": "rate limited (see Retry-After)", "501": "not supported", "503": "the server is full",
}
# Error statuses by what a route does (see livedh/server/security.py for who may call what).
_BODY = ("400", "408", "413", "415")  # reads a body
_SESSION_ROUTE = ("400", "404", "429")  # looks a session up by id
_ADMIN = ("401", "403")  # an API key, or loopback when none is configured
_OFFER_ROUTE = ("401", "429", "503")  # --private, per-address rate limit, capacity


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), *, extra: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


def _op(summary: str, ok: dict[str, Any] | None, *errors: tuple[str, ...] | str,
        body: dict[str, Any] | None = None, kind: str = _JSON, status: str = "200",
        ok_type: str = _JSON) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK"}
    if ok is not None:
        success["content"] = {ok_type: {"schema": ok}}
    responses: dict[str, Any] = {status: success}
    codes = sorted({c for group in errors for c in ((group,) if isinstance(group, str) else group)})
    for code in codes:
        responses[code] = {"description": _ERROR_TEXT[code], "content": {_JSON: {"schema": _ERROR}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {kind: {"schema": body}}}
    return op


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _schemas(config: AppConfig) -> dict[str, Any]:
    sid = {"type": "integer", "minimum": 0, "maximum": MAX_SESSION_ID}
    text = {"type": "string", "minLength": 1, "maxLength": config.session.max_text_chars,
            "pattern": r"\S", "description": "not only whitespace"}
    nullable_str = {"type": ["string", "null"]}
    return {
        "SessionId": sid,
        "Text": text,
        "Error": _obj({"code": {"const": -1}, "error": {"type": "string"}, "msg": {"type": "string"},
                       "retryable": {"type": "boolean"}}, ("code", "error", "msg", "retryable")),
        "Ok": _obj({"code": {"const": 0}, "msg": {"type": "string"}}, ("code", "msg")),
        "TTSChoice": _obj({
            "engine": {"enum": ["piper", "espeak", "edge", None],
                       "description": "an engine the operator enabled (GET /api/v1/tts/engines)"},
            "voice": {"type": ["string", "null"], "maxLength": 100},
        }),
        "Answer": _obj({"sdp": {"type": "string"}, "type": {"const": "answer"},
                        "sessionid": {"$ref": "#/components/schemas/SessionId"}},
                       ("sdp", "type", "sessionid")),
        "Session": _obj({
            "sessionid": {"$ref": "#/components/schemas/SessionId"},
            "connection": {"type": "string"}, "state": {"type": "string"},
            "speaking": {"type": "boolean"}, "queued": {"type": "integer", "minimum": 0},
            "tts_engine": {"type": "string"}, "tts_voice": nullable_str,
            "frames_sent": {"type": "integer", "minimum": 0},
            "video_late_p99_ms": {"type": "number"}, "uptime": {"type": "number"},
            "errors": {"type": "array", "items": {"type": "object"}},
            "actions": {"type": "array", "items": {"type": "string"},
                        "description": "the avatar's actions (POST .../action), manifest order"},
        }, ("sessionid", "connection", "state", "speaking", "queued", "tts_engine", "tts_voice",
            "frames_sent", "video_late_p99_ms", "uptime", "errors", "actions")),
        "Job": _obj({
            "id": {"type": "string"}, "name": {"type": "string"},
            "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
            "step": nullable_str, "done": {"type": "integer"}, "total": {"type": "integer"},
            "error": {"type": ["object", "null"]}, "summary": {"type": ["object", "null"]},
            "created": {"type": "number"}, "finished": {"type": ["number", "null"]},
        }, ("id", "name", "state", "step", "done", "total", "error", "summary", "created", "finished")),
    }


def _offer_body(*, strict: bool) -> dict[str, Any]:
    return _obj({
        "sdp": {"type": "string", "maxLength": MAX_SDP_CHARS, "description": "the WebRTC offer"},
        "type": {"const": "offer"},
        "tts": {"$ref": "#/components/schemas/TTSChoice"},
        "token": {"type": "string", "maxLength": 512,
                  "description": "a session token, on a --private server (POST /api/v1/tokens)"},
    }, ("sdp", "type"), extra=not strict)


def _session_paths() -> dict[str, Any]:
    sid_param = [_path_param("sessionid", {"$ref": "#/components/schemas/SessionId"})]
    say = _obj({"text": {"$ref": "#/components/schemas/Text"},
                "mode": {"enum": ["echo", "chat"], "default": "echo"},
                "interrupt": {"type": "boolean", "default": False}}, ("text",))
    audio = _obj({"file": {"type": "string", "format": "binary"}}, ("file",), extra=True)
    prefix = "/api/v1/sessions/{sessionid}"
    return {
        "/api/v1/sessions": {
            "get": _op("List sessions (admin)", _obj({"sessions": {"type": "array", "items": _SESSION}},
                                                     ("sessions",)), _ADMIN),
            "post": _op("Open a session from a WebRTC offer",
                        _obj({"sessionid": {"$ref": "#/components/schemas/SessionId"},
                              "sdp": {"type": "string"}, "type": {"const": "answer"}},
                             ("sessionid", "sdp", "type")),
                        _BODY, _OFFER_ROUTE, body=_offer_body(strict=True), status="201"),
        },
        prefix: {
            "parameters": sid_param,
            "get": _op("Session state", _SESSION, _SESSION_ROUTE),
            "patch": _op("Change the session's TTS engine or voice", _SESSION, _SESSION_ROUTE, _BODY,
                         body=_obj({"tts": {"$ref": "#/components/schemas/TTSChoice"}})),
            "delete": _op("Close the session", _OK, _SESSION_ROUTE),
        },
        prefix + "/say": {
            "parameters": sid_param,
            "post": _op("Speak text (echo) or answer it (chat)", _OK, _SESSION_ROUTE, _BODY,
                        ("409", "503"), body=say),
        },
        prefix + "/audio": {
            "parameters": sid_param,
            "post": _op("Speak an uploaded recording (wav, mp3, ogg, flac); other form fields are "
                        "ignored", _OK, _SESSION_ROUTE, _BODY, body=audio, kind=_FORM),
        },
        prefix + "/action": {
            "parameters": sid_param,
            "post": _op("Play one of the avatar's actions now (a 400 lists them; docs/avatars.md)",
                        _OK, _SESSION_ROUTE, _BODY,
                        body=_obj({"name": {"type": "string", "minLength": 1,
                                            "maxLength": MAX_ACTION_CHARS}}, ("name",))),
        },
        prefix + "/interrupt": {
            "parameters": sid_param,
            "post": _op("Stop the current speech everywhere in the pipeline", _OK, _SESSION_ROUTE),
        },
    }


def _avatar_paths() -> dict[str, Any]:
    name = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
    upload = _obj({"name": name, "replace": {"type": "boolean"},
                   "file": {"type": "string", "format": "binary"}}, ("file",), extra=True)
    job_param = [_path_param("job_id", {"type": "string", "maxLength": 64})]
    accepted = _obj({"job": _JOB, "status_url": {"type": "string"}}, ("job", "status_url"))
    return {
        "/api/v1/avatars": {
            "get": _op("Avatars on disk and build jobs (admin)",
                       _obj({"avatars": {"type": "array", "items": {"type": "object"}},
                             "jobs": {"type": "array", "items": _JOB}}, ("avatars", "jobs")), _ADMIN),
            "post": {
                **_op("Build an avatar from an uploaded video (admin, background job); the name "
                      "comes from the form or the query", accepted,
                      _ADMIN, _BODY, ("409", "429"), body=upload, kind=_FORM, status="202"),
                "parameters": [{"name": "name", "in": "query", "required": False, "schema": name}],
            },
        },
        "/api/v1/avatars/jobs/{job_id}": {
            "parameters": job_param,
            "get": _op("Progress of a build job (admin)", _JOB, _ADMIN, "404"),
            "delete": _op("Cancel a build job (admin)", _JOB, _ADMIN, "404"),
        },
    }


def _livetalking_paths() -> dict[str, Any]:
    sid = {"$ref": "#/components/schemas/SessionId"}
    by_id = _obj({"sessionid": sid}, ("sessionid",), extra=True)
    human = _obj({"sessionid": sid, "text": {"$ref": "#/components/schemas/Text"},
                  "type": {"enum": ["echo", "chat"], "default": "echo"},
                  "interrupt": {"type": "boolean", "default": False}},
                 ("sessionid", "text"), extra=True)
    upload = _obj({"sessionid": sid, "file": {"type": "string", "format": "binary"}},
                  ("sessionid", "file"), extra=True)
    speaking = _obj({"code": {"const": 0}, "data": {"type": "boolean"}}, ("code", "data"))
    audiotype = _obj({"sessionid": sid, "audiotype": {"type": "integer", "minimum": 0},
                      "reinit": {"type": "boolean", "default": True}},
                     ("sessionid", "audiotype"), extra=True)
    return {
        "/offer": {"post": _op("LiveTalking: open a session", {"$ref": "#/components/schemas/Answer"},
                               _BODY, _OFFER_ROUTE, body=_offer_body(strict=False))},
        "/human": {"post": _op("LiveTalking: speak or chat", _OK, _SESSION_ROUTE, _BODY,
                               ("409", "503"), body=human)},
        "/humanaudio": {"post": _op("LiveTalking: speak an uploaded recording", _OK, _SESSION_ROUTE,
                                    _BODY, body=upload, kind=_FORM)},
        "/interrupt_talk": {"post": _op("LiveTalking: interrupt", _OK, _SESSION_ROUTE, _BODY,
                                        body=by_id)},
        "/is_speaking": {"post": _op("LiveTalking: is the avatar speaking", speaking,
                                     _SESSION_ROUTE, _BODY, body=by_id)},
        "/set_audiotype": {"post": _op("LiveTalking: custom states as actions: audiotype 0 or 1 = "
                                       "plain motion, 2, 3, ... = the avatar's actions in order",
                                       _OK, _SESSION_ROUTE, _BODY, body=audiotype)},
        "/record": {"post": _op("LiveTalking: recording (not supported; admin)", None, _ADMIN, "501")},
    }


def _public_paths() -> dict[str, Any]:
    health = _obj({
        "status": {"const": "ok"}, "version": {"type": "string"},
        "sessions": {"type": "integer"}, "max_sessions": {"type": "integer"},
        "model": {"type": "string"}, "runtime": {"type": "object"},
    }, ("status", "version", "sessions", "max_sessions", "model", "runtime"), extra=True)
    avatar = _obj({"name": {"type": "string"}, "model": {"type": "string"},
                   "width": {"type": "integer"}, "height": {"type": "integer"},
                   "fps": {"type": "integer"},
                   "mouth_box": {"type": ["array", "null"], "items": {"type": "integer"}},
                   "actions": {"type": "array", "items": {"type": "string"}}},
                  ("name", "model", "width", "height", "fps", "mouth_box", "actions"))
    engine = _obj({"name": {"type": "string"}, "usable": {"type": "boolean"}}, ("name", "usable"),
                  extra=True)
    return {
        "/api/v1/health": {"get": _op("Server health", health)},
        "/api/v1/openapi.json": {"get": _op("This document", {"type": "object"})},
        "/api/v1/avatar": {"get": _op("The avatar being streamed (size, mouth box)", avatar)},
        "/api/v1/tts/engines": {"get": _op("TTS engines a client may choose, and their voices",
                                           _obj({"engines": {"type": "array", "items": engine}},
                                                ("engines",)))},
        "/metrics": {"get": _op("Prometheus metrics (admin)", {"type": "string"}, _ADMIN,
                                ok_type="text/plain")},
        "/api/v1/tokens": {"post": _token_op()},
    }


def _token_op() -> dict[str, Any]:
    """POST /api/v1/tokens (admin): a single-use session token for a --private server."""
    op = _op("Mint a single-use session token (docs/security.md)",
             _obj({"token": {"type": "string"}, "expires_in": {"type": "number"}},
                  ("token", "expires_in")),
             _ADMIN, _BODY, "409",
             body=_obj({"ttl": {"type": "number", "minimum": 1, "maximum": 3600}}))
    op["requestBody"]["required"] = False
    op["security"] = [{"bearerAuth": []}]
    return op


def openapi_document(config: AppConfig | None = None) -> dict[str, Any]:
    config = config if config is not None else AppConfig()
    return {
        "openapi": "3.1.0",
        "info": {"title": "livedh", "version": __version__,
                 "description": "Real-time digital human server. Errors are JSON "
                                "{code: -1, error, msg, retryable}; a wrong method is a 405 "
                                "with an Allow header."},
        "paths": {**_public_paths(), **_session_paths(), **_avatar_paths(), **_livetalking_paths()},
        "components": {"schemas": _schemas(config),
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
