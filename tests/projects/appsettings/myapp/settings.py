"""The application's settings, read from the environment at import (12-factor style)."""

import os

DATABASE_URL = os.environ["MYAPP_DATABASE_URL"]
