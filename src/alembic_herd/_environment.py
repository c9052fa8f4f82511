"""The migration environment: Alembic config, the script directory, and where the database's
version table lives.

Everything here is resolved once per call of the public API. The version table's name and
schema are learnt from the migration context env.py configures: first by running ``env.py``
in Alembic's *offline* mode (no connection, no DDL), then, when that leaves the schema open
(no schema, a search_path only a connection knows, no offline mode), once on the first
connection herd makes by running env.py *online in read mode* (:meth:`Environment.locate`:
Alembic's own ``alembic current`` does the same; ``run_migrations()`` reads nothing and
writes nothing), asking env.py's connection where the table is.
"""

from __future__ import annotations

import argparse
import configparser
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import MultipleHeads, ResolutionError, RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection

from ._database import encode_userinfo, is_transient, mask_text, parse_url
from .errors import ConfigurationError, DatabaseAheadError, RevisionNotFoundError

log = logging.getLogger("alembic_herd")

DEFAULT_VERSION_TABLE = "alembic_version"


def load_config(config: Config | str | os.PathLike[str], *, ini_section: str | None = None,
                script_location: str | None = None,
                x_arguments: Sequence[str] | Mapping[str, str] | None = None) -> Config:
    """An Alembic ``Config`` from a ``Config`` or the path of an alembic.ini.

    ``ini_section`` is the file's section for this project (Alembic's ``-n``, default
    ``alembic``), ``script_location`` overrides the file's (``-d``), and ``x_arguments``
    (``["key=value", ...]`` or a mapping) are what env.py reads with
    ``context.get_x_argument()`` (Alembic's ``-x``)."""
    if isinstance(config, Config):
        cfg = config
    else:
        path = Path(config)
        if not path.is_file():
            raise ConfigurationError(
                f"Alembic config {str(path)!r} not found; pass -c/--config with the path of "
                "your alembic.ini (or set ALEMBIC_CONFIG)"
            )
        cfg = Config(str(path), ini_section=ini_section or "alembic")
        try:
            cfg.file_config  # noqa: B018 - parse now: a malformed file is a configuration error
        except configparser.Error as exc:
            detail = str(exc).splitlines()[0]
            raise ConfigurationError(
                f"Alembic config {str(path)!r} is not a valid ini file ({detail}); fix it or "
                "pass -c/--config with the path of your alembic.ini"
            ) from exc
    if ini_section is not None:
        cfg.config_ini_section = ini_section
    _require_section(cfg)
    if script_location is not None:
        cfg.set_main_option("script_location", script_location.replace("%", "%%"))
    if x_arguments:
        pairs = ([f"{k}={v}" for k, v in x_arguments.items()]
                 if isinstance(x_arguments, Mapping) else list(x_arguments))
        if cfg.cmd_opts is None:
            cfg.cmd_opts = argparse.Namespace(x=pairs)
        else:
            cfg.cmd_opts.x = pairs
    return cfg


def _require_section(cfg: Config) -> None:
    """The config file has the section herd reads (``[alembic]``, or ``-n``'s)."""
    name = cfg.config_ini_section
    if cfg.config_file_name is None or cfg.file_config.has_section(name):
        return
    sections = [s for s in cfg.file_config.sections()
                if cfg.file_config.has_option(s, "script_location")]
    choices = (f"sections with a script_location: {', '.join(sections)}; pass -n/--name with "
               "one of them" if sections else f"add [{name}] with 'script_location = "
               "migrations' (the folder with env.py)")
    raise ConfigurationError(
        f"Alembic config {cfg.config_file_name!r} has no [{name}] section; {choices}")


class Captured:
    """What env.py passed to ``context.configure()``."""

    url: str | URL | None = None
    connection: Connection | None = None
    in_transaction = False
    """The connection was already inside a transaction, which Alembic then leaves open."""


