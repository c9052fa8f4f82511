"""herd's record of the revision graph, so that code older than the database can decide
whether it may run on it.

A leader writes, before its first revision, one row per revision it is about to apply: the
revision, its parents (``down_revision``; several for a merge) and the phase its file
declares (``NULL`` when unmarked). One statement per run, not per revision, on herd's own
connection; a revision that then fails leaves a row nobody reads (the walk starts from the
version table). When and by whom a revision was applied is the attempt log's ``applied``
row.

A replica whose scripts lack the database's heads (:func:`judge`) walks these rows from the
database's heads back to revisions its scripts know. It may run when every revision on the
way is expand; an unmarked revision, or one without a row (applied by plain Alembic, or by
herd before it recorded the graph), counts as the unmarked setting, contract by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.script import Script
from alembic.util import to_tuple
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from . import _defaults as defaults
from ._environment import Environment
from ._history import History
from ._phases import Phase, declared_phase
from ._tables import ensure_table, read_if_exists, split_name
from .errors import DatabaseAheadError

_UPSERTS: dict[tuple[str, str], Any] = {}  # built once per dialect and table: see _upsert
_SQLITE_ROWS = 999 // 4  # SQLite before 3.32 binds at most 999 parameters per statement


def graph_table(name: str = defaults.GRAPH_TABLE, schema: str | None = None) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("scope", sa.String(191), primary_key=True),
        sa.Column("revision", sa.String(64), primary_key=True),
        sa.Column("parents", sa.Text, nullable=False),  # space separated; '' for the first
        sa.Column("phase", sa.String(16)),  # 'expand', 'contract' or NULL (unmarked)
        schema=schema,
    )


def beside(history_table: str) -> sa.Table:
    """The graph, in the schema of the attempt log ``history_table`` (``[schema.]name``):
    herd's tables stay together (``--herd-schema``)."""
    schema, _ = split_name(history_table, option="--history-table")
    return graph_table(schema=schema)


def record(conn: Connection, scope: str, scripts: list[Script], *,
           history_table: str = defaults.HISTORY_TABLE, absent: bool = False,
           created: bool = False) -> None:
    """Store ``scripts`` (the revisions a leader is about to apply) in the graph, replacing
    what an earlier run stored for them. The caller holds the lock; ``absent``: it saw the
    attempt log missing, so the graph (created after it) is taken as missing too (see
    :func:`~._tables.ensure_table`); ``created``: the caller just made sure it exists."""
    if not scripts:
        return
    table = beside(history_table)
    if not created:  # else the caller created it with the attempt log (History.ensure)
        ensure_table(conn, table, absent=absent)
    rows = [{"scope": scope, "revision": s.revision,
             "parents": " ".join(to_tuple(s.down_revision, default=())),
             "phase": declared_phase(s)} for s in scripts]
    if conn.dialect.name == "sqlite":  # herd's SQLite connection commits each statement:
        # an executemany would be a commit (a file sync) per row; a few multi-row ones
        for first in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[first:first + _SQLITE_ROWS]
            lite = sqlite.insert(table).values(chunk)
            conn.execute(lite.on_conflict_do_update(
                index_elements=["scope", "revision"],
                set_={"parents": lite.excluded.parents, "phase": lite.excluded.phase}))
        return
    conn.execute(_upsert(conn.dialect.name, table), rows)


def _upsert(dialect: str, table: sa.Table) -> Any:
    """The graph's upsert of one row, for an executemany (the driver sends the rows in one
    multi-row statement, or pipelines them): built once, not a statement of N rows that
    SQLAlchemy compiles anew for each N (which cost a 200-revision leader more than its
    round trip)."""
    key = (dialect, table.fullname)
    if key not in _UPSERTS:
        _UPSERTS[key] = _build_upsert(dialect, table)
    return _UPSERTS[key]


