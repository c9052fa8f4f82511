"""A project with its own migration command, ``python -m shop.cli db upgrade`` (docs/adopting.md,
shape c): it migrates with Alembic's API and then rebuilds a derived table."""