def capturing_context(config: Config, script: ScriptDirectory, *,
                      on_version_apply: Callable[..., None] | None = None,
                      **kw: Any) -> tuple[EnvironmentContext, Captured]:
    """An EnvironmentContext whose ``configure()`` also records the URL or connection, and
    adds ``on_version_apply`` after env.py's own callbacks (herd's fencing check, run inside
    each revision's transaction).

    The wrapper is set on the instance: Alembic installs the instance's bound methods as
    the ``alembic.context`` module proxy, so env.py calls it transparently.
    """
    ctx = EnvironmentContext(config, script, **kw)
    captured = Captured()
    original = ctx.configure

    def configure(connection: Connection | None = None, url: str | URL | None = None,
                  **options: Any) -> None:
        captured.url = url
        captured.connection = connection
        captured.in_transaction = connection is not None and connection.in_transaction()
        if on_version_apply is not None:
            own = options.get("on_version_apply") or ()
            own = tuple(own) if isinstance(own, (list, tuple)) else (own,)
            options["on_version_apply"] = (*own, on_version_apply)
        original(connection=connection, url=url, **options)

    ctx.configure = configure  # type: ignore[method-assign,assignment]
    return ctx, captured


@dataclass(frozen=True)
class VersionLocation:
    """Where one migration context keeps its version table, as its connection resolves it."""

    table: str
    schema: str | None
    """The schema (PostgreSQL) or database (MySQL/MariaDB) the table is in: the one env.py
    named, else the one its connection resolves the bare name to (PostgreSQL: the schema on
    the search_path that has the table, else ``current_schema()``; MySQL: ``DATABASE()``);
    ``None`` offline and on SQLite."""
    database: str | None = None
    """host:port/database of env.py's connection (``None`` offline): tells apart an env.py
    that migrates several databases in one run."""

    def describe(self) -> str:
        name = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{name} on {self.database}" if self.database else name


_EFFECTIVE_SCHEMA = (
    "coalesce((SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relname = :herd_vt AND c.relkind IN ('r', 'p', 'v') "
    "AND pg_catalog.pg_table_is_visible(c.oid) LIMIT 1), current_schema())")


def effective_schema_column(dialect: str) -> str | None:
    """:func:`effective_schema` as a column for another statement to read beside its own
    (bind ``herd_vt``: the table's name); ``None`` on SQLite."""
    if dialect == "postgresql":
        return _EFFECTIVE_SCHEMA
    if dialect in ("mysql", "mariadb"):
        return "DATABASE()"
    return None


def effective_schema(conn: Connection, table: str) -> str | None:
    """The schema (database, on MySQL) a bare ``table`` means on ``conn`` now: where Alembic
    on that connection reads the version table, or creates it when it does not exist yet."""
    column = effective_schema_column(conn.dialect.name)
    if column is None:
        return None  # SQLite: 'main' unless env.py names an attached database
    return conn.execute(sa.text(f"SELECT {column}"), {"herd_vt": table}).scalar()  # one trip


def _own_schema(conn: Connection, where: VersionLocation) -> str | None:
    """:func:`effective_schema` on herd's own connection. MySQL/MariaDB: no round trip
    when it is the database env.py's connection is in: herd's connection never changes
    database, so ``DATABASE()`` is the one its URL names (the driver's at connect)."""
    database = conn.engine.url.database
    if conn.dialect.name in ("mysql", "mariadb") and database and database == where.schema:
        return database
    return effective_schema(conn, where.table)


_ASK = object()


def locate_context(context: MigrationContext, effective: Any = _ASK) -> VersionLocation:
    """Where ``context`` (a MigrationContext env.py configured) keeps its version table;
    ``effective``: what :func:`effective_schema` says on its connection, when another
    statement already read it."""
    conn = context.connection
    table, schema = context.version_table, context.version_table_schema
    if conn is None or context.as_sql:
        return VersionLocation(table, schema)
    url = conn.engine.url
    if schema is None and effective is not _ASK:
        schema = effective
    elif schema is None:
        began = not conn.in_transaction()
        schema = effective_schema(conn, table)
        if began and conn.in_transaction():  # leave env.py's connection as it was: a read
            conn.rollback()  # that autobegan must not hold a transaction open (MySQL)
    return VersionLocation(table, schema,
                           f"{url.host or ''}:{url.port or ''}/{url.database or ''}")


def refuse_several(found: Sequence[VersionLocation]) -> None:
    """Raise :func:`several_version_tables` when ``found`` names more than one table."""
    if len(set(found)) > 1:
        raise several_version_tables(found)


