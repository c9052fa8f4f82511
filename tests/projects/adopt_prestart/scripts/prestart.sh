#!/usr/bin/env bash
# Before herd: every container runs this, then starts the app (docs/adopting.md, shape a).
set -e
python -m app.backend_pre_start   # wait for the database
alembic upgrade head              # every replica at once: the incident
