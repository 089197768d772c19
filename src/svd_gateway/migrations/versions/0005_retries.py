"""Retries: a job whose model call was lost to a fault of the transport or of the model's process goes back to the
queue, not before `retry_at` (its backoff), and keeps each failed attempt's error in `failures`.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("predictions", sa.Column("retry_at", sa.DateTime))
    op.add_column("predictions", sa.Column("failures", sa.JSON))
