"""A plain env.py with target_metadata (autogenerate and `alembic check` use it).
``-x plugins=none`` turns Alembic's plugin for herd off (the control of tests/test_footprint.py:
autogenerate then offers to drop herd's tables)."""

import os
import sys
from pathlib import Path

from alembic import context
from sqlalchemy import engine_from_config, pool

sys.path.insert(0, str(Path(__file__).parent.parent))
import models

config = context.config
if not config.get_main_option("sqlalchemy.url"):  # plain `alembic check`: the environment's
    config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"].replace("%", "%%"))
target_metadata = models.metadata
options = {}
if context.get_x_argument(as_dictionary=True).get("plugins") == "none":
    options["autogenerate_plugins"] = ["alembic.autogenerate.*",
                                       "~alembic.autogenerate.alembic_herd"]


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, **options)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
