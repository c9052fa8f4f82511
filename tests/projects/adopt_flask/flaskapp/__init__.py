"""A Flask-Migrate application as `flask db init` leaves it (docs/adopting.md, shape b)."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


class Note(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    body = db.Column(db.String(200), nullable=False)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db)
    if os.environ.get("MIGRATE_ON_START"):  # herd inside the app factory
        import alembic_herd

        with app.app_context():
            alembic_herd.upgrade(migrate.get_config(), url=os.environ["DATABASE_URL"])
    return app
