"""Hostile HTTP input gets a 4xx JSON answer (or a quiet close), never a 5xx or a traceback."""

import asyncio
import logging
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from livedh.config import AppConfig, ServerConfig, TTSConfig
from livedh.errors import InvalidInputError
from livedh.server.app import create_app
from livedh.server.http import parse_json, server_options
from livedh.session.manager import MAX_SESSION_ID, parse_session_id
from tests.test_server import _fake_services, _offer_sdp


def _config(**server) -> AppConfig:
    server.setdefault("max_sessions", 2)
    server.setdefault("max_upload_bytes", 200_000)
    return AppConfig(server=ServerConfig(**server), tts=TTSConfig(engine="piper"))


@pytest.fixture
async def client(tmp_path):
    config = _config()
    config.avatars_dir = tmp_path
    async with TestClient(TestServer(create_app(config, _fake_services))) as c:
        yield c


@pytest.fixture(scope="module")
def offer_sdp():
    return asyncio.run(_offer_sdp())


async def _status(resp, *allowed: int) -> dict:
    assert resp.status in allowed, (resp.status, await resp.text())
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == -1 and body["msg"] and "Traceback" not in body["msg"]
    return body


def _raw(body: bytes, content_type: str = "application/json") -> dict:
    return {"data": body, "headers": {"Content-Type": content_type}}


async def test_hostile_json_bodies_are_400s(client):
    bodies = [
        b"[" * 100_000,  # RecursionError in the parser
        b'{"sessionid": ' + b"1" * 5000 + b"}",  # past int()'s digit limit
        b'{"sessionid": NaN}', b'{"sessionid": Infinity}', b'{"sessionid": -Infinity}',
        b'{"sessionid": 1e400}',  # float overflow to inf
        b"\xff\xfe{}",  # not UTF-8
        b'{"a": 1',
    ]
    for body in bodies:
        for path in ("/human", "/offer", "/interrupt_talk", "/api/v1/sessions"):
            await _status(await client.post(path, **_raw(body)), 400)


async def test_unknown_charset_is_415(client):
    for charset in ("foobar", "utf-16", "x" * 300):
        ctype = f"application/json; charset={charset}"
        await _status(await client.post("/human", **_raw(b'{"sessionid": 1}', ctype)), 415)


@pytest.mark.parametrize("value", [
    "Infinity", "1e400", "1.5", "true", "false", "null", "[]", "{}", '""', '"abc"', '"-1"',
    "1" * 5000, '"' + "1" * 5000 + '"', "-1", str(MAX_SESSION_ID + 1), str(2**64), "1e300",
])
async def test_bad_session_ids_are_400_or_404(client, value):
    resp = await client.post("/human", **_raw(f'{{"sessionid": {value}, "text": "hi"}}'.encode()))
    await _status(resp, 400, 404)
    resp = await client.post("/is_speaking", **_raw(f'{{"sessionid": {value}}}'.encode()))
    await _status(resp, 400, 404)


@pytest.mark.parametrize("path_id", ["Infinity", "1e400", "1.5", "-1", "9" * 5000, "0x10", "%20"])
async def test_bad_session_ids_in_paths_are_400(client, path_id):
    await _status(await client.get(f"/api/v1/sessions/{path_id}"), 400, 404)
    await _status(await client.post(f"/api/v1/sessions/{path_id}/interrupt"), 400, 404)


async def test_unknown_ids_in_range_are_404(client):
    for sid in (0, 1, MAX_SESSION_ID):
        await _status(await client.post("/is_speaking", json={"sessionid": sid}), 404)
        await _status(await client.get(f"/api/v1/sessions/{sid}"), 404)


def test_parse_session_id_accepts_ids_and_their_digits():
    assert parse_session_id(123) == 123
    assert parse_session_id("123") == 123
    assert parse_session_id(123.0) == 123
    assert parse_session_id(MAX_SESSION_ID) == MAX_SESSION_ID
    for bad in (True, None, 1.5, float("inf"), float("nan"), "", " 1", "1" * 17, "١٢", -1,
                MAX_SESSION_ID + 1, [1], {"a": 1}):
        with pytest.raises(InvalidInputError):
            parse_session_id(bad)


def test_parse_json_is_strict():
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    for bad in (b"NaN", b"[Infinity]", b"1e999", b"1" * 30, b"[" * 50_000, b"\xc3("):
        with pytest.raises(InvalidInputError):
            parse_json(bad)


async def test_unknown_fields_are_refused_by_api_v1_and_ignored_by_livetalking(client, offer_sdp):
    await _status(await client.post("/api/v1/sessions",
                                    json={"sdp": offer_sdp, "type": "offer", "colour": "red"}), 400)
    await _status(await client.post("/api/v1/sessions",
                                    json={"sdp": offer_sdp, "type": "offer", "tts": {"pitch": 2}}), 400)
    resp = await client.post("/offer", json={"sdp": offer_sdp, "type": "offer", "colour": "red"})
    assert resp.status == 200, await resp.text()
    sid = (await resp.json())["sessionid"]
    await _status(await client.post(f"/api/v1/sessions/{sid}/say", json={"text": "hi", "x": 1}), 400)
    await _status(await client.patch(f"/api/v1/sessions/{sid}", json={"voice": "a"}), 400)
    resp = await client.post("/human", json={"sessionid": sid, "text": "hi", "extra": [1]})
    assert resp.status == 200


