"""Wait until the database accepts connections (what prestart scripts do before migrating)."""

import os
import time

import sqlalchemy as sa

engine = sa.create_engine(os.environ["DATABASE_URL"])
for _ in range(60):
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        break
    except sa.exc.OperationalError:
        time.sleep(1)
