"""Runs alone: a job queued again after its attempt died with the model's process is run with no other job
running on any replica (claim_next and claim honour it), so a request that kills the model takes no batch
neighbour with it.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.add_column("predictions", sa.Column("alone", sa.Boolean, nullable=False, server_default=sa.false()))
