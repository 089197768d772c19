"""Owners: each job records the fingerprint of the key that created it, so what only its creator may see
(a webhook URL's query string, which often carries the receiver's token) is shown to that key alone.
Jobs from before have no owner: their webhook URLs are shown without query strings to everyone.

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("predictions", sa.Column("owner", sa.String(64)))
    op.create_index("ix_predictions_owner", "predictions", ["owner"])
