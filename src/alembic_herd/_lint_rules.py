"""The rules of ``herd lint``: which rendered SQL statements break the previous release or
hold long locks under traffic.

Each rule looks at one statement parsed by sqlglot. Rules that *break old code* (drop,
rename, NOT NULL, type change) apply only to revisions not marked contract: a contract
revision is deployed after the old release is gone, which is the fix. Rules about *locks and
rewrites* apply to every revision, because a contract revision still runs under the new
release's traffic. Statements on a table created earlier in the same revision are skipped:
nothing reads that table yet and it is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp

CONTRACT_FIX = (
    "mark the revision herd_phase = 'contract' and deploy it after the old release is gone"
)


@dataclass(frozen=True)
class Rule:
    """One thing herd lint flags, and what to do instead."""

    id: str
    breaks_old_code: bool
    fix: str


RULES: dict[str, Rule] = {rule.id: rule for rule in (
    Rule("drop-table", True, CONTRACT_FIX),
    Rule("drop-column", True, CONTRACT_FIX),
    Rule("rename-table", True,
         "create the new table beside the old one (or a view under the old name) and drop "
         "the old one in a revision marked herd_phase = 'contract'"),
    Rule("rename-column", True,
         "add the new column, have the new release write both, and drop the old one in a "
         "revision marked herd_phase = 'contract'"),
    Rule("not-null", True,
         "add the column nullable or with a server default now; set NOT NULL in a revision "
         "marked herd_phase = 'contract' once every writer fills it"),
    Rule("column-type-change", True,
         "add a column of the new type and backfill it; drop the old column in a revision "
         "marked herd_phase = 'contract'"),
    Rule("index-not-concurrent", False,
         "use op.create_index(..., postgresql_concurrently=True) inside "
         "op.get_context().autocommit_block() (for a unique constraint: create the unique "
         "index concurrently, then ADD CONSTRAINT ... USING INDEX)"),
    Rule("constraint-not-valid", False,
         "add it with postgresql_not_valid=True, then run ALTER TABLE ... VALIDATE "
         "CONSTRAINT in a later revision (it does not block writes)"),
    Rule("default-rewrites-table", False,
         "add the column without a default, then SET DEFAULT (new rows only) and backfill "
         "existing rows in batches"),
    Rule("unrenderable", False,
         "make upgrade() renderable offline (no reads through op.get_bind()), or check its "
         "SQL by hand and acknowledge with herd_lint_ignore"),
)}

# Functions PostgreSQL evaluates once per statement (STABLE), so a default built from them
# alone does not rewrite the table on PostgreSQL 11+; any other function may be volatile.
_STABLE = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentUser, exp.Cast)
_CONSTANT = (exp.Literal, exp.Null, exp.Boolean, exp.Neg, exp.DataType, exp.DataTypeParam)


@dataclass(frozen=True)
class Target:
    """The database the SQL is checked for: a dialect name and, optionally, its version."""

    dialect: str
    version: tuple[int, ...] | None = None

    def older_than(self, *version: int) -> bool:
        """True only when a version was given and it is older (None means a current one)."""
        return self.version is not None and self.version < version

    @property
    def is_mysql(self) -> bool:
        return self.dialect in ("mysql", "mariadb")

    @property
    def sqlglot_dialect(self) -> str:
        """sqlglot's name for the dialect (it reads MariaDB as MySQL)."""
        return {"postgresql": "postgres", "mariadb": "mysql"}.get(self.dialect, self.dialect)


def table_name(table: exp.Expr) -> str:
    """``schema.table`` in lower case, to match a table across statements."""
    if isinstance(table, exp.Schema):
        table = table.this
    if isinstance(table, exp.Table):
        return ".".join(part for part in (table.db, table.name) if part).lower()
    return table.sql().lower()


def created_table(statement: exp.Expr) -> str | None:
    """The table a CREATE TABLE statement creates."""
    if isinstance(statement, exp.Create) and statement.args.get("kind") == "TABLE":
        return table_name(statement.this)
    return None


def subject_table(statement: exp.Expr) -> str | None:
    """The table a statement alters, indexes or drops."""
    if isinstance(statement, exp.Alter):
        return table_name(statement.this)
    if isinstance(statement, exp.Create) and statement.args.get("kind") == "INDEX":
        return table_name(statement.this.args["table"])
    if isinstance(statement, exp.Drop) and statement.args.get("tables"):
        return table_name(statement.args["tables"][0])
    return None


def check(statement: exp.Expr, target: Target) -> Iterator[tuple[str, str]]:
    """(rule id, what happens) for each problem in one statement."""
    if isinstance(statement, exp.Drop) and statement.args.get("kind") == "TABLE":
        for table in statement.args.get("tables") or [statement.this]:
            yield "drop-table", f"drops table {table_name(table)}, which the previous release reads"
    elif isinstance(statement, exp.Create) and statement.args.get("kind") == "INDEX":
        if target.dialect == "postgresql" and not statement.args.get("concurrently"):
            yield ("index-not-concurrent",
                   "builds the index under a lock that blocks writes to the table until done")
    elif isinstance(statement, exp.Alter) and statement.args.get("kind") == "TABLE":
        table = table_name(statement.this)
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
    if default is not None and isinstance(default, exp.Null):
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
        if any(isinstance(node, exp.Func) and not isinstance(node, _STABLE)
               for node in default.walk()):
            return ("the default may be volatile, so PostgreSQL writes it into every row "
                    "under an exclusive lock")
    elif target.is_mysql and not all(
            isinstance(node, (*_CONSTANT, exp.CurrentTimestamp)) for node in default.walk()):
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
