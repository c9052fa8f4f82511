"""``herd``: the command line over :mod:`alembic_herd`.

Each verb parses its options, makes one library call and turns the result into output and
an exit code; the behaviour lives in the library. Errors are one line on stderr
(``herd: error: ...``) with the exit code of :data:`alembic_herd.errors.EXIT_CODES`, and
every line herd prints passes through :func:`~alembic_herd._database.mask_text`, so a
password given in ``--url`` or the environment is never shown.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import shutil
import sys
import tomllib
import traceback as tb
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.engine import URL, make_url

from . import __version__, history, resolve, status, unlock, upgrade, wait_until_current
from . import _defaults as defaults
from ._database import HOST, mask_text
from ._durations import spell, to_seconds
from ._history import Attempt
from ._outcome import Outcome, Status
from .errors import EXIT_CODES, ConfigurationError, HerdError

URL_ENVVARS = ["HERD_DATABASE_URL", "DATABASE_URL"]
CONFIG_ENVVAR = "ALEMBIC_CONFIG"
USAGE_EXIT = ConfigurationError.exit_code
INTERNAL_EXIT = 2
INTERRUPTED_EXIT = 130
_COMMAND_KEY = "alembic_herd.command"

F = TypeVar("F", bound=Callable[..., Any])


# -- masking and failing ------------------------------------------------------------------


def _parsed(url: str | None) -> URL | None:
    if not url:
        return None
    try:
        return make_url(url)
    except Exception:  # malformed: the regex in mask_text still hides user:password@
        return None


def _mask(text: str, *urls: str | None) -> str:
    for url in urls or (None,):
        text = mask_text(text, _parsed(url))
    return text


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def _fail(exc: BaseException, *, url: str | tuple[str | None, ...] | None,
          show_traceback: bool) -> NoReturn:
    """Report ``exc`` as one line on stderr (plus the traceback when asked) and exit."""
    urls = url if isinstance(url, tuple) else (url,)
    if show_traceback:
        trace = "".join(tb.format_exception(exc))
        click.echo(_mask(trace, *urls).rstrip(), err=True)
    if isinstance(exc, HerdError):
        click.echo(f"herd: error: {_mask(_one_line(str(exc)), *urls)}", err=True)
        _exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        click.echo("herd: interrupted", err=True)
        _exit(INTERRUPTED_EXIT)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[0] if lines else ""
    hint = "" if show_traceback else " (run with --traceback for details)"
    click.echo(_mask(f"herd: internal error: {type(exc).__name__}: {detail}{hint}", *urls),
               err=True)
    _exit(INTERNAL_EXIT)


def _guarded(url: str | tuple[str | None, ...] | None, show_traceback: bool,
             call: Callable[[], int | None]) -> NoReturn:
    """Run ``call``; map its result or exception to an exit code."""
    try:
        code = call()
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except (Exception, KeyboardInterrupt) as exc:
        _fail(exc, url=url, show_traceback=show_traceback)
    _exit(code or 0)


# -- logging ------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    def __init__(self, urls: tuple[str | None, ...], kind: str) -> None:
        super().__init__()
        self.urls = urls
        self.kind = kind

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        replica = getattr(record, "replica", None) or f"{HOST}:{record.process}"
        if self.kind == "json":
            fields = getattr(record, "herd", None)
            data: dict[str, Any] = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"),
                "level": record.levelname.lower(),
                "replica": replica,
                "event": getattr(record, "herd_event", None),
                "message": message,
            }
            if not record.name.startswith("alembic_herd"):
                data["logger"] = record.name
            if isinstance(fields, Mapping):
                data.update({k: v for k, v in fields.items() if k not in data})
            return _mask(json.dumps(data, default=str), *self.urls)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        if not record.name.startswith("alembic_herd"):
            prefix += f"[{record.name}] "
        return _mask(f"{stamp} herd[{replica}] {prefix}{message}", *self.urls)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The CLI's handler; writes to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextmanager
def _logging(*, urls: tuple[str | None, ...], verbose: int, quiet: bool, log_format: str,
             quiet_by_default: bool = False) -> Iterator[None]:
    """Send herd's (and, with -v, Alembic's) log records to stderr for one command."""
    handler = _Handler()
    handler.setFormatter(_Formatter(urls, log_format))
    herd_log, alembic_log = logging.getLogger("alembic_herd"), logging.getLogger("alembic")
    saved = [(lg, lg.level, lg.propagate) for lg in (herd_log, alembic_log)]
    if verbose:
        herd_level = logging.DEBUG
    elif quiet or quiet_by_default:
        herd_level = logging.ERROR
    else:
        herd_level = logging.INFO
    herd_log.setLevel(herd_level)
    alembic_log.setLevel(logging.INFO if verbose else logging.WARNING)
    for lg in (herd_log, alembic_log):
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


# -- options ------------------------------------------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float:
    """Option callback: a duration with a unit ('90s', '5m'), in seconds."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return to_seconds(str(value), name=param.opts[0] if param.opts else "duration")
    except ConfigurationError as exc:
        raise click.UsageError(str(exc), ctx) from exc


