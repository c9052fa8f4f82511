"""The project's own CLI: ``python -m shop.cli db upgrade`` migrates, then rebuilds the price
index from the products (work that must run once per deploy, after the schema changed)."""

import argparse
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config


def upgrade() -> None:
    config = Config(str(Path(__file__).with_name("alembic.ini")))
    command.upgrade(config, "head")
    engine = sa.create_engine(os.environ["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO index_rebuild (products) "
                             "SELECT count(*) FROM product"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="shop")
    sub = parser.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="migrate to head and rebuild the price index")
    parser.parse_args()
    upgrade()


if __name__ == "__main__":
    main()
