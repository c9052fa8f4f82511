"""MagFlow's services as local processes, started the way its containers start them.

Used by ``run_local.py`` (``make demo-stack``) and by the repository's
``tests/test_deployment.py``. Each service runs its container command - ``herd run -- uvicorn
...`` for an app replica, ``herd run --mode wait -- celery ...`` for worker and beat - with
this folder as working directory (its pyproject.toml's ``[tool.herd]`` names alembic.ini).

To start several services *at the same moment*, each is launched through this file
(``python localstack.py herd run ...``): the launcher imports herd first, says it is ready,
waits on its stdin for ``go``, then runs herd's console-script entry point with the same
arguments (``alembic_herd.cli.main``, what the ``herd`` executable calls), which execs the
service. The process id stays the same throughout, so a SIGTERM sent to it reaches uvicorn
or celery, as in a container.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
READY_PATH = "/api/v1/health/ready"
_READY_VARIABLE = "MAGFLOW_LAUNCH_READY"


# -- the commands (the same as docker-compose.yml and k8s/) -------------------------------


def app_command(port: int) -> list[str]:
    return ["herd", "run", "--", "uvicorn", "--factory", "magflow.api:create_app",
            "--host", "127.0.0.1", "--port", str(port)]


def worker_command(name: str = "worker") -> list[str]:
    # solo pool and no mingle/gossip: one small process (the filesystem broker has no
    # broadcast for mingle/gossip anyway)
    return ["herd", "run", "--mode", "wait", "--", "celery", "-A", "magflow.worker", "worker",
            "--pool", "solo", "--without-mingle", "--without-gossip", "--loglevel", "INFO",
            "--hostname", f"{name}@%h"]


def beat_command(schedule: Path) -> list[str]:
    return ["herd", "run", "--mode", "wait", "--", "celery", "-A", "magflow.worker", "beat",
            "--loglevel", "INFO", "--schedule", str(schedule)]


# -- the broker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    url: str
    folder: str | None = None

    @property
    def kind(self) -> str:
        return "redis" if self.url.startswith("redis") else "filesystem"


def redis_reachable(host: str = "127.0.0.1", port: int = 6379, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def choose_broker(scratch: Path, *, redis_url: str = "redis://127.0.0.1:6379/0",
                  require_redis: bool = False) -> Broker:
    """Redis when it answers; else Celery's filesystem broker in ``scratch`` (no server)."""
    match = re.match(r"redis://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", redis_url)
    host, port = (match.group(1), int(match.group(2) or 6379)) if match else ("127.0.0.1", 6379)
    if redis_reachable(host, port):
        return Broker(redis_url)
    if require_redis:
        raise RuntimeError(f"Redis at {host}:{port} is unreachable and is required here")
    folder = scratch / "broker"
    folder.mkdir(parents=True, exist_ok=True)
    return Broker("filesystem://", str(folder))