@dataclass(frozen=True)
class Options:
    """The options every verb takes."""

    config: str
    url: str | None
    lock_url: str | None
    version_table: str | None
    version_table_schema: str | None
    history_table: str
    verbose: int
    quiet: bool
    log_format: str
    traceback: bool

    @property
    def urls(self) -> tuple[str | None, ...]:
        return (self.url, self.lock_url)

    def project(self) -> dict[str, Any]:
        """Keyword arguments naming the project and database, for every library call."""
        return {"url": self.url, "lock_url": self.lock_url, "version_table": self.version_table,
                "version_table_schema": self.version_table_schema,
                "history_table": self.history_table}


_OPTION_NAMES = tuple(Options.__dataclass_fields__)

_COMMON_OPTIONS: list[Callable[[F], F]] = [
    click.option("-c", "--config", default=defaults.CONFIG_FILE, show_default=True,
                 envvar=CONFIG_ENVVAR, show_envvar=True, metavar="PATH",
                 help="The Alembic config file (alembic.ini)."),
    click.option("--url", envvar=URL_ENVVARS, show_envvar=True, metavar="URL",
                 help="Database URL; overrides sqlalchemy.url in the config and is also "
                      "given to env.py. The password is never printed."),
    click.option("--lock-url", envvar="HERD_LOCK_URL", show_envvar=True, metavar="URL",
                 help="A direct connection for herd's lock and reads, when --url goes "
                      "through a transaction pooler (PgBouncer). Default: --url."),
    click.option("--version-table", metavar="NAME",
                 help="Alembic version table (default: what env.py configures, else "
                      "alembic_version)."),
    click.option("--version-table-schema", metavar="SCHEMA",
                 help="Schema of the version table (default: what env.py configures)."),
    click.option("--history-table", default=defaults.HISTORY_TABLE, show_default=True,
                 envvar="HERD_HISTORY_TABLE", show_envvar=True, metavar="NAME",
                 help="herd's attempt log table (in the default schema)."),
    click.option("-v", "--verbose", count=True,
                 help="More logging: herd's debug messages and Alembic's own log."),
    click.option("-q", "--quiet", is_flag=True,
                 help="Log errors only; the result line on stdout is still printed."),
    click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                 show_default=True, envvar="HERD_LOG_FORMAT", show_envvar=True,
                 help="Log lines on stderr as text or one JSON object each."),
    click.option("--traceback", is_flag=True,
                 help="On an error, also print the Python traceback."),
]


