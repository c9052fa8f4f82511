"""orders.status only takes the values the worker writes: a CHECK constraint (contract)

Contract: code that writes any other status would have its orders refused once this is
applied, so it goes in after the rollout, when no pod of the previous release is left: the
contract Job (k8s/migrate-contract.yaml), not the Deployment's --expand-only pods.
Added NOT VALID (the table's strong lock is held only for the catalogue change, not while
existing rows are checked), then validated: VALIDATE CONSTRAINT takes a lock that lets reads
and writes go on.

Revision ID: 0006_orders_status_check
Revises: 0005_concurrent_indexes
Create Date: 2025-03-03 09:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0006_orders_status_check"
down_revision: str | None = "0005_concurrent_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
herd_phase = "contract"  # the previous release may break: after the rollout


def upgrade() -> None:
    op.create_check_constraint("ck_orders_status", "orders",
                               "status IN ('pending', 'confirmed', 'rejected')", schema="app",
                               postgresql_not_valid=True)
    op.execute("ALTER TABLE app.orders VALIDATE CONSTRAINT ck_orders_status")


def downgrade() -> None:
    op.drop_constraint("ck_orders_status", "orders", schema="app", type_="check")