def service_env(database_url: str, broker: Broker, *, queue: str, beat_interval: float,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every service: this process's, less anything that would point
    herd or MagFlow elsewhere, plus the stack's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HERD_", "MAGFLOW_", "CELERY_"))
           and k not in ("DATABASE_URL", "REDIS_URL", "ALEMBIC_CONFIG")}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), env.get("PYTHONPATH", "")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker.url,
        "MAGFLOW_QUEUE": queue,
        "MAGFLOW_BEAT_INTERVAL": str(beat_interval),
        "HERD_TIMEOUT": "2m",
        "HERD_LOCK_TIMEOUT": "2m",
    })
    if broker.folder:
        env["CELERY_BROKER_FOLDER"] = broker.folder
    env.update(extra or {})
    return env


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One service process; its stdout and stderr go to ``log``."""

    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    killed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def herd_outcome(self) -> str | None:
        """herd's summary line (``migrated ...``, ``waited ...``, ``database already
        current ...``) once it has handed over to the service, else None."""
        for line in self.text().splitlines():
            match = re.search(r"herd\[[^\]]*\] (.*); starting ", line)
            if match:
                return match.group(1)
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> str:
        """A short description of where the service is."""
        text = self.text()
        if self.proc is not None and self.proc.poll() is not None:
            return f"exited with code {self.proc.returncode}"
        outcome = self.herd_outcome()
        if outcome is None:
            if "this replica migrates" in text:
                return "herd: migrating (holds the lock)"
            if "taking lock" in text or "waiting" in text:
                return "herd: waiting for the schema"
            return "herd: starting"
        if self.port is not None:
            ready = http_json(self.url + READY_PATH)
            if ready is not None and ready[0] == 200:
                return f"ready ({outcome})"
            return f"starting uvicorn ({outcome})"
        if " ready." in text:  # celery worker banner: "celery@host ready."
            return f"consuming tasks ({outcome})"
        if "Sending due task" in text:
            return f"scheduling tasks ({outcome})"
        if "beat: Starting" in text:
            return f"beat started ({outcome})"
        return f"starting ({outcome})"


def launch_together(services: Sequence[Service], env: Mapping[str, str], *,
                    timeout: float = 60.0) -> None:
    """Start every service, hold each at the barrier until all are loaded, release them."""
    started: list[Service] = []
    try:
        for svc in services:
            ready = svc.log.with_suffix(".ready")
            with contextlib.suppress(FileNotFoundError):
                ready.unlink()
            out = svc.log.open("ab")
            try:
                svc.proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), *svc.argv],
                    cwd=HERE, env={**env, _READY_VARIABLE: str(ready)},
                    stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            finally:
                out.close()
            svc.killed = False
            started.append(svc)
        deadline = time.monotonic() + timeout
        for svc in services:
            ready = svc.log.with_suffix(".ready")
            while not ready.exists():
                assert svc.proc is not None
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"{svc.name} exited before the barrier "
                                       f"(code {svc.proc.returncode}):\n{svc.text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{svc.name} did not reach the barrier in {timeout} s")
                time.sleep(0.02)
        for svc in services:  # the barrier opens: one write each, back to back
            assert svc.proc is not None and svc.proc.stdin is not None
            svc.proc.stdin.write(b"go\n")
            svc.proc.stdin.flush()
        for svc in services:
            assert svc.proc is not None and svc.proc.stdin is not None
            svc.proc.stdin.close()
    except BaseException:
        stop(started, timeout=5.0)
        raise


def stop(services: Iterable[Service], *, timeout: float = 30.0) -> None:
    """SIGTERM every running service, then SIGKILL what is still running after ``timeout``
    (``killed`` tells which needed it)."""
    services = [s for s in services if s.proc is not None]
    for svc in services:
        if svc.alive():
            assert svc.proc is not None
            with contextlib.suppress(ProcessLookupError):
                svc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for svc in services:
        assert svc.proc is not None
        try:
            svc.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            svc.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(10)
    for svc in services:  # anything the service started in its session (pool children)
        assert svc.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(svc.proc.pid, signal.SIGKILL)


def http_json(url: str, *, method: str = "GET", body: Any = None,
              timeout: float = 5.0) -> tuple[int, Any] | None:
    """(status, JSON) of one request, or None when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return None


def _launch(argv: list[str]) -> None:
    """The launcher: load herd, report ready, wait for ``go``, run ``herd ARGS...``."""
    if not argv or argv[0] != "herd":
        sys.exit("usage: localstack.py herd ARGS...")
    from alembic_herd import cli  # the heavy imports happen before the barrier

    Path(os.environ.pop(_READY_VARIABLE)).write_text(str(os.getpid()))
    if sys.stdin.readline().strip() != "go":
        sys.exit("localstack launcher: the barrier closed without 'go'")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the service must not inherit the barrier's pipe
    os.close(devnull)
    cli.main(argv[1:])


if __name__ == "__main__":
    _launch(sys.argv[1:])
