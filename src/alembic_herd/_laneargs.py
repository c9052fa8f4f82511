"""The fast lane's settings: the options of ``herd check`` / ``migrate`` / ``run`` read the
way click reads them (command line > environment > ``[tool.herd]`` in the nearest
pyproject.toml > defaults), every value validated as the normal path would; anything the
lane does not handle raises :class:`Fallback`. Standard library only (:mod:`._fastlane`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _defaults as defaults

VERBS = ("check", "migrate", "run")
_HISTORY_TABLE = defaults.HISTORY_TABLE
TRUE = {"1", "true", "t", "yes", "y", "on"}


class Fallback(Exception):
    """The lane cannot decide: the normal path runs."""


# -- the options, read as click reads them ------------------------------------------------

_COMMON = {  # option -> (name, kind); kind: value, flag, multi, count
    "-c": ("config", "value"), "--config": ("config", "value"),
    "-n": ("name", "value"), "--name": ("name", "value"),
    "-d": ("script_location", "value"), "--script-location": ("script_location", "value"),
    "-x": ("x_argument", "multi"), "--x-argument": ("x_argument", "multi"),
    "--url": ("url", "value"), "--lock-url": ("lock_url", "value"),
    "--version-table": ("version_table", "value"),
    "--version-table-schema": ("version_table_schema", "value"),
    "--history-table": ("history_table", "value"), "--herd-schema": ("herd_schema", "value"),
    "-v": ("verbose", "count"), "--verbose": ("verbose", "count"),
    "-q": ("quiet", "flag"), "--quiet": ("quiet", "flag"),
    "--log-format": ("log_format", "value"), "--traceback": ("traceback", "flag"),
    "--target": ("target", "value"), "--lock": ("lock", "value"),
    "--allow-ahead": ("allow_ahead", "flag"), "--expand-only": ("expand_only", "flag"),
    "--unmarked-phase": ("unmarked_phase", "value"),
}
_UPGRADING = {
    "--lock-timeout": ("lock_timeout", "value"),
    "--lock-wait-timeout": ("lock_wait_timeout", "value"),
    "--lock-wait-attempts": ("lock_wait_attempts", "value"),
    "--lock-wait-budget": ("lock_wait_budget", "value"),
    "--statement-timeout": ("statement_timeout", "value"),
}
_OPTIONS = {
    "check": {**_COMMON, "--connect-timeout": ("connect_timeout", "value")},
    "migrate": {**_COMMON, **_UPGRADING},
    "run": {**_COMMON, **_UPGRADING, "--timeout": ("timeout", "value"),
            "--mode": ("mode", "value"), "--migrate-command": ("migrate_command", "value")},
}
_ENVVARS = {
    "config": ["ALEMBIC_CONFIG"], "url": ["HERD_DATABASE_URL", "DATABASE_URL"],
    "lock_url": ["HERD_LOCK_URL"], "history_table": ["HERD_HISTORY_TABLE"],
    "herd_schema": ["HERD_SCHEMA"], "log_format": ["HERD_LOG_FORMAT"], "lock": ["HERD_LOCK"],
    "allow_ahead": ["HERD_ALLOW_AHEAD"], "expand_only": ["HERD_EXPAND_ONLY"],
    "unmarked_phase": ["HERD_UNMARKED_PHASE"], "lock_timeout": ["HERD_LOCK_TIMEOUT"],
    "lock_wait_timeout": ["HERD_LOCK_WAIT_TIMEOUT"],
    "lock_wait_attempts": ["HERD_LOCK_WAIT_ATTEMPTS"],
    "lock_wait_budget": ["HERD_LOCK_WAIT_BUDGET"],
    "statement_timeout": ["HERD_STATEMENT_TIMEOUT"], "timeout": ["HERD_TIMEOUT"],
    "connect_timeout": ["HERD_CONNECT_TIMEOUT"], "mode": ["HERD_MODE"],
    "migrate_command": ["HERD_MIGRATE_COMMAND"],
}
_DEFAULTS: dict[str, Any] = {
    "config": defaults.CONFIG_FILE, "history_table": _HISTORY_TABLE, "log_format": "text",
    "lock": "auto", "unmarked_phase": defaults.UNMARKED_PHASE, "target": "head", "mode": "auto",
    "verbose": 0, "quiet": False, "traceback": False, "allow_ahead": False,
    "expand_only": False, "x_argument": (),
}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_DURATIONS = {"lock_timeout", "lock_wait_budget", "timeout", "connect_timeout"}
_DURATIONS_OR_OFF = {"lock_wait_timeout", "statement_timeout"}


@dataclass
class Settings:
    verb: str
    values: dict[str, Any]
    command: list[str] | None
    pyproject: Path | None

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name)


def parse(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> Settings:
    """The verb's settings, or :class:`Fallback` for anything the lane does not handle."""
    if not argv or argv[0] not in VERBS:
        raise Fallback("not a verb of the lane")
    verb, args = argv[0], list(argv[1:])
    options = _OPTIONS[verb]
    command: list[str] | None = None
    if "--" in args:
        if verb == "check":
            raise Fallback("-- with check")
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1:]
    given: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if name not in options:
            raise Fallback(f"option {name}")
        dest, kind = options[name]
        if kind in ("flag", "count"):
            if eq:
                raise Fallback(f"{name}=")
            given[dest] = given.get(dest, 0) + 1 if kind == "count" else True
            continue
        if eq:
            value = inline
        elif i < len(args):
            value, i = args[i], i + 1
        else:
            raise Fallback(f"{name} without a value")
        if not value.strip():
            raise Fallback(f"{name} empty")  # the normal path's own reading (or error)
        if kind == "multi":
            given[dest] = (*given.get(dest, ()), value)
        else:
            given[dest] = value
    if len(positional) > 1:
        raise Fallback("several arguments")
    pyproject = _find_pyproject(cwd)
    table = _tool_herd(pyproject)
    values: dict[str, Any] = {}
    names = {dest for dest, _ in options.values()}
    for dest in names | {"target"}:
        if dest in given:
            values[dest] = given[dest]
        elif any(environ.get(var) for var in _ENVVARS.get(dest, ())):
            values[dest] = next(environ[v] for v in _ENVVARS[dest] if environ.get(v))
        elif dest in table.get(verb, {}):
            values[dest] = table[verb][dest]
        elif dest in table.get("", {}):
            values[dest] = table[""][dest]
        else:
            values[dest] = _DEFAULTS.get(dest)
        if dest == "config" and dest not in given and not any(
                environ.get(v) for v in _ENVVARS["config"]) and pyproject is not None and (
                dest in table.get(verb, {}) or dest in table.get("", {})):
            values[dest] = str((pyproject.parent / str(values[dest])).resolve())
    for keys in table.values():  # the normal path refuses an unknown key in any table
        if set(keys) - _KNOWN_KEYS - _OTHER_KEYS:
            raise Fallback("[tool.herd] key")
    if positional:
        if "target" in given and given["target"] != positional[0]:
            raise Fallback("two targets")
        values["target"] = positional[0]
    _validate(values)
    return Settings(verb, values, command, pyproject)


