"""The fast lane's view of the project: alembic.ini and the script folders, the fingerprint
that keys the stamp, and the database URL read without env.py or SQLAlchemy. Standard
library only (:mod:`._fastlane`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from ._laneargs import TRUE, Fallback, Settings

FORMAT = 1
"""The stamp's format; part of the fingerprint."""


# -- the project: alembic.ini, the scripts ------------------------------------------------


@dataclass
class Project:
    ini: Path
    section: str
    script_dir: Path
    version_dirs: list[Path]
    ini_url: str | None


def read_project(settings: Settings, cwd: Path) -> Project:
    import configparser

    ini = Path(settings["config"])
    if not ini.is_absolute():
        ini = cwd / ini
    if not ini.is_file():
        raise Fallback("no config file")
    section = settings["name"] or "alembic"
    parser = configparser.ConfigParser({"here": os.path.abspath(os.path.dirname(ini))})
    try:
        parser.read([str(ini)])
        if not parser.has_section(section):
            raise Fallback("no section")
        where = settings["script_location"] or parser.get(section, "script_location",
                                                          fallback=None)
        url = parser.get(section, "sqlalchemy.url", fallback=None)
        locations = parser.get(section, "version_locations", fallback=None)
        sourceless = parser.get(section, "sourceless", fallback="false")
    except configparser.Error as exc:
        raise Fallback("ini") from exc
    if not where or ":" in where or sourceless.strip().lower() in TRUE:
        raise Fallback("script location")
    script_dir = Path(where)
    if not script_dir.is_absolute():
        script_dir = cwd / script_dir
    if not (script_dir / "env.py").is_file():
        raise Fallback("no env.py")
    version_dirs = []
    for token in re.split(r"[\s,;:]+", locations or ""):
        if token:
            path = Path(token) if Path(token).is_absolute() else cwd / token
            if not path.is_dir():
                raise Fallback("version location")
            version_dirs.append(path)
    return Project(ini, section, script_dir, version_dirs, url)


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found.extend(Path(root) / name for name in sorted(files))
    return found


_LITERAL = re.compile(r"""['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
USERINFO = re.compile(r"(://[^:/@\s]*):\S*@")
"""``://user:password@`` up to the last ``@`` (a password may hold ``/``, ``:`` or ``@``)."""


def fingerprint(settings: Settings, project: Project, environ: Mapping[str, str],
                servers: Sequence[Any]) -> str:
    """The hash of everything that decides what the normal path concludes (module doc)."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes | str | None) -> None:
        raw = b"\0" if data is None else (data.encode() if isinstance(data, str) else data)
        digest.update(f"{label}:{len(raw)}:".encode())
        digest.update(raw)

    from . import __version__

    add("format", str(FORMAT))
    add("herd", __version__)
    import importlib.util

    spec = importlib.util.find_spec("alembic")
    add("alembic", Path(spec.origin).read_bytes() if spec and spec.origin else None)
    for name in ("name", "script_location", "version_table", "version_table_schema",
                 "history_table", "herd_schema"):
        add(name, settings[name])
    add("x", json.dumps(list(settings["x_argument"] or ())))
    add("servers", json.dumps(list(servers)))
    add("ini-path", str(project.ini.resolve()))
    add("ini", project.ini.read_bytes())
    add("pyproject", settings.pyproject.read_bytes() if settings.pyproject else None)
    for label, folder in (("scripts", project.script_dir),
                          *(("versions", d) for d in project.version_dirs)):
        add(label, str(folder.resolve()))
        for path in _files(folder):
            add(str(path.relative_to(folder)), path.read_bytes())
    env_py = (project.script_dir / "env.py").read_text(errors="replace")
    for name in sorted(set(_LITERAL.findall(env_py))):
        value = environ.get(name)
        add(f"env {name}", None if value is None else USERINFO.sub(r"\1@", value))
    return digest.hexdigest()


# -- the URL ------------------------------------------------------------------------------

_QUERY = {
    "postgresql": {"sslmode", "sslrootcert", "sslcert", "sslkey", "application_name",
                   "connect_timeout", "host", "port"},
    "mysql": {"charset"},
    "sqlite": set(),
}


@dataclass(frozen=True)
class Url:
    backend: str
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: tuple[tuple[str, str], ...] = field(default=())

    @property
    def server(self) -> tuple[Any, ...]:
        return (self.backend, self.user, self.host, self.port, self.database)


def parse_url(text: str) -> Url:
    """A URL of a supported backend, or :class:`Fallback`."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise Fallback("url")
    dialect, _, driver = scheme.partition("+")
    backend = {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql",
               "mariadb": "mysql", "sqlite": "sqlite"}.get(dialect)
    drivers = {"postgresql": ("", "psycopg", "psycopg2", "psycopg2cffi", "asyncpg",
                              "psycopg_async"),
               "mysql": ("pymysql", "aiomysql", "asyncmy"), "sqlite": ("", "pysqlite",
                                                                      "aiosqlite")}
    if backend is None or driver not in drivers[backend]:
        raise Fallback("driver")
    rest, _, query_text = rest.partition("?")
    query = tuple(parse_qsl(query_text, keep_blank_values=True))
    if any(k not in _QUERY[backend] for k, _ in query) or len({k for k, _ in query}) != len(
            query):
        raise Fallback("url query")
    if backend == "sqlite":
        if not rest.startswith("/") or rest in ("/", "/:memory:") or "%" in rest:
            raise Fallback("sqlite url")
        return Url("sqlite", None, None, None, None, rest[1:], query)
    netloc, _, database = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user)
        password = unquote(raw_password) if colon else None
    if "[" in hostport or "," in hostport or "%" in database or "/" in database:
        raise Fallback("url host")
    host, colon, port_text = hostport.partition(":")
    try:
        port = int(port_text) if colon else None
    except ValueError as exc:
        raise Fallback("port") from exc
    return Url(backend, user or None, password, host or None, port, database or None, query)


def resolve_url(settings: Settings, project: Project) -> tuple[Url, Url, str]:
    """(the application's URL, herd's connection's URL, the text of the first)."""
    text = settings["url"] or project.ini_url
    if not text:
        raise Fallback("no URL without env.py")
    app = parse_url(text)
    return app, parse_url(settings["lock_url"]) if settings["lock_url"] else app, text