def several_version_tables(found: Sequence[VersionLocation]) -> ConfigurationError:
    """env.py configured and migrated more than one version table in one run (tenants)."""
    if len({loc.database for loc in found}) == 1:  # one database: the tables tell apart
        found = [VersionLocation(loc.table, loc.schema) for loc in found]
    names = ", ".join(sorted({loc.describe() for loc in found}))
    return ConfigurationError(
        f"env.py migrates {len(set(found))} version tables in one run ({names}); herd watches "
        "one version table per run and would report the database current while one of them "
        "is behind, so it refuses before migrating anything: make env.py migrate one tenant "
        "(one version table) per run, e.g. chosen with -x tenant=NAME, and run herd once "
        "per tenant")


@dataclass
class Environment:
    """What herd needs to know about one Alembic project.

    :attr:`version_table` and :attr:`version_table_schema` name the version table env.py
    uses, as herd's own connection must spell it: ``version_table_schema`` is ``None`` when
    the bare name already reaches that table from herd's connection. They are final once
    :meth:`locate` ran (:class:`~._runner.Runner` calls it on each new connection; idempotent).
    """

    config: Config
    script: ScriptDirectory
    url: URL | None
    version_table: str = DEFAULT_VERSION_TABLE
    version_table_schema: str | None = None
    transactional_ddl: bool | None = None
    probe_online: bool = False
    """The offline probe left the version table's schema open: :meth:`locate` asks env.py's
    connection (read mode)."""
    location: VersionLocation | None = None
    """Where env.py's migration context keeps the version table; set by :meth:`locate`."""

    @property
    def qualified_version_table(self) -> str:
        if self.version_table_schema:
            return f"{self.version_table_schema}.{self.version_table}"
        return self.version_table

    @property
    def version_schema(self) -> str | None:
        """The schema (MySQL: database) of the version table env.py uses, by name, once
        :meth:`locate` ran (``public``, ``app``, the database's name; ``None`` on SQLite or
        before :meth:`locate`). herd's own tables default to it."""
        if self.location is not None:
            return self.location.schema
        return self.version_table_schema

    # -- where the version table is --------------------------------------------------------

    def locate(self, conn: Connection) -> VersionLocation:
        """Learn where env.py's migration context keeps the version table, once; ``conn`` is
        herd's own connection (to spell the table so that it reaches the same one).

        When the offline probe named the schema this asks nothing. Otherwise env.py runs
        online in read mode (:func:`_probe_online`): it connects and configures as it does
        to migrate, but ``run_migrations()`` only records the context. Several version tables
        (tenants, several databases) raise :func:`several_version_tables`: nothing has been
        migrated yet. When env.py cannot run online here, herd keeps what the offline probe
        found, says so, and the leader still refuses a mismatch before any revision runs.
        """
        if self.location is not None:
            return self.location
        if not self.probe_online:
            where = VersionLocation(
                self.version_table,
                self.version_table_schema or effective_schema(conn, self.version_table))
            self.location = where
            return where
        try:
            try:
                found = _probe_online(self)
            except sa.exc.DBAPIError as exc:  # e.g. env.py's CREATE SCHEMA IF NOT EXISTS
                if _transient(exc):  # lost another replica's race: one more try
                    raise
                found = _probe_online(self)
        except ConfigurationError:
            raise
        except Exception as exc:
            if _transient(exc):
                raise
            log.warning("could not run env.py online to learn where its version table is "
                        "(%s); reading %r as the offline probe found (pass "
                        "--version-table-schema to name it)",
                        mask_text(f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
                                  self.url), self.qualified_version_table)
            found = []
        refuse_several(found)
        if found:
            where = found[0]
            self.version_table = where.table
            ours = _own_schema(conn, where) if where.schema else None
            self.version_table_schema = where.schema if where.schema != ours else None
        else:
            where = VersionLocation(
                self.version_table,
                self.version_table_schema or effective_schema(conn, self.version_table))
        self.location = VersionLocation(where.table, where.schema)
        return self.location

    def same_location(self, context: MigrationContext,
                      effective: Any = _ASK) -> VersionLocation | None:
        """``None`` when ``context`` (env.py's, while migrating) keeps its version table where
        herd watches; else where it keeps it (``effective``: see :func:`locate_context`)."""
        theirs = locate_context(context, effective)
        ours = self.location or VersionLocation(self.version_table, self.version_table_schema)
        if (theirs.table, theirs.schema) == (ours.table, ours.schema):
            return None
        return theirs

    # -- the static revision graph -------------------------------------------------------

    def script_heads(self) -> tuple[str, ...]:
        try:
            return tuple(self.script.get_heads())
        except Exception as exc:  # a revision file that does not import, a cycle, ...
            raise script_error(exc, self.config) from exc

    def target_revisions(self, target: str) -> tuple[str, ...]:
        """The revision ids ``target`` names (``head``, ``heads``, ``branch@head``, an id)."""
        if not self.script_heads():  # an image without its revision files, a wrong -d
            raise ConfigurationError(
                f"the migrations folder {self.script.dir!r} has no revisions (its versions "
                "folder has no revision file); point script_location "
                "(or -d/--script-location) at the folder that has them, or add one with "
                "'alembic revision'")
        try:
            revs = self.script.get_revisions(target)
        except (ResolutionError, RevisionError, CommandError) as exc:
            # Alembic's ScriptDirectory wraps MultipleHeads in a CommandError.
            if isinstance(exc, MultipleHeads) or isinstance(exc.__cause__, MultipleHeads):
                raise RevisionNotFoundError(
                    f"target {target!r} is ambiguous: the scripts have several heads "
                    f"({', '.join(sorted(self.script_heads()))}); use 'heads' for all of them "
                    "or 'branch@head' for one"
                ) from exc
            raise RevisionNotFoundError(
                f"target revision {target!r} not found in {self.script.dir!r}: {exc}; "
                "check the id with 'alembic history'"
            ) from exc
        except Exception as exc:
            raise script_error(exc, self.config) from exc
        return tuple(r.revision for r in revs if r is not None)

    def pending(self, db_heads: tuple[str, ...], target: str) -> tuple[str, ...]:
        """Revisions an upgrade from ``db_heads`` to ``target`` would apply, in order."""
        self.target_revisions(target)  # friendly errors for a bad target first
        unknown = tuple(h for h in db_heads if not self._known(h))
        if unknown:
            raise DatabaseAheadError(
                f"database version table {self.qualified_version_table!r} is at "
                f"{', '.join(unknown)}, which the scripts in {self.script.dir!r} do not contain; "
                "this code is older than the database (a rollback or rolling deploy?) - deploy "
                "code that has these revisions",
                unknown=unknown,
            )
        try:
            revs = self.script.iterate_revisions(target, db_heads, implicit_base=True)
            return tuple(r.revision for r in reversed(list(revs)) if r is not None)
        except RevisionError as exc:
            raise RevisionNotFoundError(
                f"cannot upgrade {self.qualified_version_table!r} from "
                f"{', '.join(db_heads) or 'an empty database'} to {target!r} ({exc}); it "
                "should hold one row per branch head - fix its rows (e.g. 'alembic stamp "
                "--purge REVISION') and retry"
            ) from exc

    def applied(self, db_heads: tuple[str, ...]) -> set[str]:
        """Every revision the database has, given its heads (the heads and their ancestors)."""
        if not db_heads:
            return set()
        revs = self.script.iterate_revisions(db_heads, "base", implicit_base=True)
        return {r.revision for r in revs if r is not None}

    def _known(self, rev: str) -> bool:
        try:
            return self.script.revision_map.get_revision(rev) is not None
        except (ResolutionError, RevisionError):
            return False


