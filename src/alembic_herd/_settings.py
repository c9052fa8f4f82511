"""The settings a ``herd`` verb takes: each option, its environment variable, its default
(from :mod:`alembic_herd._defaults`), and the ``[tool.herd]`` table in pyproject.toml.

Precedence, highest first: command line > environment variables > ``[tool.herd]`` in the
nearest pyproject.toml > the defaults. click reads the command line and the environment;
:func:`project_defaults` turns ``[tool.herd]`` into click's ``default_map``, accepting
exactly the option names the verbs declare here.
"""

from __future__ import annotations

import shlex
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from alembic.config import Config

from . import _defaults as defaults
from ._durations import spell, to_seconds
from ._environment import load_config
from ._laneargs import find_pyproject
from ._logformat import LOG_FORMATS, LogFormat
from .errors import ConfigurationError

URL_ENVVARS = ["HERD_DATABASE_URL", "DATABASE_URL"]
CONFIG_ENVVAR = "ALEMBIC_CONFIG"
_COMMAND_KEY = "alembic_herd.command"

F = TypeVar("F", bound=Callable[..., Any])


HELP = """Safe Alembic migrations when many replicas start at once: one replica migrates
under a database lock, the others wait until the schema is current.

\b
Environment (each verb's --help lists the ones it reads):
  ALEMBIC_CONFIG      path of alembic.ini (-c/--config)
  HERD_DATABASE_URL   database URL (--url); DATABASE_URL is used when it is unset
  HERD_LOCK_URL       direct connection for the lock (--lock-url)
  HERD_LOCK, HERD_LOCK_TIMEOUT, HERD_TIMEOUT, HERD_MODE, HERD_ALLOW_AHEAD,
  HERD_EXPAND_ONLY, HERD_UNMARKED_PHASE, HERD_SCHEMA, HERD_MIGRATE_COMMAND,
  HERD_LOG_FORMAT     the options of the same names

\b
Configuration: command line > environment > [tool.herd] in the nearest
pyproject.toml (keys are option names; [tool.herd.<verb>] for one verb) > defaults.
"""
"""``herd --help``: what herd is, the environment it reads, and the precedence."""


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
    name: str | None
    script_location: str | None
    x_argument: tuple[str, ...]
    url: str | None
    lock_url: str | None
    version_table: str | None
    version_table_schema: str | None
    history_table: str
    herd_schema: str | None
    verbose: int
    quiet: bool
    log_format: LogFormat
    traceback: bool

    @property
    def urls(self) -> tuple[str | None, ...]:
        return (self.url, self.lock_url)

    def alembic_config(self) -> Config:
        """The Alembic ``Config``: the file, its ``-n`` section, ``-d`` and the ``-x``
        arguments (``context.get_x_argument()`` in env.py reads them)."""
        return load_config(self.config, ini_section=self.name,
                           script_location=self.script_location, x_arguments=self.x_argument)

    def project(self) -> dict[str, Any]:
        """Keyword arguments naming the project and database, for every library call."""
        return {"url": self.url, "lock_url": self.lock_url, "version_table": self.version_table,
                "version_table_schema": self.version_table_schema,
                "history_table": self.history_table, "herd_schema": self.herd_schema}

    @classmethod
    def take(cls, kwargs: dict[str, Any]) -> Options:
        """Remove the common options from a verb's keyword arguments."""
        return cls(**{name: kwargs.pop(name) for name in cls.__dataclass_fields__})


