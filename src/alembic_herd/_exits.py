"""How a ``herd`` verb runs (:func:`verb`: its log on stderr, signals handled) and how it
ends: an exit code from :data:`~alembic_herd.errors.EXIT_CODES` and, when it failed, one line
on stderr saying why.

* a :class:`~alembic_herd.errors.HerdError`: ``herd: error: <its message>``, its exit code;
* bad usage (an unknown option, a bad value): ``herd: error: ...``, exit 3 like any other
  configuration error;
* SIGTERM / SIGINT (:class:`~._signals.Interrupted`): ``herd: error: stopped by SIGTERM``,
  exit 128 + the signal (143, 130); Ctrl-C outside the handlers: ``herd: interrupted``, 130;
* anything else is herd's own bug: ``herd: internal error: <type>: <first line>``, exit 2;
* ``herd run`` succeeds by becoming its command (:func:`become`).

``--traceback`` adds the Python traceback before the line. Every line is masked with the
command's URLs.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from ._database import mask_text
from ._log import event
from ._logformat import logging_to_stderr
from ._settings import COMMON_OPTIONS, F, Options, project_defaults
from ._signals import Interrupted, handling_signals
from .errors import EXIT_CODES, INTERNAL_ERROR, INTERRUPTED, SUCCESS, ConfigurationError, HerdError

USAGE_ERROR = ConfigurationError.exit_code

Urls = tuple[str | None, ...]


def become(command: list[str], executable: str, *, done: str, urls: Urls) -> NoReturn:
    """End ``herd run`` by replacing this process with ``command`` (``execv``): it keeps
    herd's pid, receives the container's signals, and its exit code is the container's."""
    event("exec", "%s; starting %s", done, mask_text(" ".join(command), *urls), command=command[0])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(executable, command)
    except OSError as exc:
        raise ConfigurationError(
            f"command {command[0]!r} could not be started: {exc.strerror}; check that it is "
            "executable") from exc


def leave(code: object) -> NoReturn:
    """End the ``herd`` process as soon as its outcome is out: flush the output and the log,
    run the ``atexit`` handlers (an embedded server's cleanup), then ``os._exit``. The
    interpreter's own teardown (freeing every module and object: about 0.1 s of CPU, paid by
    every replica of a herd at the same moment) is skipped; herd's connections are closed
    and its threads are done by then. Only the console script does this; the library and
    ``cli.main`` (used in-process) end normally."""
    if code is None:
        status = SUCCESS
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        status = 1
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a handler failed or the reader went away: still exit with the code
        status = status or INTERNAL_ERROR
    os._exit(status)


def exit_code_table() -> str:
    """:data:`~alembic_herd.errors.EXIT_CODES` as the epilog of ``herd --help``."""
    rows = "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items())
    return f"\b\nExit codes:\n{rows}"


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def fail(exc: BaseException, *, urls: Urls, show_traceback: bool) -> NoReturn:
    """Report ``exc`` as one line on stderr (after the traceback, when asked) and exit."""
    if show_traceback:
        trace = "".join(traceback.format_exception(exc))
        click.echo(mask_text(trace, *urls).rstrip(), err=True)
    if isinstance(exc, HerdError):
        click.echo(f"herd: error: {mask_text(one_line(str(exc)), *urls)}", err=True)
        _exit(exc.exit_code)
    if isinstance(exc, Interrupted):
        detail = f" {exc.detail}" if exc.detail else ""
        click.echo(mask_text(f"herd: error: stopped by {exc.name}{detail}", *urls), err=True)
        _exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        click.echo("herd: interrupted", err=True)
        _exit(INTERRUPTED)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[0] if lines else ""
    hint = "" if show_traceback else " (run with --traceback for details)"
    click.echo(mask_text(f"herd: internal error: {type(exc).__name__}: {detail}{hint}", *urls),
               err=True)
    _exit(INTERNAL_ERROR)


def guarded(urls: Urls, show_traceback: bool, call: Callable[[], int | None]) -> NoReturn:
    """Run one verb's ``call``; its result (``None`` is 0) or exception is the exit code."""
    try:
        code = call()
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except (Exception, KeyboardInterrupt, Interrupted) as exc:
        fail(exc, urls=urls, show_traceback=show_traceback)
    _exit(code or SUCCESS)


def exit_after(run: Callable[[], object]) -> NoReturn:
    """Run click non-standalone (``run``) and exit: click's own errors, and a ``[tool.herd]``
    that cannot be read, become one line and an exit code like every other error."""
    try:
        result = run()
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        sys.exit(USAGE_ERROR)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"herd: error: {mask_text(one_line(exc.format_message()))}{hint}", err=True)
        sys.exit(USAGE_ERROR)
    except click.ClickException as exc:
        click.echo(f"herd: error: {mask_text(one_line(exc.format_message()))}", err=True)
        sys.exit(USAGE_ERROR)
    except HerdError as exc:  # [tool.herd] unreadable
        click.echo(f"herd: error: {mask_text(one_line(str(exc)))}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("herd: interrupted", err=True)
        sys.exit(INTERRUPTED)
    sys.exit(result if isinstance(result, int) else SUCCESS)


# -- how a verb runs ------------------------------------------------------------------------


def verb(*, quiet_by_default: bool = False) -> Callable[[F], F]:
    """Add the common options; the verb receives them as one :class:`Options`, runs with
    herd's log on stderr, and its result or exception becomes the exit code."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> None:
            opts = Options.take(kwargs)
            with logging_to_stderr(urls=opts.urls, verbose=opts.verbose, quiet=opts.quiet,
                                   log_format=opts.log_format,
                                   quiet_by_default=quiet_by_default), handling_signals():
                guarded(opts.urls, opts.traceback, lambda: fn(opts, **kwargs))

        for add_option in reversed(COMMON_OPTIONS):
            wrapper = add_option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


class HerdGroup(click.Group):
    """Runs click non-standalone, so that every error (usage errors too) is one line with
    its exit code; ``[tool.herd]`` supplies the defaults."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> NoReturn:
        def run() -> Any:
            extra.setdefault("default_map", project_defaults(self.commands))
            return super(HerdGroup, self).main(
                args=args, prog_name=prog_name or "herd", complete_var=complete_var,
                standalone_mode=False, **extra)

        exit_after(run)
