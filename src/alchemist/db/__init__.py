"""Database access (SQLAlchemy 2) and schema migrations (Alembic)."""
