"""The application's models: what `alembic check` compares the database with."""

import sqlalchemy as sa

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(200)),  # added by e2_email
)

seen = sa.Table(  # what the first revision found in the database when it ran
    "seen", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision", sa.String(32), nullable=False),
    sa.Column("tables", sa.Text, nullable=False),
)
