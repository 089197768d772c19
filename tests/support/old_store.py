"""The job store's tables as the gateway created them before migrations existed (`Base.metadata.create_all`
of commit d468332): today's tables without the columns migrations added since the baseline (0001). The tests
make a database with them and check that today's gateway upgrades it in place."""
from __future__ import annotations

from sqlalchemy import Engine, MetaData, Table

from svd_gateway.store import Base

ADDED_SINCE_BASELINE = {"predictions": {"lease_holder", "lease_expires_at", "owner", "polled", "progress", "mode", "keep_input",
                                        "api_key", "retry_at", "failures", "alone"},
                        "files": {"owner"}}
"""Columns (with their indexes) each migration after 0001 added: keep in step with migrations/versions/."""
TABLES_SINCE_BASELINE = {"api_keys", "owners"}
"""Tables migrations after 0001 created."""


def create_old_schema(engine: Engine) -> None:
    """The two tables and their indexes, as the old gateway made them at its first start."""
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name in TABLES_SINCE_BASELINE:
            continue
        added = ADDED_SINCE_BASELINE.get(table.name, set())
        Table(table.name, metadata, *(column._copy() for column in table.columns if column.name not in added))
    metadata.create_all(engine)
