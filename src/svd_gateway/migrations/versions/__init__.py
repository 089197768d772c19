"""One file per schema version, oldest first (Alembic reads them by revision id, not by name)."""