COMMON_OPTIONS: list[Callable[[F], F]] = [
    click.option("-c", "--config", default=defaults.CONFIG_FILE, show_default=True,
                 envvar=CONFIG_ENVVAR, show_envvar=True, metavar="PATH",
                 help="The Alembic config file (alembic.ini)."),
    click.option("-n", "--name", metavar="SECTION",
                 help="The config file's section for this project, as in Alembic (default: "
                      "alembic)."),
    click.option("-d", "--script-location", metavar="PATH",
                 help="The migrations folder (with env.py), instead of the config's "
                      "script_location."),
    click.option("-x", "--x-argument", multiple=True, metavar="KEY=VALUE",
                 help="An argument for env.py (context.get_x_argument()), as in Alembic; "
                      "repeatable."),
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
                 help="herd's attempt log table: NAME or SCHEMA.NAME (default schema: "
                      "--herd-schema)."),
    click.option("--herd-schema", envvar="HERD_SCHEMA", show_envvar=True, metavar="SCHEMA",
                 help="Where herd's own tables go (attempt log, revision graph, lease): a "
                      "PostgreSQL schema, a MySQL/MariaDB database. Default: the version "
                      "table's schema."),
    click.option("-v", "--verbose", count=True,
                 help="More logging: herd's debug messages and Alembic's own log."),
    click.option("-q", "--quiet", is_flag=True,
                 help="Log errors only; the result line on stdout is still printed."),
    click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
                 show_default=True, envvar="HERD_LOG_FORMAT", show_envvar=True,
                 help="Log lines on stderr as text or one JSON object each."),
    click.option("--traceback", is_flag=True,
                 help="On an error, also print the Python traceback."),
]


def target(fn: F) -> F:
    """``[REVISION]`` or ``--target REVISION`` (Alembic's habit is the positional one); the
    verb receives one ``target``."""
    fn = click.argument("revision", required=False, metavar="[REVISION]")(fn)
    return click.option("--target", default="head", show_default=True, metavar="REVISION",
                        help="Revision to bring the database to (head, heads, branch@head, "
                             "an id); also the positional REVISION.")(fn)


def chosen_target(revision: str | None, target: str) -> str:
    """The target of a verb given ``[REVISION]`` and ``--target``: the positional one, unless
    ``--target`` was given on the command line too and names another revision."""
    if revision is None:
        return target
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("target") == click.core.ParameterSource.COMMANDLINE
    if given and target != revision:
        raise ConfigurationError(
            f"two targets: REVISION {revision!r} and --target {target!r}; give one of them")
    return revision


def allow_ahead(fn: F) -> F:
    return click.option("--allow-ahead", is_flag=True, envvar="HERD_ALLOW_AHEAD",
                        show_envvar=True,
                        help="Treat a database at revisions this code does not know as "
                             "current even when one of them is contract (by default only "
                             "expand ones are; else exit 5).")(fn)


def expand_only(fn: F) -> F:
    return click.option("--expand-only", is_flag=True, envvar="HERD_EXPAND_ONLY",
                        show_envvar=True,
                        help="Stop before the first contract revision (the first step of a "
                             "rolling deploy): migrate/run apply only the revisions before it, "
                             "wait/check count only those; the rest is reported.")(fn)


def unmarked_phase(fn: F) -> F:
    return click.option("--unmarked-phase", type=click.Choice(["contract", "expand"]),
                        default=defaults.UNMARKED_PHASE, show_default=True,
                        envvar="HERD_UNMARKED_PHASE", show_envvar=True,
                        help="What a revision without herd_phase counts as, for "
                             "--expand-only and for code older than the database.")(fn)


def timeout(fn: F) -> F:
    return click.option("--timeout", callback=_duration, metavar="DURATION",
                        default=spell(defaults.WAIT_TIMEOUT),
                        show_default=True, envvar="HERD_TIMEOUT", show_envvar=True,
                        help="How long to wait for the database to become current, with a "
                             "unit: 90s, 5m, 1h.")(fn)


def connect_timeout(fn: F) -> F:
    return click.option("--connect-timeout", callback=_duration, metavar="DURATION",
                        default=spell(defaults.CONNECT_TIMEOUT), show_default=True,
                        envvar="HERD_CONNECT_TIMEOUT",
                        show_envvar=True,
                        help="How long to try to reach the database, with a unit: 3s. Keep it "
                             "under a probe's own timeout.")(fn)


def lock(fn: F) -> F:
    return click.option("--lock", type=click.Choice(["auto", "advisory", "table", "file"]),
                        default="auto", show_default=True, envvar="HERD_LOCK",
                        show_envvar=True,
                        help="Lock backend: auto picks advisory on PostgreSQL/MySQL/MariaDB, "
                             "file on SQLite.")(fn)


