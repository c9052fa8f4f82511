"""The Celery app: the worker processes orders and records heartbeats; beat schedules one
heartbeat every ``MAGFLOW_BEAT_INTERVAL`` seconds.

    celery -A magflow.worker worker     # started as: herd run --mode wait -- celery ...
    celery -A magflow.worker beat

Both wait until the schema is current before they start: ``herd run --mode wait`` in the
container, and again (one query when already current) through
:func:`alembic_herd.integrations.celery.install` for a worker started without ``herd run``.
Neither ever migrates.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import sqlalchemy as sa
from celery import Celery, Task
from sqlalchemy.exc import OperationalError

from alembic_herd.integrations import celery as herd_celery

from . import db
from .settings import Settings

log = logging.getLogger("magflow.worker")

settings = Settings.from_env()

app = Celery("magflow")
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    task_default_queue=settings.queue,
    task_default_exchange=settings.queue,
    task_default_routing_key=settings.queue,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    timezone="UTC",
    beat_schedule={
        "heartbeat": {
            "task": "magflow.record_heartbeat",
            "schedule": settings.beat_interval,
            "args": ("beat",),
        },
    },
)
if settings.broker_url.startswith("filesystem://"):
    # a broker that needs no server: messages are files in a folder every process shares
    # (local runs and tests only; containers use Redis)
    if not settings.broker_folder:
        raise RuntimeError("CELERY_BROKER_URL=filesystem:// needs CELERY_BROKER_FOLDER")
    folder = Path(settings.broker_folder)
    for sub in ("queue", "control", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
    }

if settings.herd_startup != "off":
    herd_celery.install(app, settings.alembic_config, url=settings.database_url,
                        timeout=settings.herd_timeout, allow_ahead=settings.allow_ahead,
                        expand_only=settings.expand_only)


def _engine() -> sa.engine.Engine:
    return db.engine(settings.require_database_url())


def _worker_name(task: Task) -> str:
    return str(task.request.hostname or socket.gethostname())


@app.task(bind=True, name="magflow.record_heartbeat")
def record_heartbeat(self: Task, source: str = "beat") -> int:
    """Write one row to app.heartbeats: proof that beat scheduled and a worker ran it."""
    with _engine().begin() as conn:
        row_id = conn.execute(
            db.heartbeats.insert().values(source=source, worker=_worker_name(self))
            .returning(db.heartbeats.c.id)).scalar_one()
    log.info("heartbeat %s from %s", row_id, source)
    return int(row_id)


@app.task(bind=True, name="magflow.process_order", autoretry_for=(OperationalError,),
          retry_backoff=True, max_retries=5)
def process_order(self: Task, order_id: int) -> str:
    """Reserve stock for a pending order: ``confirmed``, or ``rejected`` when out of stock."""
    orders, products = db.orders, db.products
    with _engine().begin() as conn:
        order = conn.execute(
            sa.select(orders.c.status, orders.c.quantity, orders.c.product_id)
            .where(orders.c.id == order_id).with_for_update()).one_or_none()
        if order is None:
            log.warning("order %s does not exist", order_id)
            return "missing"
        if order.status != "pending":  # a redelivered message: already processed
            return str(order.status)
        reserved = conn.execute(
            sa.update(products)
            .where(products.c.id == order.product_id, products.c.stock >= order.quantity)
            .values(stock=products.c.stock - order.quantity))
        status = "confirmed" if reserved.rowcount == 1 else "rejected"
        conn.execute(sa.update(orders).where(orders.c.id == order_id).values(
            status=status, processed_at=sa.func.now(), processed_by=_worker_name(self)))
    log.info("order %s %s", order_id, status)
    return status