def _common(*, quiet_by_default: bool = False) -> Callable[[F], F]:
    """Add the common options; the callback receives them as one :class:`Options`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> None:
            opts = Options(**{name: kwargs.pop(name) for name in _OPTION_NAMES})
            with _logging(urls=opts.urls, verbose=opts.verbose, quiet=opts.quiet,
                          log_format=opts.log_format, quiet_by_default=quiet_by_default):
                _guarded(opts.urls, opts.traceback, lambda: fn(opts, **kwargs))

        for option in reversed(_COMMON_OPTIONS):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def _target(fn: F) -> F:
    return click.option("--target", default="head", show_default=True, metavar="REVISION",
                        help="Revision to bring the database to (head, heads, branch@head, "
                             "an id).")(fn)


def _allow_ahead(fn: F) -> F:
    return click.option("--allow-ahead", is_flag=True, envvar="HERD_ALLOW_AHEAD",
                        show_envvar=True,
                        help="Treat a database at revisions this code does not know (a "
                             "rollback, a rolling deploy) as current instead of failing "
                             "(exit 5).")(fn)


def _timeout(fn: F) -> F:
    return click.option("--timeout", callback=_duration, metavar="DURATION",
                        default=spell(defaults.WAIT_TIMEOUT),
                        show_default=True, envvar="HERD_TIMEOUT", show_envvar=True,
                        help="How long to wait for the database to become current, with a "
                             "unit: 90s, 5m, 1h.")(fn)


def _connect_timeout(fn: F) -> F:
    return click.option("--connect-timeout", callback=_duration, metavar="DURATION",
                        default=spell(defaults.CONNECT_TIMEOUT), show_default=True,
                        envvar="HERD_CONNECT_TIMEOUT",
                        show_envvar=True,
                        help="How long to try to reach the database, with a unit: 3s. Keep it "
                             "under a probe's own timeout.")(fn)


def _lock(fn: F) -> F:
    return click.option("--lock", type=click.Choice(["auto", "advisory", "table", "file"]),
                        default="auto", show_default=True, envvar="HERD_LOCK",
                        show_envvar=True,
                        help="Lock backend: auto picks advisory on PostgreSQL/MySQL/MariaDB, "
                             "file on SQLite.")(fn)


def _lock_timeout(default: str) -> Callable[[F], F]:
    return click.option("--lock-timeout", callback=_duration, metavar="DURATION",
                        default=default, show_default=True, envvar="HERD_LOCK_TIMEOUT",
                        show_envvar=True,
                        help="How long to try to connect and take the lock, with a unit: "
                             "90s, 5m, 1h.")


# -- the group ----------------------------------------------------------------------------


def _exit_code_table() -> str:
    rows = "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items())
    return f"\b\nExit codes:\n{rows}"


class _HerdGroup(click.Group):
    """Runs non-standalone, so that every error (usage errors too) is one line with the
    exit code from EXIT_CODES."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> NoReturn:
        try:
            extra.setdefault("default_map", _project_defaults(self))
            rv = super().main(args=args, prog_name=prog_name or "herd",
                              complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(USAGE_EXIT)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"herd: error: {mask_text(_one_line(exc.format_message()))}{hint}",
                       err=True)
            sys.exit(USAGE_EXIT)
        except click.ClickException as exc:
            click.echo(f"herd: error: {mask_text(_one_line(exc.format_message()))}", err=True)
            sys.exit(USAGE_EXIT)
        except HerdError as exc:  # [tool.herd] unreadable
            click.echo(f"herd: error: {mask_text(_one_line(str(exc)))}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("herd: interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT)
        sys.exit(rv if isinstance(rv, int) else 0)


