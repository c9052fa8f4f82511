"""Real servers and real network faults for the fault suite.

* :func:`fault_server` - a PostgreSQL server of the suite's own (the shared bootstrap,
  :class:`alembic_herd._embedded.EmbeddedPostgres`): TCP on a free loopback port with
  password (SCRAM) authentication, trust on its Unix socket for the suite's admin
  connection; it can be restarted, and started with settings such as ``max_connections``.
* :class:`PgBouncer` - PgBouncer (the Debian package, ``.ci/run`` installs it) in front of a
  server, in transaction pooling mode, on a free loopback port.
* :class:`Proxy` - an asyncio TCP proxy on loopback between a replica and the server that
  can FREEZE (stop forwarding, keep both sockets open) or DROP (abort every connection).
* :class:`Partition` - a network namespace joined to this host by a veth link: a process
  started inside reaches the server only over the link, and :meth:`Partition.cut` takes the
  link down, so packets vanish without a FIN or RST - a real network partition, the case
  TCP keepalives exist for (a userspace proxy cannot fake it: its sockets answer probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from alembic_herd import _embedded
from alembic_herd._embedded import SERVER_USER, EmbeddedPostgres

free_port = _embedded.free_port  # the scenarios take it from here
BOUND = 60.0  # seconds: a bound on waiting for what must happen, never a measurement


def wait_port(host: str, port: int, timeout: float = BOUND) -> None:
    until = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > until:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")
        time.sleep(0.05)


@contextlib.contextmanager
def fault_server(*, settings: dict[str, str] | None = None,
                 listen: tuple[str, ...] = ("127.0.0.1",)) -> Iterator[EmbeddedPostgres]:
    """A server of the suite's own (the shared embedded bootstrap), started; it also takes
    password logins from the partition namespaces' addresses (:class:`Partition`)."""
    server = EmbeddedPostgres(settings=settings, listen=listen)
    server.allow("host all all 10.213.0.0/16 scram-sha-256")
    with server:
        yield server


class PgBouncer:
    """PgBouncer in transaction pooling mode on a free loopback port, in front of
    ``host:port``; users and passwords in its own auth file (trust for its clients)."""

    def __init__(self, host: str, port: int, users: dict[str, str]) -> None:
        self.exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.root = Path(tempfile.mkdtemp(prefix="herd-pgbouncer-"))
        self.port = free_port()
        self.log = self.root / "pgbouncer.log"
        userlist = "".join(f'"{u}" "{p}"\n' for u, p in users.items())
        (self.root / "users.txt").write_text(userlist)
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 20\n"
            "max_client_conn = 200\n"
            f"logfile = {self.log}\n"
            "ignore_startup_parameters = extra_float_digits\n")
        # pgbouncer refuses to run as root: the server package's user, or the wheel's
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else SERVER_USER
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        (self.root / "users.txt").chmod(0o600)
        self.proc = subprocess.Popen([self.exe, str(self.root / "pgbouncer.ini")],
                                     user=self.user, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.port)

    def url(self, user: str, password: str, database: str) -> URL:
        return URL.create("postgresql+psycopg", username=user, password=password,
                          host="127.0.0.1", port=self.port, database=database)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class Proxy:
    """A TCP proxy on 127.0.0.1 (an asyncio loop in a thread) in front of ``host:port``.

    ``freeze()`` stops forwarding in both directions while every socket stays open (the
    server sees a live, silent peer; the client's statements hang); ``thaw()`` resumes;
    ``drop()`` aborts every open connection (RST both ways) and keeps accepting new ones.
    At most ``limit`` connections at once; the loop stops with :meth:`close`.
    """

    def __init__(self, host: str, port: int, *, limit: int = 64) -> None:
        self.target = (host, port)
        self.limit = limit
        self.loop = asyncio.new_event_loop()
        self.flowing = asyncio.Event()
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        ready = threading.Event()
        self.port = 0

        async def main() -> None:
            self.flowing.set()
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            async with self.server:
                await self.server.serve_forever()

        self.thread = threading.Thread(target=self._run, args=(main,), daemon=True)
        self.thread.start()
        if not ready.wait(BOUND):
            raise TimeoutError("proxy did not start")

    def _run(self, main: object) -> None:
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self.loop.run_until_complete(main())  # type: ignore[operator]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.pairs) >= self.limit:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                                 return_exceptions=True)
        finally:
            self.pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self.flowing.wait()
            data = await reader.read(65536)
            if not data:
                break
            await self.flowing.wait()  # frozen: hold what was read until thawed
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn()  # type: ignore[operator]
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(BOUND)

    def freeze(self) -> None:
        self._call(self.flowing.clear)

    def thaw(self) -> None:
        self._call(self.flowing.set)

    def drop(self) -> int:
        """Abort every open connection; returns how many."""
        count = len(self.pairs)

        def abort() -> None:
            for pair in list(self.pairs):
                for w in pair:
                    w.transport.abort()

        self._call(abort)
        return count

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            for pair in list(self.pairs):
                for w in pair:
                    w.transport.abort()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)


class Partition:
    """A network namespace joined to this host by a veth pair (10.213.N.1 here, .2 there).

    Run a process inside with :meth:`command`; :meth:`cut` takes the namespace's end of the
    link down (the host's end loses carrier: packets both ways are dropped without a FIN or
    RST, as in a real partition), :meth:`heal` brings it back. Needs CAP_NET_ADMIN and
    CAP_SYS_ADMIN (root in the CI container): :func:`partition_available` tells.
    """

    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        tag = uuid.uuid4().hex[:6]
        self.ns = f"herdcut-{tag}"
        self.host_if, self.ns_if = f"hc{tag}h", f"hc{tag}n"
        self.host_ip, self.ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self._ip("netns", "add", self.ns)
        try:
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            self._ip("link", "set", self.ns_if, "netns", self.ns)
            self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            self._ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self._ip("-n", self.ns, "link", "set", self.ns_if, "up")
            self._ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=BOUND)

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def cut(self) -> None:
        self._ip("-n", self.ns, "link", "set", self.ns_if, "down")

    def heal(self) -> None:
        self._ip("-n", self.ns, "link", "set", self.ns_if, "up")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ip("link", "del", self.host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ip("netns", "del", self.ns)


def partition_available() -> str | None:
    """``None`` when a :class:`Partition` can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    try:
        Partition().close()
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return f"cannot create a network namespace here: {err.decode(errors='replace') or exc}"
    return None


def scalar(url: URL, sql: str, **params: object) -> object:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()
