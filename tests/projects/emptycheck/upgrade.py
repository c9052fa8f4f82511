"""The project's own upgrade command: ``python upgrade.py`` (URL in DATABASE_URL).

A new database (no table but Alembic's version table) gets the current models and is
stamped at head; any other database runs the revisions after the baseline."""

import os
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

sys.path.insert(0, str(Path(__file__).parent))
import models

url = os.environ["DATABASE_URL"]
config = Config(str(Path(__file__).parent / "alembic.ini"))
config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
engine = sa.create_engine(url)
tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
engine.dispose()
if not tables:
    print("new database: creating the models and stamping head", file=sys.stderr)
    engine = sa.create_engine(url)
    models.metadata.create_all(engine)
    engine.dispose()
    command.stamp(config, "head")
else:
    print(f"existing database ({', '.join(sorted(tables))}): upgrading", file=sys.stderr)
    command.upgrade(config, "head")
