"""The aiohttp application: built from a config, owns its services, no globals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from livedh.config import AppConfig
from livedh.server import api_v1, avatars_api, legacy, metrics_api, security
from livedh.server.avatar_jobs import AvatarJobs, remove_uploads
from livedh.server.http import APP_CONFIG, cors_middleware, errors_middleware
from livedh.server.services import SERVICES, Services, build_services


def create_app(
    config: AppConfig,
    services_factory: Callable[[AppConfig], Awaitable[Services]] = build_services,
    access: security.Security | None = None,
) -> web.Application:
    """``services_factory`` builds models and engines at start-up (tests pass fakes);
    ``access`` holds keys and rate limits (tests pass one with a fake clock)."""
    app = web.Application(
        # Outermost first: CORS headers go on errors too; access checks see the handler's
        # typed errors (a lookup of an unknown session counts against the caller).
        middlewares=[
            cors_middleware(config.server.cors_origins), errors_middleware,
            security.security_middleware,
        ],
        # Room for the multipart envelope around the largest upload we accept.
        client_max_size=config.server.max_upload_bytes + 64 * 1024,
    )

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        services = await services_factory(config)
        app[SERVICES] = services
        yield
        await services.aclose()

    async def avatar_jobs_ctx(app: web.Application) -> AsyncIterator[None]:
        remove_uploads(config.avatars_dir)
        jobs = AvatarJobs(config.avatars_dir, config.avatar_build, config.session.fps)
        app[avatars_api.AVATAR_JOBS] = jobs
        yield
        await jobs.aclose()

    app[APP_CONFIG] = config
    app[security.SECURITY] = access if access is not None else security.Security(config.server)
    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(avatar_jobs_ctx)
    app.add_routes(legacy.routes)
    app.add_routes(api_v1.routes)
    app.add_routes(avatars_api.routes)
    app.add_routes(security.routes)
    app.add_routes(metrics_api.routes)
    app.on_response_prepare.append(metrics_api.count_rejected)

    index = config.server.web_dir / "index.html"

    async def index_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    app.router.add_get("/", index_page)
    app.router.add_static("/web/", config.server.web_dir, show_index=False)
    return app
