"""Alembic migrations of the platform database, shipped inside the package (run by labservice.db.upgrade)."""