def _build_upsert(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(index_elements=["scope", "revision"],
                                        set_={"parents": pg.excluded.parents,
                                              "phase": pg.excluded.phase})
    if dialect in ("mysql", "mariadb"):
        my = mysql.insert(table)
        return my.on_duplicate_key_update(parents=my.inserted.parents, phase=my.inserted.phase)
    lite = sqlite.insert(table)
    return lite.on_conflict_do_update(index_elements=["scope", "revision"],
                                      set_={"parents": lite.excluded.parents,
                                            "phase": lite.excluded.phase})


@dataclass(frozen=True)
class Entry:
    """One revision the database has and this code lacks, as herd's graph knows it."""

    revision: str
    parents: tuple[str, ...]
    declared: Phase | None
    recorded: bool
    """False: no row in the graph (applied outside herd, or before herd recorded it)."""

    def phase(self, unmarked: Phase) -> Phase:
        return self.declared or unmarked

    def why(self, unmarked: Phase) -> str:
        """Why this revision counts as its phase, for a message."""
        if not self.recorded:
            return (f"{self.revision} has no entry in herd's revision graph (applied by plain "
                    "alembic, or before herd recorded phases) and counts as unmarked, which "
                    f"is {unmarked} (--unmarked-phase)")
        if self.declared is None:
            return (f"{self.revision} is unmarked (no herd_phase), which counts as {unmarked} "
                    "(--unmarked-phase)")
        return f"{self.revision} is a {self.declared} revision"


@dataclass(frozen=True)
class Verdict:
    """Whether code that lacks the database's heads may run on it."""

    ahead: tuple[Entry, ...]
    """The revisions the database has and this code lacks, oldest first (as far as known)."""
    error: DatabaseAheadError | None
    """Why not; ``None`` when this code may run."""

    @property
    def revisions(self) -> tuple[str, ...]:
        return tuple(e.revision for e in self.ahead)

    def line(self) -> str:
        return (f"database is ahead by {', '.join(self.revisions)} (all expand); this release "
                "can run on it")


def judge(conn: Connection, env: Environment, heads: tuple[str, ...], unknown: tuple[str, ...],
          *, target: str, unmarked: Phase, history_table: str) -> Verdict:
    """Walk herd's graph from the database's ``heads`` back to revisions ``env``'s scripts
    know: code may run when every revision on the way is expand and the database has every
    revision this code would apply up to ``target``."""
    scope = env.qualified_version_table
    table = beside(history_table)
    query = sa.select(table.c.revision, table.c.parents, table.c.phase).where(
        table.c.scope == scope)
    empty: Sequence[sa.Row[Any, Any, Any]] = ()
    rows = read_if_exists(conn, table, lambda: conn.execute(query).all(), empty,
                          role="herd's revision graph", optional=True)
    stored: dict[str, tuple[str, str | None]] = {r.revision: (r.parents, r.phase) for r in rows}
    known = {h for h in heads if h not in unknown}
    found: list[Entry] = []
    todo, seen = list(unknown), set(unknown)
    while todo:  # breadth first from the heads: newest first
        rev = todo.pop(0)
        parents_text, phase = stored.get(rev, ("", None))
        parents = tuple(parents_text.split())
        declared: Phase | None = phase if phase in ("expand", "contract") else None  # type: ignore[assignment]
        found.append(Entry(rev, parents, declared, recorded=rev in stored))
        for parent in parents:
            if env._known(parent):
                known.add(parent)
            elif parent not in seen:
                seen.add(parent)
                todo.append(parent)
    ahead = tuple(reversed(found))
    names = ", ".join(e.revision for e in ahead)
    vt = env.qualified_version_table
    blocking = next((e for e in ahead if e.phase(unmarked) == "contract"), None)
    if blocking is not None:
        when = _applied(conn, scope, blocking.revision, history_table)
        return Verdict(ahead, DatabaseAheadError(
            f"database version table {vt!r} is ahead of this code by {names}: "
            f"{blocking.why(unmarked)} ({when}), so this release cannot run on it; deploy a "
            f"release that has {blocking.revision}, or start anyway with --allow-ahead",
            unknown=unknown))
    below = set().union(*(env.applied((k,)) - {k} for k in known))
    lacking = env.pending(tuple(sorted(known - below)), target)
    hidden = next((e for e in ahead if not e.recorded), None)
    if lacking and hidden is not None:
        return Verdict(ahead, DatabaseAheadError(
            f"database version table {vt!r} is ahead of this code by {names}: "
            f"{hidden.why(unmarked)}, but herd cannot see which revisions came before it; "
            f"deploy a release that has {hidden.revision}, or start anyway with --allow-ahead",
            unknown=unknown))
    if lacking:
        return Verdict(ahead, DatabaseAheadError(
            f"database version table {vt!r} is ahead of this code by {names} (all expand) but "
            f"lacks {', '.join(lacking)} of this code's revisions: it went another way; deploy "
            f"a release that has {names}, or start anyway with --allow-ahead",
            unknown=unknown))
    return Verdict(ahead, None)


def _applied(conn: Connection, scope: str, revision: str, history_table: str) -> str:
    """When and by whom the attempt log says ``revision`` was applied."""
    history = History(conn, scope, table=history_table, optional=True, writer=False)
    t = history.table
    rows = history.rows(where=[t.c.revision == revision, t.c.status == "applied"], limit=1)
    if not rows:
        return "when and by whom: not in herd's attempt log"
    row = rows[0]
    at = (row.finished or row.started).isoformat(timespec="seconds")
    return f"applied {at} by host {row.host}, pid {row.pid}"
