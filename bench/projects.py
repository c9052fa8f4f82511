"""The migration sets.

* :data:`HERDSET`: ``bench/project``, four Alembic revisions (the same as the herd tests'
  ``tests/projects/herdset``): two tables, a column, a data migration inserting one row into
  a table without a unique constraint, an index.
* :func:`write_yoyo_set`: the same DDL and data row as yoyo-migrations steps, in the SQL
  dialect of each backend (yoyo runs raw SQL).
* :func:`write_chain`: a linear chain of N generated Alembic revisions, each creating one
  small table, with an alembic.ini that names the database (so the ``alembic`` and ``herd``
  command lines need no URL option).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.engine import URL

HERE = Path(__file__).resolve().parent
HERDSET = HERE / "project"
HERDSET_INI = HERDSET / "alembic.ini"
ENV_PY = HERDSET / "migrations" / "env.py"

# the data row the correctness column counts
SEEDED_SQL = "SELECT count(*) FROM settings WHERE name = 'seeded'"

_AUTOINCREMENT = {
    "postgresql": "id SERIAL PRIMARY KEY",
    "mariadb": "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "id INTEGER PRIMARY KEY",
}


def yoyo_steps(backend: str) -> list[tuple[str, list[str]]]:
    return [
        ("0001_accounts", [
            "CREATE TABLE accounts (id INTEGER NOT NULL PRIMARY KEY, "
            "email VARCHAR(200) NOT NULL)",
        ]),
        ("0002_settings", [
            f"CREATE TABLE settings ({_AUTOINCREMENT[backend]}, name VARCHAR(100) NOT NULL, "
            "value VARCHAR(100) NOT NULL)",
            "ALTER TABLE accounts ADD COLUMN created VARCHAR(40)",
        ]),
        ("0003_seed", ["INSERT INTO settings (name, value) VALUES ('seeded', 'once')"]),
        ("0004_index", ["CREATE INDEX ix_accounts_email ON accounts (email)"]),
    ]


def write_yoyo_set(backend: str, folder: Path) -> Path:
    """yoyo migrations equivalent to :data:`HERDSET` for ``backend``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = None
    for name, statements in yoyo_steps(backend):
        depends = f"{{{previous!r}}}" if previous else "set()"
        steps = ",\n    ".join(f"step({sql!r})" for sql in statements)
        (folder / f"{name}.py").write_text(
            f'"""{name} (the same change as bench/project)."""\n\n'
            "from yoyo import step\n\n"
            f"__depends__ = {depends}\n\n"
            f"steps = [\n    {steps},\n]\n"
        )
        previous = name
    return folder


def write_chain(folder: Path, count: int, url: URL | None = None) -> Path:
    """An Alembic project of ``count`` linear revisions; returns its alembic.ini."""
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    shutil.copy(ENV_PY, folder / "migrations" / "env.py")
    previous = None
    for i in range(1, count + 1):
        rev = f"r{i:04d}"
        (versions / f"{rev}_t{i:04d}.py").write_text(
            f'"""create t{i:04d}\n\nRevision ID: {rev}\nRevises: {previous or ""}\n"""\n'
            "import sqlalchemy as sa\n"
            "from alembic import op\n\n"
            f"revision = {rev!r}\n"
            f"down_revision = {previous!r}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n\n"
            "def upgrade() -> None:\n"
            f"    op.create_table('t{i:04d}', sa.Column('id', sa.Integer, primary_key=True),\n"
            "                    sa.Column('name', sa.String(50)))\n\n\n"
            "def downgrade() -> None:\n"
            f"    op.drop_table('t{i:04d}')\n"
        )
        previous = rev
    ini = folder / "alembic.ini"
    set_url(ini, url)
    return ini


def set_url(ini: Path, url: URL | None) -> None:
    """(Re)write ``ini`` with ``url`` as sqlalchemy.url (empty when ``None``)."""
    rendered = url.render_as_string(hide_password=False).replace("%", "%%") if url else ""
    ini.write_text(
        "[alembic]\n"
        "script_location = %(here)s/migrations\n"
        f"sqlalchemy.url = {rendered}\n"
    )
