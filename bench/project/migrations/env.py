"""A standard env.py. On PostgreSQL its connection is named ``bench alembic env.py`` so
that the connection sampler can tell Alembic's connection from herd's own."""

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
APPLICATION_NAME = "bench alembic env.py"


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    connect_args = {"application_name": APPLICATION_NAME} if url.startswith("postgresql") else {}
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool,
                                     connect_args=connect_args)
    with connectable.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
