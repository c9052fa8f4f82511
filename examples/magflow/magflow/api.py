"""The FastAPI app: users, a product catalogue, orders processed by the worker, and the
health endpoints a load balancer and Kubernetes probe.

    uvicorn --factory magflow.api:create_app      # started as: herd run -- uvicorn ...

* ``GET /api/v1/health/live``  - 200 while the process serves (never touches the database)
* ``GET /api/v1/health/ready`` - 200 only when the database is reachable and at the
  scripts' heads, else 503; JSON with status, current and expected revisions, no secrets
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from alembic_herd.integrations.readiness import ReadinessProbe
from alembic_herd.integrations.starlette import health_router, herd_lifespan

from . import __version__, db
from .settings import Settings

log = logging.getLogger("magflow.api")


class UserIn(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=1, max_length=200)


class User(BaseModel):
    id: int
    email: str
    name: str


class Product(BaseModel):
    id: int
    sku: str
    name: str
    price_cents: int
    stock: int


class OrderIn(BaseModel):
    user_id: int
    sku: str
    quantity: int = Field(gt=0, le=1000)


class Order(BaseModel):
    id: int
    user_id: int
    sku: str
    quantity: int
    status: str
    processed_by: str | None = None
    queued: bool | None = None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    url = settings.require_database_url()
    # expand_only: during a rolling deploy (HERD_EXPAND_ONLY) the contract revisions wait for
    # a Job after the rollout, so they must not keep this pod from becoming Ready
    probe = ReadinessProbe(settings.alembic_config, url=url, allow_ahead=settings.allow_ahead,
                           expand_only=settings.expand_only)

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        yield
        probe.close()
        db.engine(url).dispose()

    lifespan: Any = resources
    if settings.herd_startup != "off":
        # Behind `herd run` the schema is already current and this costs one query; started
        # without it (uvicorn on a laptop), the app still never serves an outdated schema.
        lifespan = herd_lifespan(settings.alembic_config, url=url, mode=settings.herd_startup,
                                 timeout=settings.herd_timeout, allow_ahead=settings.allow_ahead,
                                 expand_only=settings.expand_only,
                                 lifespan=resources)

    app = FastAPI(title="MagFlow", version=__version__, lifespan=lifespan)
    app.include_router(health_router(probe, prefix="/api/v1/health"))
    engine = db.engine(url)

    @app.post("/api/v1/users", response_model=User, status_code=status.HTTP_201_CREATED)
    def create_user(body: UserIn) -> dict[str, Any]:
        try:
            with engine.begin() as conn:
                row = conn.execute(db.users.insert().values(email=body.email, name=body.name)
                                   .returning(db.users.c.id, db.users.c.email,
                                              db.users.c.name)).one()
        except IntegrityError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"a user with email {body.email!r} exists") from exc
        return dict(row._mapping)

    @app.get("/api/v1/users/{user_id}", response_model=User)
    def get_user(user_id: int) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.users.c.id, db.users.c.email, db.users.c.name)
                               .where(db.users.c.id == user_id)).one_or_none()
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
        return dict(row._mapping)

    @app.get("/api/v1/products", response_model=list[Product])
    def list_products() -> list[dict[str, Any]]:
        p = db.products
        with engine.connect() as conn:
            rows = conn.execute(sa.select(p.c.id, p.c.sku, p.c.name, p.c.price_cents,
                                          p.c.stock).order_by(p.c.id)).all()
        return [dict(r._mapping) for r in rows]

    @app.post("/api/v1/orders", response_model=Order, status_code=status.HTTP_202_ACCEPTED)
    def create_order(body: OrderIn) -> dict[str, Any]:
        """Record a pending order; a worker reserves the stock (``process_order``)."""
        with engine.begin() as conn:
            product_id = conn.execute(sa.select(db.products.c.id)
                                      .where(db.products.c.sku == body.sku)).scalar()
            if product_id is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no product {body.sku!r}")
            try:
                order_id = conn.execute(db.orders.insert().values(
                    user_id=body.user_id, product_id=product_id, quantity=body.quantity)
                    .returning(db.orders.c.id)).scalar_one()
            except IntegrityError as exc:
                raise HTTPException(status.HTTP_404_NOT_FOUND,
                                    f"no user {body.user_id}") from exc
        queued = _enqueue("magflow.process_order", order_id)
        return {"id": order_id, "user_id": body.user_id, "sku": body.sku,
                "quantity": body.quantity, "status": "pending", "queued": queued}

    @app.get("/api/v1/orders/{order_id}", response_model=Order)
    def get_order(order_id: int) -> dict[str, Any]:
        o, p = db.orders, db.products
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(o.c.id, o.c.user_id, p.c.sku, o.c.quantity, o.c.status,
                          o.c.processed_by)
                .join_from(o, p, o.c.product_id == p.c.id)
                .where(o.c.id == order_id)).one_or_none()
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no order {order_id}")
        return dict(row._mapping)

    @app.get("/api/v1/heartbeats")
    def heartbeats() -> dict[str, Any]:
        """How many heartbeats the worker recorded (``beat``: scheduled by beat)."""
        h = db.heartbeats
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(h)).scalar_one()
            beat = conn.execute(sa.select(sa.func.count()).select_from(h)
                                .where(h.c.source == "beat")).scalar_one()
            last = conn.execute(sa.select(h.c.id, h.c.source, h.c.worker, h.c.created_at)
                                .order_by(h.c.id.desc()).limit(1)).one_or_none()
        return {"count": total, "beat": beat,
                "last": None if last is None else {**last._mapping,
                                                    "created_at": last.created_at.isoformat()}}

    return app


def _enqueue(task: str, *args: Any) -> bool:
    """Send ``task`` to the worker; False (logged) when the broker cannot take it now."""
    from .worker import app as celery_app

    try:
        celery_app.send_task(task, args=list(args), retry=True,
                             retry_policy={"max_retries": 3, "interval_start": 0.2,
                                           "interval_step": 0.5})
    except Exception:  # the order stays pending; a sweeper or a retry can send it again
        log.exception("could not queue %s%r", task, args)
        return False
    return True