def _find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _project_defaults(group: click.Group) -> dict[str, dict[str, Any]]:
    """``[tool.herd]`` from the nearest pyproject.toml as click's default_map.

    Keys are option names (``lock-timeout`` or ``lock_timeout``); ``[tool.herd.<verb>]``
    overrides them for one verb. A relative ``config`` is relative to the pyproject.toml.
    Precedence: command line > environment variables > [tool.herd] > built-in defaults.
    """
    path = _find_pyproject(Path.cwd())
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigurationError(f"{path} is not valid TOML ({exc}); fix it or remove "
                                 "[tool.herd]") from exc
    table = data.get("tool", {}).get("herd", {})
    if not isinstance(table, dict) or not table:
        return {}
    verbs = {name: cmd for name, cmd in group.commands.items()}
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    known = {p.name for cmd in verbs.values() for p in cmd.params
             if isinstance(p, click.Option) and p.name and p.name != "as_json"}
    result: dict[str, dict[str, Any]] = {}
    for verb, cmd in verbs.items():
        names = {p.name for p in cmd.params if isinstance(p, click.Option) and p.name}
        own = table.get(verb, {})
        merged = {**shared, **(own if isinstance(own, dict) else {})}
        values: dict[str, Any] = {}
        for key, value in merged.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigurationError(
                    f"[tool.herd] in {path} has unknown key {key!r}; known keys: "
                    f"{', '.join(sorted(k.replace('_', '-') for k in known))}")
            if name in names:
                relative = name == "config" and isinstance(value, str)
                values[name] = str((path.parent / value).resolve()) if relative else value
        result[verb] = values
    for key in table:
        if isinstance(table[key], dict) and key not in verbs:
            raise ConfigurationError(f"[tool.herd.{key}] in {path} names no herd command; "
                                     f"commands: {', '.join(sorted(verbs))}")
    return result