def _multipart(disposition: bytes, boundary: bytes = b"xx") -> dict:
    body = b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + \
        b"\r\n\r\nRIFF....\r\n--" + boundary + b"--\r\n"
    return _raw(body, "multipart/form-data; boundary=" + boundary.decode())


@pytest.mark.parametrize("kwargs", [
    _multipart(b'name="fi\x7fle"; filename="a.wav"'),  # DEL in the part name
    _multipart(b'name="file"; filename="a\x7f.wav"'),  # DEL in the file name
    _multipart(b'name="file"; filename="a\x01\x1b.wav"'),  # other control bytes
    _multipart(b'name="file"; filename="a.wav"', boundary=b"yy") | {"data": b"garbage"},
    _raw(b"garbage", "multipart/form-data"),  # no boundary
    _raw(b"--xx\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",  # never ends
         "multipart/form-data; boundary=xx"),
    _raw(b"--xx\r\n" + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\nabc\r\n--xx--\r\n",
         "multipart/form-data; boundary=xx"),
])
async def test_malformed_multipart_is_400(client, kwargs):
    for path in ("/humanaudio", "/api/v1/avatars"):
        await _status(await client.post(path, **kwargs), 400, 404, 413, 415)


async def test_a_wrong_method_is_405_with_allow(client):
    for method, path, allowed in [("PUT", "/human", "POST"), ("GET", "/offer", "POST"),
                                  ("POST", "/api/v1/sessions/1", "DELETE,GET,HEAD,PATCH")]:
        resp = await client.request(method, path)
        body = await _status(resp, 405)
        assert resp.headers["Allow"] == allowed and body["error"] == "method_not_allowed"
    await _status(await client.get("/no/such/path"), 404)


async def test_internal_errors_say_nothing(tmp_path, caplog, monkeypatch):
    async def boom(request):
        raise RuntimeError("/secret/path/model.onnx at http://10.0.0.5:8000")

    from livedh.server import security

    monkeypatch.setitem(security.ROUTE_POLICIES, ("GET", "/boom"), security._PUBLIC)
    app = create_app(_config(), _fake_services)
    app.router.add_get("/boom", boom)  # fails like a bug would
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="livedh.server"):
            resp = await client.get("/boom")
        body = await _status(resp, 500)
    assert body == {"code": -1, "error": "internal_error", "msg": "internal server error",
                    "retryable": True}
    assert any("event=http_error" in r.getMessage() for r in caplog.records)


@asynccontextmanager
async def _served(config: AppConfig):
    """The app on a real socket, with the server options `livedh serve` uses (no test client
    quirks: TestServer cancels handlers of dropped clients, production does not)."""
    runner = web.AppRunner(create_app(config, _fake_services), **server_options(config.server))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):  # a guard: the server closes the connection long before
        return await reader.read()


async def test_a_stalled_body_gets_408_and_a_close(tmp_path):
    config = _config(body_timeout=0.2)
    config.avatars_dir = tmp_path
    async with _served(config) as port:
        for path, head in [
            ("/human", b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sessionid\""),
            ("/humanaudio", b"Content-Type: multipart/form-data; boundary=xx\r\n"
                            b"Content-Length: 1000\r\n\r\n--xx\r\nContent-Disposition: form-data; "),
        ]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode() + head)
            await writer.drain()
            answer = await _read_all(reader)  # EOF: the server closed it
            writer.close()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"request_timeout"' in answer and b"0.2 s" in answer


async def test_a_connection_that_never_finishes_its_headers_is_closed(tmp_path):
    config = _config(idle_timeout=0.3)
    config.avatars_dir = tmp_path
    async with _served(config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /human HTTP/1.1\r\nHost: x\r\nContent-")
        await writer.drain()
        assert await _read_all(reader) == b""  # closed without an answer
        writer.close()


def _disconnects(caplog) -> int:
    return sum("event=client_disconnected" in r.getMessage() for r in caplog.records)


async def test_a_client_that_drops_mid_body_is_a_quiet_info_line(tmp_path, caplog):
    config = _config()
    config.avatars_dir = tmp_path
    async with _served(config) as port:
        with caplog.at_level(logging.INFO, logger="livedh.server"):
            for path, ctype in [("/human", b"application/json"),
                                ("/humanaudio", b"multipart/form-data; boundary=xx")]:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"Content-Type: " + ctype
                             + b"\r\nContent-Length: 5000\r\n\r\n--xx\r\n{\"sessionid\": 1")
                await writer.drain()
                await asyncio.sleep(0.05)  # the handler is reading the body
                writer.transport.abort()
                async with asyncio.timeout(10):  # a guard, not a measurement
                    while _disconnects(caplog) < (1 if path == "/human" else 2):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
    mine = [r for r in caplog.records if r.name == "livedh.server"]
    assert not [r for r in mine if r.levelno >= logging.WARNING], [r.getMessage() for r in mine]
    assert all(r.exc_info is None for r in mine)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # aiohttp's own logs too


async def test_malformed_http_framing_is_a_400_without_a_traceback(tmp_path, caplog):
    config = _config()
    config.avatars_dir = tmp_path
    async with _served(config) as port:
        with caplog.at_level(logging.INFO):
            for body in (b"5\r\n{\"a\":\r\nZZ\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /human HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + body)
                await writer.drain()
                assert (await _read_all(reader)).startswith(b"HTTP/1.0 400")
                writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert sum("event=bad_http_request" in r.getMessage() for r in caplog.records) == 2