def script_error(exc: BaseException, config: Config) -> ConfigurationError:
    """A broken migration script (syntax error, import error) as one clear line."""
    where = config.get_main_option("script_location")
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, SyntaxError) and exc.filename:
        detail = f"SyntaxError in {exc.filename} line {exc.lineno}: {exc.msg}"
    return ConfigurationError(
        f"migration scripts in {where!r} could not be loaded ({detail}); fix the revision file"
    )


def load_environment(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
) -> Environment:
    """Resolve the Alembic project and the database URL herd will coordinate on.

    URL precedence: ``url`` argument, ``config.attributes['connection']``, whatever env.py
    passes to ``context.configure(url=...)`` in offline mode, then the config's
    ``sqlalchemy.url`` (also as set by env.py at import time). An explicit ``url`` is also
    written to the config's ``sqlalchemy.url`` so that a standard env.py migrates the same
    database.
    """
    cfg = load_config(config, x_arguments=x_arguments)
    where = cfg.get_main_option("script_location")
    if not where:
        raise ConfigurationError(
            f"Alembic config {cfg.config_file_name!r} has no script_location; add "
            "'script_location = migrations' (the folder with env.py) under [alembic]"
        )
    try:
        script = ScriptDirectory.from_config(cfg)
    except CommandError as exc:
        raise ConfigurationError(
            f"script_location {where!r} is not an Alembic migrations folder ({exc}); fix "
            "script_location in the config (or -d/--script-location) or create it with "
            "'alembic init'"
        ) from exc
    _require_env_py(script, where)

    explicit: URL | None = parse_url(url) if url is not None else None
    if explicit is not None:
        cfg.set_main_option(
            "sqlalchemy.url", explicit.render_as_string(hide_password=False).replace("%", "%%")
        )

    elif (ini_url := _ini_url(cfg)) and encode_userinfo(ini_url) != ini_url:
        # a password with '@' in alembic.ini: SQLAlchemy would end it at the first '@' and
        # take the rest for the host when env.py (its offline probe too) reads the URL
        cfg.set_main_option("sqlalchemy.url", parse_url(ini_url).render_as_string(
            hide_password=False).replace("%", "%%"))

    env = Environment(config=cfg, script=script, url=explicit)
    probe = _probe(env)
    declared: list[VersionLocation] = probe.get("locations", [])
    if version_table_schema is None:
        refuse_several(declared)
    env.version_table = version_table or probe.get("version_table") or DEFAULT_VERSION_TABLE
    env.version_table_schema = version_table_schema or probe.get("version_table_schema")
    env.transactional_ddl = probe.get("transactional_ddl")
    # the schema is still open: no offline mode, no schema named (a search_path set on the
    # connection decides), or several runs of one context (a loop over tenants)
    env.probe_online = version_table_schema is None and (
        env.version_table_schema is None or len(declared) != 1)

    if env.url is None:
        conn = cfg.attributes.get("connection")
        if isinstance(conn, Connection):
            env.url = conn.engine.url
    # What env.py really hands Alembic beats the ini's value, which may be the placeholder
    # 'alembic init' writes (driver://...) when env.py takes the URL from app settings.
    if env.url is None and probe.get("url"):
        env.url = parse_url(probe["url"])
    if env.url is None:
        ini_url = _ini_url(cfg)
        if ini_url:
            env.url = parse_url(ini_url)
    if env.url is None:
        raise ConfigurationError(
            "no database URL: pass --url, set HERD_DATABASE_URL or DATABASE_URL, or set "
            "sqlalchemy.url in alembic.ini"
        )
    return env


