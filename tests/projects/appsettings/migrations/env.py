"""env.py of an application that keeps its database URL in its own settings module.

Two common styles, chosen by MYAPP_ALEMBIC_STYLE (a test knob; a real project has one):

* ``set_main_option`` (default): write the URL into the config at import, then the stock
  offline/online functions read ``sqlalchemy.url`` as usual.
* ``configure_url``: leave the config alone (alembic.ini keeps the ``driver://`` placeholder)
  and pass the URL straight to ``context.configure(url=...)`` / ``create_engine``.
"""

import os
from logging.config import fileConfig

from alembic import context
from myapp import settings
from myapp.models import metadata
from sqlalchemy import create_engine, engine_from_config, pool

config = context.config
STYLE = os.environ.get("MYAPP_ALEMBIC_STYLE", "set_main_option")

if config.config_file_name is not None:
    fileConfig(config.config_file_name)

if STYLE == "set_main_option":
    config.set_main_option("sqlalchemy.url", settings.DATABASE_URL.replace("%", "%%"))

target_metadata = metadata


def run_migrations_offline() -> None:
    url = settings.DATABASE_URL if STYLE == "configure_url" else config.get_main_option(
        "sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    if STYLE == "configure_url":
        connectable = create_engine(settings.DATABASE_URL, poolclass=pool.NullPool)
    else:
        connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                         prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