def lock_timeout(default: float) -> Callable[[F], F]:
    return click.option("--lock-timeout", callback=_duration, metavar="DURATION",
                        default=spell(default), show_default=True, envvar="HERD_LOCK_TIMEOUT",
                        show_envvar=True,
                        help="How long to try to connect and take the lock, with a unit: "
                             "90s, 5m, 1h.")


def _duration_or_off(ctx: click.Context, param: click.Parameter, value: Any) -> float:
    """Option callback: a duration, or 'off' (0)."""
    if isinstance(value, str) and value.strip().lower() in ("off", "0"):
        return 0.0
    return _duration(ctx, param, value)


def _spell_or_off(seconds: float) -> str:
    return spell(seconds) if seconds > 0 else "off"


def lock_wait(fn: F) -> F:
    """The options of the migration session's lock-wait policy (:mod:`._lockwait`)."""
    for add in reversed([
        click.option("--lock-wait-timeout", callback=_duration_or_off, metavar="DURATION",
                     default=_spell_or_off(defaults.LOCK_WAIT_TIMEOUT), show_default=True,
                     envvar="HERD_LOCK_WAIT_TIMEOUT", show_envvar=True,
                     help="How long one statement of a migration may wait for a table lock "
                          "(the application's queries queue behind it meanwhile) before its "
                          "revision is rolled back and tried again with a longer wait; 'off' "
                          "leaves the database's own setting and never retries."),
        click.option("--lock-wait-attempts", type=click.IntRange(min=1),
                     default=str(defaults.LOCK_WAIT_ATTEMPTS), show_default=True,
                     envvar="HERD_LOCK_WAIT_ATTEMPTS", show_envvar=True,
                     help="How many times a revision whose lock wait timed out is tried in "
                          "all."),
        click.option("--lock-wait-budget", callback=_duration, metavar="DURATION",
                     default=spell(defaults.LOCK_WAIT_BUDGET), show_default=True,
                     envvar="HERD_LOCK_WAIT_BUDGET", show_envvar=True,
                     help="The time all those attempts may take together."),
        click.option("--statement-timeout", callback=_duration_or_off, metavar="DURATION",
                     default=_spell_or_off(defaults.STATEMENT_TIMEOUT), show_default=True,
                     envvar="HERD_STATEMENT_TIMEOUT", show_envvar=True,
                     help="A cap on any one statement of a migration (PostgreSQL, MariaDB); "
                          "a statement that runs longer fails its revision."),
    ]):
        fn = add(fn)
    return fn


