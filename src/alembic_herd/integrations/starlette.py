"""Starlette and FastAPI: health routes and a start-up that waits for the schema.

::

    from fastapi import FastAPI
    from alembic_herd.integrations.readiness import ReadinessProbe
    from alembic_herd.integrations.starlette import health_router, herd_lifespan

    probe = ReadinessProbe("alembic.ini", url=DATABASE_URL)
    app = FastAPI(lifespan=herd_lifespan("alembic.ini", url=DATABASE_URL, mode="wait"))
    app.include_router(health_router(probe))   # GET /api/v1/health/live and /ready

``herd_lifespan`` runs :func:`alembic_herd.wait_until_current` (``mode="wait"``) or
:func:`alembic_herd.upgrade` (``mode="auto"``) in a worker thread while the application
starts: the event loop is never blocked and never nested (an async env.py runs its own
``asyncio.run`` in that thread). The server accepts requests only once the schema is
current; a failure stops the start-up with herd's one-line message.

Needs ``pip install 'alembic-herd[starlette]'`` (FastAPI for :func:`health_router`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from alembic.config import Config
from sqlalchemy.engine import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import upgrade, wait_until_current
from .._database import mask_text
from .._outcome import Outcome
from ..errors import HerdError
from .readiness import ReadinessProbe, run_in_thread

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["health_router", "health_routes", "herd_lifespan", "liveness_route",
           "readiness_route"]

log = logging.getLogger("alembic_herd.starlette")

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


# -- routes -------------------------------------------------------------------------------


def readiness_endpoint(probe: ReadinessProbe) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering the probe's JSON with 200 (ready) or 503 (not ready)."""

    async def ready(request: Request) -> Response:
        result = await probe.aprobe()
        return JSONResponse(result, status_code=probe.http_status(result),
                            headers={"cache-control": "no-store"})

    return ready


async def _live(request: Request) -> Response:
    return JSONResponse({"status": "alive"}, headers={"cache-control": "no-store"})


def readiness_route(probe: ReadinessProbe, path: str = "/ready", *,
                    name: str = "ready") -> Route:
    """A Starlette ``Route`` for the readiness endpoint (GET and HEAD)."""
    return Route(path, readiness_endpoint(probe), methods=["GET"], name=name)


def liveness_route(path: str = "/live", *, name: str = "live") -> Route:
    """A Starlette ``Route`` that answers 200 while the process serves requests.

    Liveness never looks at the database: a database outage must not get every replica
    restarted, only taken out of the load balancer (readiness).
    """
    return Route(path, _live, methods=["GET"], name=name)


def health_routes(probe: ReadinessProbe, prefix: str = "/api/v1/health") -> list[Route]:
    """``<prefix>/live`` and ``<prefix>/ready`` as plain Starlette routes."""
    prefix = prefix.rstrip("/")
    return [liveness_route(f"{prefix}/live"), readiness_route(probe, f"{prefix}/ready")]


def health_router(probe: ReadinessProbe, prefix: str = "/api/v1/health", *,
                  tags: list[str] | None = None) -> APIRouter:
    """A FastAPI ``APIRouter`` with ``GET <prefix>/live`` and ``GET <prefix>/ready``."""
    try:
        from fastapi import APIRouter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("health_router needs FastAPI (pip install fastapi); with plain "
                          "Starlette use health_routes()") from exc
    router = APIRouter(prefix=prefix.rstrip("/"), tags=list(tags or ["health"]))
    router.add_api_route(
        "/live", _live, methods=["GET"], name="live",
        summary="Liveness: the process serves requests (never looks at the database)")
    router.add_api_route(
        "/ready", readiness_endpoint(probe), methods=["GET"], name="ready",
        summary="Readiness: the database is reachable and at the scripts' heads",
        responses={503: {"description": "not ready: database unreachable, migrations "
                                        "pending or the database ahead of this code"}})
    return router


# -- start-up -----------------------------------------------------------------------------


def herd_lifespan(
    config: Config | str | os.PathLike[str],
    *,
    mode: Literal["wait", "auto"] = "wait",
    url: str | URL | None = None,
    target: str = "head",
    timeout: float | timedelta | str = 600.0,
    lock_timeout: float | timedelta | str = 600.0,
    allow_ahead: bool = False,
    lifespan: Lifespan | None = None,
    **options: Any,
) -> Lifespan:
    """A lifespan that brings the schema current (``auto``) or waits for it (``wait``)
    before the application serves, then enters ``lifespan`` (the application's own) if
    given. ``options`` go to :func:`alembic_herd.upgrade` / :func:`wait_until_current`.
    """
    if mode not in ("wait", "auto"):
        raise ValueError(f"herd_lifespan mode must be 'wait' or 'auto', not {mode!r}")
    if mode == "wait":
        call = functools.partial(wait_until_current, config, url=url, target=target,
                                 timeout=timeout, allow_ahead=allow_ahead, **options)
    else:
        call = functools.partial(upgrade, config, url=url, target=target,
                                 lock_timeout=lock_timeout, allow_ahead=allow_ahead, **options)

    @asynccontextmanager
    async def herd_startup(app: Any) -> AsyncIterator[Any]:
        log.info("alembic-herd: %s before serving", "waiting for the schema to be current"
                 if mode == "wait" else "bringing the schema current")
        try:
            outcome: Outcome = await run_in_thread(call)
        except HerdError as exc:
            log.critical("alembic-herd: %s; not serving", mask_text(str(exc)))
            raise
        log.info("alembic-herd: %s; serving", mask_text(outcome.describe()))
        if lifespan is None:
            yield None
            return
        async with lifespan(app) as state:
            yield state

    return herd_startup
