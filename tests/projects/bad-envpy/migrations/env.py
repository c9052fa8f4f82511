"""A standard env.py that fails online when HERD_TEST_ENV_FAILS says how."""

import importlib
import os
import time

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
FAILS = os.environ.get("HERD_TEST_ENV_FAILS", "")


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    time.sleep(float(os.environ.get("HERD_TEST_ENV_DELAY", "0")))  # every replica waits by then
    if FAILS == "raise":
        raise RuntimeError("settings.DATABASE_POOL is not configured")
    if FAILS == "flask":  # Flask-Migrate's env.py reads current_app outside the app
        raise RuntimeError("Working outside of application context.")
    if FAILS == "import":
        importlib.import_module("app_settings_that_do_not_exist")
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