_KNOWN_KEYS = {dest for opts in _OPTIONS.values() for dest, _ in opts.values()}
_OTHER_KEYS = {"recent", "limit", "yes", "force", "since", "dialect", "server_version",
               "pending", "replicas", "keep"}
"""Options of the other verbs (a ``[tool.herd]`` key the lane ignores, as click does)."""


def _validate(values: dict[str, Any]) -> None:
    """Every value is one the normal path accepts (else it would fail: fall back), and
    none asks for something the lane does not do."""
    from ._durations import to_seconds
    from .errors import ConfigurationError

    if values.get("verbose"):
        raise Fallback("-v")
    if values["target"] not in ("head", "heads"):
        raise Fallback("target")
    for name, choices in (("log_format", ("text", "json")),
                          ("lock", ("auto", "advisory", "table", "file")),
                          ("unmarked_phase", ("contract", "expand")),
                          ("mode", ("auto", "migrate", "wait"))):
        if name in values and values[name] not in choices:
            raise Fallback(name)
    for name in ("quiet", "traceback", "allow_ahead", "expand_only"):
        value = values.get(name)
        if isinstance(value, str):
            if value.strip().lower() not in TRUE | _FALSE:
                raise Fallback(name)
            values[name] = value.strip().lower() in TRUE
        elif value is not None and not isinstance(value, bool):
            raise Fallback(name)
    for name in _DURATIONS | _DURATIONS_OR_OFF:
        value = values.get(name)
        if value is None or isinstance(value, bool):
            if value is not None:
                raise Fallback(name)
            continue
        if name in _DURATIONS_OR_OFF and str(value).strip().lower() in ("off", "0"):
            continue
        try:
            if not isinstance(value, int | float):
                to_seconds(str(value), name=name)
        except ConfigurationError as exc:
            raise Fallback(name) from exc
    attempts = values.get("lock_wait_attempts")
    if attempts is not None:
        try:
            if int(str(attempts)) < 1:
                raise Fallback("attempts")
        except ValueError as exc:
            raise Fallback("attempts") from exc
    words = values.get("migrate_command")
    if isinstance(words, str):
        try:
            values["migrate_command"] = shlex.split(words) or None
        except ValueError as exc:
            raise Fallback("migrate command") from exc
    elif isinstance(words, list | tuple):
        values["migrate_command"] = [str(w) for w in words] or None
    x = values.get("x_argument")
    if x is not None and not isinstance(x, list | tuple):
        raise Fallback("x-argument")
    for name in ("config", "name", "script_location", "url", "lock_url", "version_table",
                 "version_table_schema", "history_table", "herd_schema"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise Fallback(name)


def _find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _tool_herd(path: Path | None) -> dict[str, dict[str, Any]]:
    """``[tool.herd]`` as {'': shared keys, verb: its table}, keys as option names."""
    if path is None:
        return {}
    text = path.read_text()
    if "herd" not in text:
        return {}
    import tomllib

    try:
        table = tomllib.loads(text).get("tool", {}).get("herd", {})
    except tomllib.TOMLDecodeError as exc:
        raise Fallback("pyproject") from exc
    if not isinstance(table, dict):
        raise Fallback("[tool.herd]")
    result: dict[str, dict[str, Any]] = {"": {}}
    for key, value in table.items():
        if isinstance(value, dict):
            result[key] = {k.replace("-", "_"): v for k, v in value.items()}
            if key not in ("check", "migrate", "run", "wait", "status", "history",
                           "downgrade", "resolve", "unlock", "lint", "demo"):
                raise Fallback("[tool.herd.?]")
        else:
            result[""][key.replace("-", "_")] = value
    return result