def _ini_url(cfg: Config) -> str | None:
    try:
        return cfg.get_main_option("sqlalchemy.url")
    except configparser.InterpolationError as exc:
        raise ConfigurationError(
            f"sqlalchemy.url in {cfg.config_file_name!r} has a '%' that the ini format reads "
            f"as a substitution ({type(exc).__name__}); write '%%' for each '%' in the URL "
            "(a percent-encoded password: %%40 for '@'), or pass --url"
        ) from None


def _require_env_py(script: ScriptDirectory, where: str) -> None:
    """Alembic resolves a relative script_location against the working directory; from
    another directory it finds a folder without env.py, no revisions, and a database at
    'base' would look current. Refuse that as the configuration error it is."""
    folder = Path(script.dir)
    if (folder / "env.py").is_file() or (folder / "env.pyc").is_file():
        return
    relative = "" if Path(where).is_absolute() or "%(here)s" in where else (
        f" (relative to the working directory {os.getcwd()!r})")
    raise ConfigurationError(
        f"script_location {where!r} resolves to {str(folder.resolve())!r}{relative}, which has "
        "no env.py; run herd from the folder that path is relative to, or write "
        "'script_location = %(here)s/<folder>' in the config so it is relative to the config file"
    )


def _probe(env: Environment) -> dict[str, Any]:
    """Run env.py in offline mode to learn the version table's name and schema.

    Offline mode never connects, so this cannot race. env.py files whose offline branch
    fails are tolerated: herd then uses the defaults (or the explicit options).
    """
    found: dict[str, Any] = {}

    def capture(rev: Any, context: Any) -> list[Any]:
        found.setdefault("version_table", context.version_table)
        found.setdefault("version_table_schema", context.version_table_schema)
        found.setdefault("transactional_ddl", bool(context.impl.transactional_ddl))
        found.setdefault("locations", []).append(locate_context(context))
        return []

    ctx, captured = capturing_context(
        env.config, env.script, fn=capture, as_sql=True, output_buffer=io.StringIO(),
        destination_rev="heads",
    )
    # env.py files commonly call logging.config.fileConfig(): keep the caller's logging. And
    # keep Alembic's INFO lines about this offline run ("Generating static SQL") out of every
    # replica's log: the probe is herd's business, not a migration.
    try:
        with preserved_logging(), quiet_alembic(), ctx:
            env.script.run_env()
    except Exception as exc:  # offline branch unsupported by this env.py: use defaults
        log.debug("offline probe of env.py failed (%s: %s); using defaults",
                  type(exc).__name__, exc)
    if captured.url is not None:
        found["url"] = captured.url
    return found


