"""``herd``: the command line over :mod:`alembic_herd`.

Each verb parses its options (:mod:`._settings`: flags, environment, ``[tool.herd]``), makes
one library call and turns the result into output and an exit code (:mod:`._exits`); the
behaviour lives in the library. Log lines go to stderr as text or JSON (:mod:`._logformat`),
every line masked: a password given in ``--url`` or the environment is never shown.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from . import (  # through the package (lazy, PEP 562): an embedder may replace them
    __version__,
    downgrade,
    history,
    resolve,
    status,
    unlock,
    upgrade,
    wait_until_current,
)
from . import _defaults as defaults
from . import _settings as option
from ._api import offline_sql
from ._database import mask_text
from ._exits import HerdGroup, become, exit_code_table, guarded, leave, verb
from ._phases import Phase
from ._render import check_line, history_text, lint_text, status_text
from ._settings import Options
from .errors import NOT_CURRENT, SUCCESS, ConfigurationError


@click.group(cls=HerdGroup, help=option.HELP, epilog=exit_code_table(),
             context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="herd")
def cli() -> None:
    """The ``herd`` group; its help is :data:`._settings.HELP`."""


@cli.command(cls=option.WrappingCommand)
@verb()
@option.upgrading
@click.option("--sql", is_flag=True,
              help="Print the upgrade's SQL to stdout instead of running it (Alembic's offline "
                   "mode): no lock, no database connection.")
def migrate(opts: Options, *, revision: str | None, target: str, lock: str,
            lock_timeout: float, allow_ahead: bool, sql: bool, expand_only: bool,
            unmarked_phase: Phase, **lock_wait: Any) -> None:
    """Bring the database to the target: migrate under the lock, or wait for the replica
    that does.

    \b
    herd migrate -c alembic.ini
    herd migrate -c alembic.ini ae1027a6acf
    herd migrate -c alembic.ini --expand-only     # stop before the first contract revision
    herd migrate -c alembic.ini --sql > upgrade.sql
    herd migrate -c alembic.ini -- mytool db upgrade

    Everything after '--' is a command run instead of Alembic's upgrade while the lock is
    held (the scripts' heads still decide whether anything is pending).
    """
    target = option.chosen_target(revision, target)
    command = option.migration_command(sql=sql)
    if sql:
        offline_sql(opts.alembic_config(), target=target, url=opts.url)
        return
    outcome = upgrade(opts.alembic_config(), target=target, lock=lock, lock_timeout=lock_timeout,
                      command=command, allow_ahead=allow_ahead, expand_only=expand_only,
                      unmarked_phase=unmarked_phase, **lock_wait, **opts.project())
    click.echo(mask_text(outcome.describe(), opts.url))


@cli.command()
@verb()
@option.target
@option.timeout
@option.allow_ahead
@option.expand_only
@option.unmarked_phase
def wait(opts: Options, *, revision: str | None, target: str, timeout: float,
         allow_ahead: bool, expand_only: bool, unmarked_phase: Phase) -> None:
    """Wait until the database is at the target. Never migrates, never takes the lock:
    for workers and schedulers."""
    outcome = wait_until_current(opts.alembic_config(),
                                 target=option.chosen_target(revision, target), timeout=timeout,
                                 allow_ahead=allow_ahead, expand_only=expand_only,
                                 unmarked_phase=unmarked_phase, **opts.project())
    click.echo(mask_text(outcome.describe(), opts.url))


@cli.command()
@verb(quiet_by_default=True)
@option.target
@option.lock
@option.allow_ahead
@option.connect_timeout
@option.unmarked_phase
@option.expand_only
def check(opts: Options, *, revision: str | None, target: str, lock: str, allow_ahead: bool,
          connect_timeout: float, unmarked_phase: Phase, expand_only: bool) -> int:
    """Exit 0 when the database is at the target, 1 when it is not (any other code is an
    error). Prints exactly one line."""
    st = status(opts.alembic_config(), target=option.chosen_target(revision, target),
                lock=lock, recent=0, allow_ahead=allow_ahead, connect_timeout=connect_timeout,
                unmarked_phase=unmarked_phase, expand_only=expand_only, **opts.project())
    line, current = check_line(st)
    click.echo(line)
    return SUCCESS if current else NOT_CURRENT


@cli.command("status")
@verb()
@option.target
@option.lock
@option.json_output("Print one JSON object.")
@option.count("--recent", defaults.STATUS_RECENT, "How many recent attempts to show.", least=0)
@option.allow_ahead
@option.connect_timeout
@option.unmarked_phase
def status_(opts: Options, *, revision: str | None, target: str, lock: str, as_json: bool,
            recent: int, allow_ahead: bool, connect_timeout: float,
            unmarked_phase: Phase) -> None:
    """Current and script heads, pending revisions, the lock holder, recent attempts."""
    st = status(opts.alembic_config(), target=option.chosen_target(revision, target),
                lock=lock, recent=recent, allow_ahead=allow_ahead,
                connect_timeout=connect_timeout, unmarked_phase=unmarked_phase,
                **opts.project())
    click.echo(mask_text(status_text(st) if not as_json else json.dumps(st.as_dict(), indent=2),
                     *opts.urls))


@cli.command("history")
@verb()
@option.json_output("Print a JSON list.")
@option.count("--limit", defaults.HISTORY_LIMIT, "How many attempts to show, newest first.")
@option.connect_timeout
def history_(opts: Options, as_json: bool, limit: int, connect_timeout: float) -> None:
    """The attempt log: one row per revision per attempt, newest first."""
    rows = history(opts.alembic_config(), limit=limit, connect_timeout=connect_timeout,
                   **opts.project())
    text = (json.dumps([row.as_dict() for row in rows], indent=2) if as_json
            else history_text(rows))
    click.echo(mask_text(text, *opts.urls))


@cli.command("downgrade")
@verb()
@click.argument("target")
@option.lock
@option.lock_timeout(defaults.LOCK_TIMEOUT)
@click.option("--yes", is_flag=True,
              help="Confirm undoing contract revisions: their downgrade restores the schema, "
                   "not the data their upgrade dropped or rewrote.")
@option.unmarked_phase
def downgrade_(opts: Options, *, target: str, lock: str, lock_timeout: float, yes: bool,
               unmarked_phase: Phase) -> None:
    """Undo the revisions above TARGET (an id, base, -1) under the migration lock, with the
    attempt log. Undoing a contract revision needs --yes.

    \b
    herd downgrade -c alembic.ini a81b07
    """
    outcome = downgrade(opts.alembic_config(), target, lock=lock, lock_timeout=lock_timeout,
                        yes=yes, unmarked_phase=unmarked_phase, **opts.project())
    click.echo(mask_text(outcome.describe(), opts.url))


@cli.command("resolve")
@verb()
@click.argument("revision")
@option.lock
@option.lock_timeout(defaults.RESOLVE_LOCK_TIMEOUT)
def resolve_(opts: Options, revision: str, lock: str, lock_timeout: float) -> None:
    """Mark REVISION's unfinished attempts resolved, after repairing a half-applied revision
    by hand (takes the lock, so it cannot race a running migration)."""
    count = resolve(opts.alembic_config(), revision, lock=lock, lock_timeout=lock_timeout,
                    **opts.project())
    click.echo(mask_text(f"resolved {count} attempt(s) of {revision}", *opts.urls))


@cli.command("unlock")
@verb()
@option.lock
@click.option("--force", is_flag=True,
              help="Break a lease even though its holder renews it (the holder stops before "
                   "its next revision). Session locks are never forced.")
def unlock_(opts: Options, lock: str, force: bool) -> None:
    """Clear a stale migration lock. Refuses, naming the holder, while the holder is alive."""
    project = opts.project()
    del project["history_table"]  # unlock touches the lock only (and herd_schema: a lease's)
    done = unlock(opts.alembic_config(), lock=lock, force=force, **project)
    click.echo(mask_text(done, *opts.urls))


@cli.command(cls=option.WrappingCommand, after_dashes="-- COMMAND [ARGS]...")
@verb()
@click.option("--mode", type=click.Choice(["auto", "migrate", "wait"]), default="auto",
              show_default=True, envvar="HERD_MODE", show_envvar=True,
              help="auto/migrate: migrate, or wait for the replica that does; wait: never "
                   "migrate (workers, beat).")
@option.upgrading
@option.timeout
@option.migrate_command
def run(opts: Options, *, mode: str, revision: str | None, target: str, lock: str,
        lock_timeout: float, timeout: float, allow_ahead: bool, expand_only: bool,
        unmarked_phase: Phase, migrate_command: list[str] | None, **lock_wait: Any) -> None:
    """The container entrypoint: wait for the database, bring it current (or wait for it),
    then replace this process with COMMAND, so that signals and the exit code are COMMAND's.

    \b
    herd run -c alembic.ini -- uvicorn app.main:app            # web replicas
    herd run -c alembic.ini --mode wait -- celery -A app worker  # workers, beat
    herd run --migrate-command 'flask db upgrade' -- gunicorn app:app

    A failure exits with the code in 'herd --help' and COMMAND is not started.
    """
    target = option.chosen_target(revision, target)
    command, executable = option.command_to_start()
    if mode == "wait":
        outcome = wait_until_current(opts.alembic_config(), target=target, timeout=timeout,
                                     allow_ahead=allow_ahead, expand_only=expand_only,
                                     unmarked_phase=unmarked_phase, **opts.project())
    else:
        outcome = upgrade(opts.alembic_config(), target=target, lock=lock,
                          command=migrate_command, lock_timeout=lock_timeout,
                          allow_ahead=allow_ahead, **lock_wait, expand_only=expand_only,
                          unmarked_phase=unmarked_phase, **opts.project())
    become(command, executable, done=outcome.describe(), urls=opts.urls)


@cli.command("lint")
@verb()
@option.lint_options
def lint_(opts: Options, *, revisions: tuple[str, ...], since: str | None, dialect: str,
          server_version: str | None, pending: bool, as_json: bool) -> int:
    """Offline, no database: flag operations that break the previous release or lock tables
    under traffic. Exits 13 when a finding is not acknowledged (herd_lint_ignore).

    \b
    herd lint --dialect postgresql --since a81b07
    herd lint --json 3f2a9c c4d5e6
    """
    from . import lint  # the linter only for this verb
    config = opts.alembic_config()
    chosen = (status(config, **opts.project()).pending if option.lint_pending(pending, revisions,
              since) else revisions or None)
    report = lint(config, dialect=dialect, server_version=server_version,
                  revisions=chosen, since=since)
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(lint_text(report), nl=False)
        click.echo(f"herd: {report.summary()}", err=True)
    return report.exit_code


@cli.command()
@option.count("--replicas", defaults.DEMO_REPLICAS, "How many replicas to start at the same "
              "moment.", metavar="N")
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
        result = module.main(replicas=replicas, url=url, keep=keep)
        return result if isinstance(result, int) else 0

    guarded((url,), traceback, run)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``herd`` console script: leaves without the interpreter's teardown (see
    :func:`~._exits.leave`)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="herd")
    except SystemExit as done:
        leave(done.code)


if __name__ == "__main__":
    main()