def lint_options(fn: F) -> F:
    """The options of ``herd lint``: which revisions, for which database, in which format."""
    for add in reversed([
        click.argument("revisions", nargs=-1, metavar="[REVISION]..."),
        click.option("--since", metavar="REVISION",
                     help="Check the revisions after this one, up to the heads (in CI: the "
                          "revision production runs). Default: from the base."),
        click.option("--dialect", type=click.Choice(defaults.LINT_DIALECTS), default="postgresql",
                     show_default=True, help="The database the SQL is rendered for."),
        click.option("--server-version", metavar="VERSION",
                     help="The target server's version, e.g. 10 or 8.0.11 (default: a "
                          "current release)."),
        click.option("--pending", is_flag=True,
                     help="Check the revisions the database (--url) has not applied yet; "
                          "the only option that connects."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]):
        fn = add(fn)
    return fn


class WrappingCommand(click.Command):
    """Keeps everything after the first ``--`` aside as the command to run (see
    :func:`command_after_dashes`); ``after_dashes`` ends the usage line."""

    def __init__(self, *args: Any, after_dashes: str = "[-- COMMAND...]", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_dashes = after_dashes

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.after_dashes]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[_COMMAND_KEY] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


def command_after_dashes() -> list[str] | None:
    """The words after ``--`` on the current command line; ``None`` without a ``--``."""
    command: list[str] | None = click.get_current_context().meta.get(_COMMAND_KEY)
    return command


def migration_command(*, sql: bool) -> list[str] | None:
    """``herd migrate``'s command after ``--``, if any (not with ``--sql``)."""
    command = command_after_dashes()
    if command is not None and not command:
        raise ConfigurationError(
            "'--' must be followed by the migration command to run, e.g. "
            "'herd migrate -c alembic.ini -- mytool db upgrade'")
    if sql and command is not None:
        raise ConfigurationError(
            "--sql prints Alembic's SQL and cannot run the command after '--'; drop one")
    return command


def lint_pending(pending: bool, revisions: tuple[str, ...], since: str | None) -> bool:
    """Whether ``herd lint`` checks the database's pending revisions (one way of choosing)."""
    if pending and (revisions or since):
        raise ConfigurationError("herd lint: --pending cannot be combined with REVISION or "
                                 "--since; give one way of choosing the revisions")
    return pending


def json_output(help_text: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def count(name: str, default: int, help_text: str, *, least: int = 1,
          metavar: str | None = None) -> Callable[[F], F]:
    """A whole-number option (how many of something) with its default shown."""
    return click.option(name, type=click.IntRange(min=least), default=default,
                        show_default=True, metavar=metavar, help=help_text)


def upgrading(fn: F) -> F:
    """The options of every verb that may migrate (migrate, run)."""
    for add in reversed([target, lock, lock_timeout(defaults.LOCK_TIMEOUT), allow_ahead,
                         lock_wait, expand_only, unmarked_phase]):
        fn = add(fn)
    return fn


def _command_words(ctx: click.Context, param: click.Parameter, value: Any) -> list[str] | None:
    """Option callback: a command line split as a POSIX shell would (``shlex``); a list of
    words (from ``[tool.herd]``) is taken as it is; empty means none."""
    if isinstance(value, list | tuple):
        words = [str(word) for word in value]
    else:
        try:
            words = shlex.split(str(value or ""))
        except ValueError as exc:
            raise click.UsageError(f"--migrate-command {value!r} is not a command line "
                                   f"({exc}); quote it as a shell would", ctx) from exc
    return words or None


def migrate_command(fn: F) -> F:
    return click.option("--migrate-command", callback=_command_words, metavar="COMMAND",
                        envvar="HERD_MIGRATE_COMMAND", show_envvar=True,
                        help="The project's own migration command ('flask db upgrade', a "
                             "prestart script), run under the lock instead of Alembic's "
                             "upgrade, as 'herd migrate -- COMMAND' runs it; split like a "
                             "shell would. Ignored with --mode wait.")(fn)


def command_to_start() -> tuple[list[str], str]:
    """``herd run``'s command after ``--`` and its executable, checked before anything is
    migrated."""
    command = command_after_dashes()
    if not command:
        raise ConfigurationError(
            "herd run needs the command to start after '--', e.g. "
            "'herd run -c alembic.ini -- uvicorn app.main:app'")
    executable = shutil.which(command[0])
    if executable is None:
        raise ConfigurationError(
            f"command {command[0]!r} not found on PATH; check the command after '--' (nothing "
            "was migrated)")
    return command, executable


# -- [tool.herd] ----------------------------------------------------------------------------




def _option_names(command: click.Command) -> set[str]:
    return {p.name for p in command.params if isinstance(p, click.Option) and p.name}


def project_defaults(verbs: Mapping[str, click.Command],
                     start: Path | None = None) -> dict[str, dict[str, Any]]:
    """``[tool.herd]`` from the nearest pyproject.toml (from ``start``, by default the
    current directory, upwards) as click's default_map.

    Keys are option names (``lock-timeout`` or ``lock_timeout``); ``[tool.herd.<verb>]``
    overrides them for one verb. A relative ``config`` is relative to the pyproject.toml.
    A key no verb has, or a table naming no verb, is refused.
    """
    path = find_pyproject(start or Path.cwd())
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
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    known = {name for command in verbs.values() for name in _option_names(command)}
    known.discard("as_json")
    result: dict[str, dict[str, Any]] = {}
    for verb, command in verbs.items():
        names = _option_names(command)
        own = table.get(verb, {})
        values: dict[str, Any] = {}
        for key, value in {**shared, **(own if isinstance(own, dict) else {})}.items():
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
