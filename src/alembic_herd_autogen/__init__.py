"""An Alembic plugin, so that autogenerate never offers to drop herd's own tables.

``alembic check`` and ``alembic revision --autogenerate`` compare the application's
``MetaData`` with the database; herd's tables (attempt log, revision graph, lease) are in the
database and not in the application's models, so Alembic would report ``remove_table
herd_history`` and write a migration that drops them. Installing alembic-herd registers this
module under Alembic's ``alembic.plugins`` entry point (Alembic 1.18 and later load such
plugins by themselves): its comparator runs last and removes those drops, and only those,
without any edit to env.py.

A table is herd's when its columns are exactly those of one of herd's tables (whatever its
name or schema: ``--history-table`` and ``--herd-schema`` may have moved it). The plugin is
named ``alembic.autogenerate.alembic_herd`` so that Alembic's default
``autogenerate_plugins`` (``["alembic.autogenerate.*"]``) includes it; an env.py that lists
its plugins itself adds that name, or leaves it out (``~alembic.autogenerate.alembic_herd``)
to see herd's tables again. For Alembic older than 1.18, env.py passes
``include_name=alembic_herd_autogen.include_name`` to ``context.configure()``.

This package is imported while Alembic itself is being imported: it imports nothing of
Alembic's at module level, and nothing of alembic_herd (whose ``__init__`` imports Alembic),
hence its own top-level package.
"""

from __future__ import annotations

from typing import Any

# The column names of herd's tables (checked against the definitions by a test).
HERDS_COLUMNS: tuple[frozenset[str], ...] = (
    frozenset({"id", "scope", "attempt", "revision", "status", "started", "finished",
               "duration", "success", "error", "host", "pid"}),  # attempt log
    frozenset({"scope", "revision", "parents", "phase"}),  # revision graph
    frozenset({"name", "owner", "host", "pid", "acquired", "expires", "heartbeat"}),  # lease
)


def is_herds(columns: Any) -> bool:
    """Whether a table with these column names is one of herd's."""
    return frozenset(str(c) for c in columns) in HERDS_COLUMNS


def drop_herds_tables(autogen_context: Any, upgrade_ops: Any) -> Any:
    """Alembic's top-level autogenerate comparator, run last: forget the drops of herd's
    tables that the table comparison found, and of their indexes."""
    from alembic.operations import ops
    from alembic.util import PriorityDispatchResult

    herds = {(op.schema, op.table_name) for op in upgrade_ops.ops
             if isinstance(op, ops.DropTableOp) and is_herds(op.to_table().columns.keys())}

    def keep(op: Any) -> bool:
        if isinstance(op, ops.DropTableOp | ops.ModifyTableOps | ops.DropIndexOp):
            return (op.schema, op.table_name) not in herds
        return True

    upgrade_ops.ops[:] = [op for op in upgrade_ops.ops if keep(op)]
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Any) -> None:
    """Called by Alembic for the ``alembic.plugins`` entry point."""
    from alembic.util import DispatchPriority

    plugin.add_autogenerate_comparator(drop_herds_tables, "autogenerate",
                                       priority=DispatchPriority.LAST)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """For env.py with Alembic older than 1.18 (no plugins): ``context.configure(...,
    include_name=include_name)`` leaves herd's tables (by their default names) out of
    autogenerate."""
    return not (type_ == "table" and name in ("herd_history", "herd_revisions", "herd_lock"))
