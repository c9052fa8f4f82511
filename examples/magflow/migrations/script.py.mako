"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""
<%
    # alembic -x herd_phase=expand revision -m "..."   (without -x: contract, the safe side)
    cmd_opts = getattr(context.get("config"), "cmd_opts", None)
    x_arguments = dict(arg.split("=", 1) for arg in (getattr(cmd_opts, "x", None) or []) if "=" in arg)
%>\
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# alembic-herd: "expand" if the previous release keeps working with this revision applied
# (a new table, a nullable column, an index built concurrently); "contract" if it breaks
# the previous release (drop, rename, NOT NULL, type change). See docs/rolling-deploys.md.
herd_phase = ${repr(x_arguments.get("herd_phase", "contract"))}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
