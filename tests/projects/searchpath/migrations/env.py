"""env.py that keeps everything in one PostgreSQL schema by setting the connection's
``search_path`` before handing it to Alembic: ``context.configure()`` is given no schema, so
the version table is wherever the search_path puts it. The schema (``-x schema=NAME``,
default ``app``) exists already: the database's owner created it."""

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
SCHEMA = context.get_x_argument(as_dictionary=True).get("schema", "app")


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.execute(f"SET search_path TO {SCHEMA}")
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        connection.execute(text(f"SET search_path TO {SCHEMA}"))
        connection.commit()
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