class _WrappingCommand(click.Command):
    """Keeps everything after the first ``--`` aside as the command to run."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[_COMMAND_KEY] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


@click.group(cls=_HerdGroup, epilog=_exit_code_table(),
             context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="herd")
def cli() -> None:
    """Safe Alembic migrations when many replicas start at once: one replica migrates
    under a database lock, the others wait until the schema is current.

    \b
    Environment (each verb's --help lists the ones it reads):
      ALEMBIC_CONFIG      path of alembic.ini (-c/--config)
      HERD_DATABASE_URL   database URL (--url); DATABASE_URL is used when it is unset
      HERD_LOCK_URL       direct connection for the lock (--lock-url)
      HERD_LOCK, HERD_LOCK_TIMEOUT, HERD_TIMEOUT, HERD_MODE, HERD_ALLOW_AHEAD,
      HERD_LOG_FORMAT     the options of the same names

    \b
    Configuration: command line > environment > [tool.herd] in the nearest
    pyproject.toml (keys are option names; [tool.herd.<verb>] for one verb) > defaults.
    """


# -- verbs --------------------------------------------------------------------------------


@cli.command(cls=_WrappingCommand, options_metavar="[OPTIONS] [-- COMMAND...]")
@_common()
@_target
@_lock
@_lock_timeout(spell(defaults.LOCK_TIMEOUT))
@_allow_ahead
def migrate(opts: Options, target: str, lock: str, lock_timeout: float,
            allow_ahead: bool) -> None:
    """Bring the database to the target: migrate under the lock, or wait for the replica
    that does.

    \b
    herd migrate -c alembic.ini
    herd migrate -c alembic.ini -- mytool db upgrade

    Everything after '--' is a command run instead of Alembic's upgrade while the lock is
    held (the scripts' heads still decide whether anything is pending).
    """
    command = click.get_current_context().meta.get(_COMMAND_KEY)
    if command is not None and not command:
        raise ConfigurationError(
            "'--' must be followed by the migration command to run, e.g. "
            "'herd migrate -c alembic.ini -- mytool db upgrade'")
    outcome = upgrade(opts.config, target=target, lock=lock, lock_timeout=lock_timeout,
                      command=command, allow_ahead=allow_ahead, **opts.project())
    _summary(outcome, opts)


@cli.command()
@_common()
@_target
@_timeout
@_allow_ahead
def wait(opts: Options, target: str, timeout: float, allow_ahead: bool) -> None:
    """Wait until the database is at the target. Never migrates, never takes the lock:
    for workers and schedulers."""
    outcome = wait_until_current(opts.config, target=target, timeout=timeout,
                                 allow_ahead=allow_ahead, **opts.project())
    _summary(outcome, opts)


@cli.command()
@_common(quiet_by_default=True)
@_target
@_lock
@_allow_ahead
@_connect_timeout
def check(opts: Options, target: str, lock: str, allow_ahead: bool,
          connect_timeout: float) -> int:
    """Exit 0 when the database is at the target, 1 when it is not (any other code is an
    error). Prints exactly one line."""
    st = status(opts.config, target=target, lock=lock, recent=0, allow_ahead=allow_ahead,
                connect_timeout=connect_timeout, **opts.project())
    if st.ahead:
        click.echo(f"current (ahead of this code): {st.version_table} at "
                   f"{_heads(st.current_heads)}, unknown {', '.join(st.ahead)}")
        return 0
    if st.is_current:
        click.echo(f"current: {st.version_table} at {_heads(st.current_heads)}")
        return 0
    click.echo(f"not current: {len(st.pending)} revision(s) pending ({', '.join(st.pending)})")
    return 1


@cli.command("status")
@_common()
@_target
@_lock
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--recent", type=click.IntRange(min=0), default=defaults.STATUS_RECENT,
              show_default=True,
              help="How many recent attempts to show.")
@_allow_ahead
@_connect_timeout
def status_(opts: Options, *, target: str, lock: str, as_json: bool, recent: int,
            allow_ahead: bool, connect_timeout: float) -> None:
    """Current and script heads, pending revisions, the lock holder, recent attempts."""
    st = status(opts.config, target=target, lock=lock, recent=recent, allow_ahead=allow_ahead,
                connect_timeout=connect_timeout, **opts.project())
    click.echo(_mask(_status_text(st) if not as_json else json.dumps(st.as_dict(), indent=2),
                     *opts.urls))


@cli.command("history")
@_common()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--limit", type=click.IntRange(min=1), default=defaults.HISTORY_LIMIT,
              show_default=True,
              help="How many attempts to show, newest first.")
@_connect_timeout
def history_(opts: Options, as_json: bool, limit: int, connect_timeout: float) -> None:
    """The attempt log: one row per revision per attempt, newest first."""
    rows = history(opts.config, limit=limit, connect_timeout=connect_timeout,
                   **opts.project())
    text = (json.dumps([row.as_dict() for row in rows], indent=2) if as_json
            else _history_text(rows))
    click.echo(_mask(text, *opts.urls))


@cli.command("resolve")
@_common()
@click.argument("revision")
@_lock
@_lock_timeout(spell(defaults.RESOLVE_LOCK_TIMEOUT))
def resolve_(opts: Options, revision: str, lock: str, lock_timeout: float) -> None:
    """Mark REVISION's unfinished attempts resolved, after repairing a half-applied revision
    by hand (takes the lock, so it cannot race a running migration)."""
    count = resolve(opts.config, revision, lock=lock, lock_timeout=lock_timeout,
                    **opts.project())
    click.echo(f"resolved {count} attempt(s) of {revision}")


@cli.command("unlock")
@_common()
@_lock
@click.option("--force", is_flag=True,
              help="Break a lease even though its holder renews it (the holder stops before "
                   "its next revision). Session locks are never forced.")
def unlock_(opts: Options, lock: str, force: bool) -> None:
    """Clear a stale migration lock. Refuses, naming the holder, while the holder is alive."""
    project = opts.project()
    del project["history_table"]  # unlock touches the lock only
    click.echo(_mask(unlock(opts.config, lock=lock, force=force, **project), *opts.urls))


@cli.command(cls=_WrappingCommand, options_metavar="[OPTIONS] -- COMMAND [ARGS]...")
@_common()
@click.option("--mode", type=click.Choice(["auto", "migrate", "wait"]), default="auto",
              show_default=True, envvar="HERD_MODE", show_envvar=True,
              help="auto/migrate: migrate, or wait for the replica that does; wait: never "
                   "migrate (workers, beat).")
@_target
@_lock
@_lock_timeout(spell(defaults.LOCK_TIMEOUT))
@_timeout
@_allow_ahead
def run(opts: Options, *, mode: str, target: str, lock: str, lock_timeout: float,
        timeout: float, allow_ahead: bool) -> None:
    """The container entrypoint: wait for the database, bring it current (or wait for it),
    then replace this process with COMMAND, so that signals and the exit code are COMMAND's.

    \b
    herd run -c alembic.ini -- uvicorn app.main:app            # web replicas
    herd run -c alembic.ini --mode wait -- celery -A app worker  # workers, beat

    A failure exits with the code in 'herd --help' and COMMAND is not started.
    """
    command = click.get_current_context().meta.get(_COMMAND_KEY)
    if not command:
        raise ConfigurationError(
            "herd run needs the command to start after '--', e.g. "
            "'herd run -c alembic.ini -- uvicorn app.main:app'")
    executable = shutil.which(command[0])
    if executable is None:
        raise ConfigurationError(
            f"command {command[0]!r} not found on PATH; check the command after '--' (nothing "
            "was migrated)")
    if mode == "wait":
        outcome = wait_until_current(opts.config, target=target, timeout=timeout,
                                     allow_ahead=allow_ahead, **opts.project())
    else:
        outcome = upgrade(opts.config, target=target, lock=lock, lock_timeout=lock_timeout,
                          allow_ahead=allow_ahead, **opts.project())
    logging.getLogger("alembic_herd").info(
        "%s; starting %s", outcome.describe(), _mask(" ".join(command), *opts.urls),
        extra={"herd_event": "exec", "herd": {"command": command[0]}})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(executable, command)
    except OSError as exc:
        raise ConfigurationError(
            f"command {command[0]!r} could not be started: {exc.strerror}; check that it is "
            "executable") from exc


@cli.command()
@click.option("--replicas", type=click.IntRange(min=1), default=8, show_default=True,
              metavar="N", help="How many replicas to start at the same moment.")
@click.option("--url", metavar="URL",
              help="A scratch database for the demo (it creates tables there); default: "
                   "a new embedded PostgreSQL.")
@click.option("--keep", is_flag=True,
              help="Leave the embedded PostgreSQL running at the end.")
@click.option("--traceback", is_flag=True, help="On an error, also print the traceback.")
def demo(replicas: int, url: str | None, keep: bool, traceback: bool) -> None:
    """Start a herd of replicas against one database and watch one migrate."""

    def run() -> int | None:
        try:
            module = importlib.import_module("alembic_herd.demo")
        except ImportError as exc:
            raise ConfigurationError(
                f"the demo is not available ({exc}); install it with "
                "pip install 'alembic-herd[demo]'") from exc
        extra = {"keep": True} if keep else {}
        result = module.main(replicas=replicas, url=url, **extra)
        return result if isinstance(result, int) else 0

    _guarded(url, traceback, run)


# -- output -------------------------------------------------------------------------------


def _heads(heads: Sequence[str]) -> str:
    return ", ".join(heads) or "base"


def _summary(outcome: Outcome, opts: Options) -> None:
    click.echo(_mask(outcome.describe(), opts.url))


def _status_text(st: Status) -> str:
    holder = st.holder.describe() if st.holder else "nobody"
    pending = (f"{len(st.pending)} revision(s): {', '.join(st.pending)}" if st.pending
               else "none (current)")
    lines = [
        f"database:       {st.url}",
        f"version table:  {st.version_table}",
        f"current heads:  {', '.join(st.current_heads) or 'none (empty database)'}",
        f"script heads:   {', '.join(st.script_heads) or 'none'}",
        f"pending:        {pending}",
        f"lock:           {st.lock}, held by {holder}",
    ]
    if st.recent:
        lines += ["recent attempts (newest first):", _history_text(st.recent, indent="  ")]
    return "\n".join(lines)


def _history_text(rows: Sequence[Attempt], indent: str = "") -> str:
    if not rows:
        return f"{indent}no attempts recorded"
    table = [("ID", "REVISION", "STATUS", "STARTED", "SECONDS", "REPLICA", "ERROR")]
    for row in rows:
        error = (row.error or "").strip().splitlines()
        table.append((
            str(row.id if row.id is not None else ""), row.revision, row.status,
            row.started.isoformat(timespec="seconds"),
            f"{row.duration:.2f}" if row.duration is not None else "",
            f"{row.host}:{row.pid}", error[-1] if error else "",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        (indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))).rstrip()
        for r in table
    )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``herd`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="herd")


if __name__ == "__main__":
    main()
