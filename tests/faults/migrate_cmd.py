"""The wrapped command of the ``command`` fault class: a plain ``alembic upgrade head`` on
the faultset, ``python tests/faults/migrate_cmd.py CONFIG``, reading the URL from
``HERD_FAULT_URL`` (herd runs it as ``herd migrate -- CMD`` under its lock)."""

import os
import sys

from alembic import command
from alembic.config import Config

config = Config(sys.argv[1])
config.set_main_option("sqlalchemy.url", os.environ["HERD_FAULT_URL"].replace("%", "%%"))
command.upgrade(config, "head")
