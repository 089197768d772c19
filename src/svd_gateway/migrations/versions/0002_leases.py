"""Leases: a running (or a synchronous route's reserved) job is held by one gateway process until
`lease_expires_at`; its heartbeat renews the lease, and any replica re-queues a job whose lease expired.
Every write of the holder is conditional on (id, attempts, lease_holder): the fence.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("predictions", sa.Column("lease_holder", sa.String(64)))
    op.add_column("predictions", sa.Column("lease_expires_at", sa.DateTime))
    op.create_index("ix_predictions_lease_holder", "predictions", ["lease_holder"])
    op.create_index("ix_predictions_lease_expires_at", "predictions", ["lease_expires_at"])
