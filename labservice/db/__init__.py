"""The platform database: tokens, jobs and quotas in SQLite (embedded) or PostgreSQL, via SQLAlchemy Core.

- :mod:`~labservice.db.schema`: the tables; :mod:`~labservice.db.connect`: one engine per URL and process,
  transactions, outages as :class:`~labservice.errors.DatabaseUnavailable`;
- :mod:`~labservice.db.migrate`: the Alembic revisions in ``migrations/`` (`labservice db upgrade`);
- :mod:`~labservice.db.legacy`: importing the tokens.sqlite / jobs.sqlite files of earlier versions.
"""

from labservice.db.connect import Database, database, normalize_url
from labservice.db.migrate import head, migrate, prepare, upgrade

__all__ = ["Database", "database", "head", "migrate", "normalize_url", "prepare", "upgrade"]