def _probe_online(env: Environment) -> list[VersionLocation]:
    """Run env.py online in read mode and return where each migration context it runs keeps
    its version table. ``run_migrations()`` is replaced by a recorder: it reads no heads and
    writes nothing (``dont_mutate`` besides); what env.py itself does before it (connect,
    ``SET search_path``) runs as under ``alembic current``."""
    found: list[VersionLocation] = []
    ctx, _ = capturing_context(env.config, env.script, fn=lambda rev, context: [],
                               as_sql=False, dont_mutate=True)

    def run_migrations(**kw: Any) -> None:
        found.append(locate_context(ctx.get_context()))

    ctx.run_migrations = run_migrations  # type: ignore[method-assign]
    with preserved_logging(), quiet_alembic(), ctx:
        env.script.run_env()
    return found


def _transient(exc: BaseException) -> bool:
    """A lost or refused connection (the runner connects again and asks again)."""
    return isinstance(exc, sa.exc.DBAPIError) and is_transient(exc)


# -- logging while env.py runs -----------------------------------------------------------
# herd runs inside applications whose other threads keep logging: nothing here may switch
# logging off for the whole process (logging.disable) or drop another thread's records.

_LoggerState = tuple[int, list[logging.Handler], bool, bool]  # level, handlers, propagate, disabled
_filters_lock = threading.Lock()


class _ThreadQuiet(logging.Filter):
    """Drops the INFO and DEBUG records of the thread that created it; all else passes."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        # a logger's filters run in the thread that logs (record.thread may be unset)
        return record.levelno > logging.INFO or threading.get_ident() != self.thread


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Inside the block, drop the INFO and DEBUG records this thread logs through Alembic's
    loggers; other threads' records, and this thread's warnings, still arrive.

    The filter sits on Alembic's loggers themselves (a filter on a parent would not see its
    children's records), which keep their filters when env.py calls ``fileConfig()``.
    """
    quiet = _ThreadQuiet()
    loggers = [lg for name, lg in dict(logging.Logger.manager.loggerDict).items()
               if isinstance(lg, logging.Logger) and name.split(".")[0] == "alembic"]
    # new lists rather than addFilter/removeFilter: a thread logging meanwhile iterates the
    # old list undisturbed; the lock keeps two herd threads from losing each other's update
    with _filters_lock:
        for lg in loggers:
            lg.filters = [*lg.filters, quiet]
    try:
        yield
    finally:
        with _filters_lock:
            for lg in loggers:
                lg.filters = [f for f in lg.filters if f is not quiet]


@contextmanager
def preserved_logging() -> Iterator[None]:
    """Undo, when the block ends, what env.py's ``fileConfig()`` did to the existing loggers,
    the root logger included: levels, handlers, propagation, and the loggers it disabled.

    ``fileConfig()`` itself reconfigures the whole process while env.py runs; herd cannot
    prevent that (it is env.py's code), only undo it.
    """
    saved = _logging_state()
    try:
        yield
    finally:
        _restore_logging(saved)


def _logging_state() -> tuple[dict[str, _LoggerState], int, list[logging.Handler]]:
    root = logging.getLogger()
    loggers = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in dict(logging.Logger.manager.loggerDict).items()
        if isinstance(lg, logging.Logger)
    }
    return loggers, root.level, list(root.handlers)


def _restore_logging(state: tuple[dict[str, _LoggerState], int, list[logging.Handler]]) -> None:
    loggers, root_level, root_handlers = state
    root = logging.getLogger()
    root.setLevel(root_level)
    root.handlers[:] = root_handlers
    for name, lg in dict(logging.Logger.manager.loggerDict).items():
        if isinstance(lg, logging.Logger) and name in loggers:
            level, handlers, propagate, disabled = loggers[name]
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.disabled = disabled
