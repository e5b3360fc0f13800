"""/api/v1/avatars: list avatars, build one from an uploaded video in the background."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, web

from livedh.avatar.format import check_name, list_avatars
from livedh.config import AppConfig
from livedh.errors import ConflictError, InvalidInputError, PayloadTooLargeError
from livedh.server.avatar_jobs import AvatarJobs
from livedh.server.http import APP_CONFIG, reading_body

routes = web.RouteTableDef()
PREFIX = "/api/v1/avatars"
AVATAR_JOBS = web.AppKey("avatar_jobs", AvatarJobs)
_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_CHUNK = 1 << 20


def _check_name(name: str) -> str:
    if not name:
        raise InvalidInputError("give the avatar a name: form field or query parameter 'name'")
    return check_name(name)


@routes.get(PREFIX)
async def list_all(request: web.Request) -> web.Response:
    config = request.app[APP_CONFIG]
    manifests = await asyncio.get_running_loop().run_in_executor(None, list_avatars, config.avatars_dir)
    return web.json_response(
        {
            "avatars": [m.to_json() for m in manifests],
            "jobs": [j.to_json() for j in request.app[AVATAR_JOBS].all()],
        }
    )


@routes.post(PREFIX)
async def build(request: web.Request) -> web.Response:
    """multipart/form-data with ``name``, optional ``replace`` (true/false) and ``file`` (the
    video); answers 202 with the job, whose progress ``GET /api/v1/avatars/jobs/{id}`` reports.
    The video is checked (a video, long enough) before the answer, so those mistakes are a 400
    at once rather than a failed job."""
    config = request.app[APP_CONFIG]
    jobs = request.app[AVATAR_JOBS]
    limit = config.avatar_build.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise PayloadTooLargeError(f"the video is larger than the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise InvalidInputError("send multipart/form-data with fields 'name' and 'file' (the video)")
    jobs.check_room()  # before reading hundreds of megabytes that could not be built
    fields: dict[str, str] = {"name": request.query.get("name", ""), "replace": "false"}
    upload: Path | None = None
    filename = ""
    try:
        async with reading_body(request):
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file":
                    if upload is not None:
                        raise InvalidInputError("send one 'file' per request")
                    upload = await _save_part(part, jobs, limit)
                    filename = Path(part.filename or "").name[:128]
                elif part.name in ("name", "replace"):
                    fields[part.name] = (await part.text()).strip()
        if upload is None:
            raise InvalidInputError("the form needs a 'file' field holding the video")
        name = _check_name(fields["name"])
        replace = fields["replace"].lower() in ("1", "true", "yes", "on")
        if not replace and (config.avatars_dir / name).exists():
            raise ConflictError(f"avatar {name!r} exists; send replace=true to build it again")
        await asyncio.get_running_loop().run_in_executor(None, _probe, upload, config)
        job = jobs.submit(name, upload, filename)
    except BaseException:
        if upload is not None:
            upload.unlink(missing_ok=True)
        raise
    return web.json_response(
        {"job": job.to_json(), "status_url": f"{PREFIX}/jobs/{job.id}"}, status=202
    )


@routes.get(PREFIX + "/jobs/{job_id}")
async def job_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[AVATAR_JOBS].get(request.match_info["job_id"]).to_json())


@routes.delete(PREFIX + "/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    job = await request.app[AVATAR_JOBS].cancel(request.match_info["job_id"])
    return web.json_response(job.to_json())


async def _save_part(part: BodyPartReader, jobs: AvatarJobs, limit: int) -> Path:
    suffix = Path(part.filename or "").suffix
    path = jobs.new_upload_path(suffix if _SUFFIX_RE.match(suffix) else ".video")
    loop = asyncio.get_running_loop()
    size = 0
    try:
        out: BinaryIO = await loop.run_in_executor(None, open, path, "wb")
        try:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"the video is larger than the limit of {limit} bytes")
                await loop.run_in_executor(None, out.write, chunk)
        finally:
            await loop.run_in_executor(None, out.close)
        if size == 0:
            raise InvalidInputError("the uploaded file is empty")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _probe(path: Path, config: AppConfig) -> None:
    from livedh.avatar.build import BuildParams, probe_video

    c = config.avatar_build
    # the limits are checked from the container and the first frame, before any job starts
    probe_video(
        path,
        BuildParams(
            fps=config.session.fps, min_seconds=c.min_seconds, max_side=c.max_side, model=c.model,
            max_seconds=c.max_seconds, max_input_pixels=c.max_input_pixels, max_frames=c.max_frames,
        ),
    )
