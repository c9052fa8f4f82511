"""Server error codes herd tells apart, with no import beyond the standard library (the fast
lane reads them before SQLAlchemy is imported; :mod:`._tables` through SQLAlchemy's errors).

PostgreSQL's are SQLSTATEs (strings), MySQL/MariaDB's error numbers (ints)."""

from __future__ import annotations

NO_SUCH_TABLE = frozenset({"42P01", 1146})
"""PostgreSQL undefined_table; MySQL ER_NO_SUCH_TABLE."""
NO_SUCH_SCHEMA = frozenset({"3F000", 1049})
"""PostgreSQL invalid_schema_name; MySQL ER_BAD_DB_ERROR (a database is MySQL's schema)."""
DENIED = frozenset({"42501", 1044, 1142, 1143})
"""PostgreSQL insufficient_privilege; MySQL database access denied, table / column command
denied."""
