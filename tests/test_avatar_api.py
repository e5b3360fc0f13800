"""POST /api/v1/avatars: an uploaded video becomes an avatar in a background build process."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from livedh.avatar.video import VideoAvatar
from livedh.config import AppConfig, AvatarBuildConfig, TTSConfig
from livedh.server.app import create_app
from livedh.testing.talking_video import VideoSpec, write_talking_video
from tests.test_server import _fake_services


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    good, _ = write_talking_video(folder / "good.mp4", VideoSpec(seconds=2.0, size=(384, 384)))
    empty, _ = write_talking_video(folder / "empty.mp4", VideoSpec(seconds=2.0, size=(256, 256), faces=0))
    short, _ = write_talking_video(folder / "short.mp4", VideoSpec(seconds=0.5, size=(256, 256)))
    return {"good": good, "empty": empty, "short": short}


@pytest.fixture
async def client(tmp_path):
    config = AppConfig(
        tts=TTSConfig(engine="piper"),
        avatars_dir=tmp_path / "avatars",
        avatar_build=AvatarBuildConfig(min_seconds=1.0, max_side=384, max_upload_bytes=3_000_000),
    )
    app = create_app(config, _fake_services)
    async with TestClient(TestServer(app)) as c:
        yield c


def _form(path, name="me", replace=None) -> FormData:
    form = FormData()
    if name is not None:
        form.add_field("name", name)
    if replace is not None:
        form.add_field("replace", replace)
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="video/mp4")
    return form


async def _wait(client, job_id):
    async with asyncio.timeout(120):
        while True:
            job = await (await client.get(f"/api/v1/avatars/jobs/{job_id}")).json()
            if job["state"] not in ("queued", "running"):
                return job
            await asyncio.sleep(0.2)  # a client polling the status URL, as a browser would


async def test_uploaded_video_builds_an_avatar_in_the_background(client, videos, tmp_path):
    response = await client.post("/api/v1/avatars", data=_form(videos["good"]))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["job"]["name"] == "me" and body["job"]["state"] in ("queued", "running")
    job = await _wait(client, body["job"]["id"])
    assert job["state"] == "done", job
    assert job["summary"]["frames"] == 50 and job["total"] > 0

    listing = await (await client.get("/api/v1/avatars")).json()
    assert [a["name"] for a in listing["avatars"]] == ["me"]
    assert listing["jobs"][0]["id"] == job["id"]
    avatar = VideoAvatar.load(tmp_path / "avatars" / "me", preload=False)
    assert avatar.manifest.model == "ultralight" and avatar.frame_count == 50
    assert avatar.manifest.source == "uploaded video good.mp4"
    # the upload is the job's to delete once built
    assert list((tmp_path / "avatars" / ".uploads").iterdir()) == []

    again = await client.post("/api/v1/avatars", data=_form(videos["good"]))
    assert again.status == 409 and "replace=true" in (await again.json())["msg"]


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("text", 400, "not a video"),
        ("short", 400, "at least"),
        ("no-name", 400, "name"),
        ("bad-name", 400, "must be"),
        ("not-multipart", 400, "multipart"),
        ("too-large", 413, "limit"),
    ],
)
async def test_bad_uploads_are_refused_at_once_with_a_message(client, videos, tmp_path, kind, status, words):
    if kind == "text":
        junk = tmp_path / "notes.mp4"
        junk.write_text("these are my notes, not a video\n" * 10)
        response = await client.post("/api/v1/avatars", data=_form(junk))
    elif kind == "short":
        response = await client.post("/api/v1/avatars", data=_form(videos["short"]))
    elif kind == "no-name":
        response = await client.post("/api/v1/avatars", data=_form(videos["good"], name=None))
    elif kind == "bad-name":
        response = await client.post("/api/v1/avatars", data=_form(videos["good"], name="../etc"))
    elif kind == "not-multipart":
        response = await client.post("/api/v1/avatars", json={"name": "me"})
    else:
        big = tmp_path / "big.mp4"
        big.write_bytes(b"\0" * 3_100_000)
        response = await client.post("/api/v1/avatars", data=_form(big))
    body = await response.json()
    assert response.status == status, body
    assert words in body["msg"].lower(), body
    uploads = tmp_path / "avatars" / ".uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert not (tmp_path / "avatars" / "me").exists()


async def test_a_build_that_fails_reports_why_and_leaves_no_avatar(client, videos, tmp_path):
    response = await client.post("/api/v1/avatars", data=_form(videos["empty"], name="nobody"))
    assert response.status == 202
    job = await _wait(client, (await response.json())["job"]["id"])
    assert job["state"] == "failed"
    assert "no face" in job["error"]["msg"].lower(), job
    assert not (tmp_path / "avatars" / "nobody").exists()
    # the server is still fine
    assert (await client.get("/api/v1/health")).status == 200


async def test_a_running_build_can_be_cancelled(client, videos, tmp_path):
    response = await client.post("/api/v1/avatars", data=_form(videos["good"], name="later"))
    job_id = (await response.json())["job"]["id"]
    cancelled = await (await client.delete(f"/api/v1/avatars/jobs/{job_id}")).json()
    assert cancelled["state"] == "cancelled"
    assert not (tmp_path / "avatars" / "later").exists()
    missing = await client.get("/api/v1/avatars/jobs/nope")
    assert missing.status == 404
