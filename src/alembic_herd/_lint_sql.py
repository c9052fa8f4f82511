"""How ``herd lint`` reads SQL: each statement one revision rendered, parsed with sqlglot
and matched against the rules of ``_lint_rules``.

Statements on a table created earlier in the same revision are skipped: nothing reads that
table yet and it is empty. A statement sqlglot cannot parse is not checked (sqlglot logs a
warning naming it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import sqlglot
from sqlglot import exp

from ._lint_rules import Target

# What sqlglot calls a function but PostgreSQL does not evaluate per row: casts and the STABLE
# current_* functions. A default built from these alone does not rewrite the table on
# PostgreSQL 11+; any other function may be volatile (random(), gen_random_uuid(), nextval()).
_NOT_VOLATILE = (exp.Cast, exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime,
                 exp.CurrentUser)
# What MySQL and MariaDB add instantly as a default: a literal or CURRENT_TIMESTAMP; a
# parenthesised expression default makes them rebuild the table.
_INSTANT_DEFAULT = (exp.Literal, exp.Null, exp.Boolean, exp.Neg, exp.CurrentTimestamp)


class Problem(NamedTuple):
    """What one rule found in one rendered statement."""

    rule: str
    statement: str
    detail: str


def problems(statements: Sequence[str], target: Target) -> Iterator[Problem]:
    """The problems in the statements one revision renders, in order."""
    new_tables: set[str] = set()
    for text in statements:
        try:
            parsed = sqlglot.parse(_spell_out(text), read=target.sqlglot_dialect)
        except sqlglot.errors.SqlglotError:
            continue  # not SQL sqlglot knows: not checked
        for statement in filter(None, parsed):
            created = _created_table(statement)
            subject = _subject_table(statement)
            if created is not None:
                new_tables.add(created)
            elif subject is None or subject not in new_tables:
                for rule, detail in _check(statement, target):
                    yield Problem(rule, text, detail)


# Alembic renders a PostgreSQL column rename as "ALTER TABLE t RENAME c TO d" (COLUMN is
# optional there); sqlglot 30 reads that as a rename of the table to "c".
_IMPLICIT_RENAME_COLUMN = re.compile(
    r"^(\s*ALTER\s+TABLE\s+\S+\s+RENAME\s+)(?!TO\b|COLUMN\b|CONSTRAINT\b)", re.IGNORECASE)


def _spell_out(sql: str) -> str:
    return _IMPLICIT_RENAME_COLUMN.sub(r"\1COLUMN ", sql)


def _table_name(table: exp.Expr) -> str:
    """``schema.table`` in lower case, to match a table across statements."""
    if isinstance(table, exp.Schema):
        table = table.this
    if isinstance(table, exp.Table):
        return ".".join(part for part in (table.db, table.name) if part).lower()
    return table.sql().lower()


def _created_table(statement: exp.Expr) -> str | None:
    """The table a CREATE TABLE statement creates."""
    if isinstance(statement, exp.Create) and statement.args.get("kind") == "TABLE":
        return _table_name(statement.this)
    return None


def _subject_table(statement: exp.Expr) -> str | None:
    """The table a statement alters, indexes or drops."""
    if isinstance(statement, exp.Alter):
        return _table_name(statement.this)
    if isinstance(statement, exp.Create) and statement.args.get("kind") == "INDEX":
        return _table_name(statement.this.args["table"])
    if isinstance(statement, exp.Drop) and statement.args.get("tables"):
        return _table_name(statement.args["tables"][0])
    return None


def _check(statement: exp.Expr, target: Target) -> Iterator[tuple[str, str]]:
    """(rule id, what happens) for each problem in one statement."""
    if isinstance(statement, exp.Drop) and statement.args.get("kind") == "TABLE":
        for table in statement.args.get("tables") or []:
            yield ("drop-table",
                   f"drops table {_table_name(table)}, which the previous release reads")
    elif isinstance(statement, exp.Create) and statement.args.get("kind") == "INDEX":
        if target.dialect == "postgresql" and not statement.args.get("concurrently"):
            yield ("index-not-concurrent",
                   "builds the index under a lock that blocks writes to the table until done")
    elif isinstance(statement, exp.Alter) and statement.args.get("kind") == "TABLE":
        table = _table_name(statement.this)
        for action in statement.args.get("actions") or []:
            yield from _check_alter(table, action, statement, target)


def _check_alter(table: str, action: exp.Expr, statement: exp.Alter,
                 target: Target) -> Iterator[tuple[str, str]]:
    if isinstance(action, exp.Drop) and action.args.get("kind") == "COLUMN":
        for column in action.args.get("tables") or []:
            yield ("drop-column",
                   f"drops column {table}.{column.name}, which the previous release reads")
    elif isinstance(action, exp.AlterRename):
        yield "rename-table", f"renames table {table}: the previous release uses the old name"
    elif isinstance(action, exp.RenameColumn):
        yield ("rename-column", f"renames column {table}.{action.this.name}: the previous "
               "release uses the old name")
    elif isinstance(action, exp.AlterColumn):
        if action.args.get("dtype") is not None:
            yield ("column-type-change", f"changes the type of {table}.{action.name}: the "
                   "previous release may write values the new type rejects, and the table "
                   "is rewritten under an exclusive lock")
        if action.args.get("allow_null") is False and not action.args.get("drop"):
            yield ("not-null", f"sets {table}.{action.name} NOT NULL: the previous release "
                   "may insert rows without it, and the whole table is scanned under an "
                   "exclusive lock")
    elif isinstance(action, exp.ModifyColumn):
        yield from _check_modify(table, action)
    elif isinstance(action, exp.ColumnDef):
        yield from _check_add_column(table, action, target)
    elif isinstance(action, exp.AddConstraint) and target.dialect == "postgresql":
        yield from _check_add_constraint(table, action, statement)


def _check_modify(table: str, action: exp.ModifyColumn) -> Iterator[tuple[str, str]]:
    """MySQL/MariaDB MODIFY and CHANGE restate the whole column: the SQL cannot tell which
    part changed, so a restated column counts as a type change (the table is copied)."""
    column = action.this
    old_name = action.args.get("rename_from")
    if old_name is not None and old_name.name.lower() != column.name.lower():
        yield ("rename-column", f"renames column {table}.{old_name.name} to {column.name}: "
               "the previous release uses the old name")
    else:
        yield ("column-type-change", f"redefines column {table}.{column.name} "
               f"({column.sql(dialect='mysql')}): a changed type or NOT NULL breaks the "
               "previous release's writes, and the table is copied")


def _check_add_column(table: str, column: exp.ColumnDef,
                      target: Target) -> Iterator[tuple[str, str]]:
    kinds = [c.args.get("kind") for c in column.args.get("constraints") or []]
    not_null = any(isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")
                   for k in kinds)
    default = next((k.this for k in kinds if isinstance(k, exp.DefaultColumnConstraint)), None)
    if isinstance(default, exp.Null):
        default = None
    name = f"{table}.{column.name}"
    if not_null and default is None:
        yield ("not-null", f"adds {name} NOT NULL without a default: inserts by the previous "
               "release fail, and so does the statement on a table with rows")
    if default is not None:
        reason = _default_rewrite(default, target)
        if reason:
            default_sql = default.sql(dialect=target.sqlglot_dialect)
            yield "default-rewrites-table", f"adds {name} with DEFAULT {default_sql}: {reason}"
    kind = column.args.get("kind")
    if target.dialect == "postgresql" and isinstance(kind, exp.DataType) and kind.this in (
            exp.DataType.Type.SERIAL, exp.DataType.Type.BIGSERIAL,
            exp.DataType.Type.SMALLSERIAL):
        yield ("default-rewrites-table", f"adds {name} as {kind.sql()}: its nextval() default "
               "is volatile, so every row is rewritten under an exclusive lock")


def _default_rewrite(default: exp.Expr, target: Target) -> str | None:
    """Why adding a column with this default rewrites the table, or None if it does not."""
    if target.dialect == "postgresql":
        if target.older_than(11):
            return ("PostgreSQL before 11 writes the default into every row under an "
                    "exclusive lock")
        if any(isinstance(node, exp.Func) and not isinstance(node, _NOT_VOLATILE)
               for node in default.walk()):
            return ("the default may be volatile, so PostgreSQL writes it into every row "
                    "under an exclusive lock")
    elif target.is_mysql and not all(
            isinstance(node, _INSTANT_DEFAULT) for node in default.walk()):
        return ("an expression default cannot be added instantly: MySQL and MariaDB "
                "rebuild the table")
    return None


def _check_add_constraint(table: str, action: exp.AddConstraint,
                          statement: exp.Alter) -> Iterator[tuple[str, str]]:
    for constraint in action.expressions:
        if constraint.find(exp.ForeignKey, exp.CheckColumnConstraint) is not None:
            if not statement.args.get("not_valid"):
                yield ("constraint-not-valid", f"adds constraint {constraint.name or '?'} on "
                       f"{table} and checks every row while holding a lock that blocks writes")
        elif constraint.find(exp.UniqueColumnConstraint, exp.PrimaryKey) is not None:
            yield ("index-not-concurrent", f"adds constraint {constraint.name or '?'} on "
                   f"{table}, building its index under a lock that blocks writes")
