"""Accounts: API keys (stored as digests, with their owner, scopes, expiry and quotas), owners (each with its own
webhook signing secret), and an owner on every job and uploaded file.

Jobs and files from before belong to the bootstrap owner (`default`, the owner of the gateway's own
SVD_TRITON_TOKEN), so a single-user deployment sees all of its work as before. Jobs record the name of the key
that created them (`api_key`): the per-key cap on active jobs counts them, and operators audit with it.

Indexes serve what every request asks: an owner's page of one family's jobs, the active jobs of a key, the
claim's queued jobs by owner.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
BOOTSTRAP_OWNER = "default"
"""accounts.BOOTSTRAP_OWNER when this migration was written."""


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("max_active", sa.Integer),
        sa.Column("rate_per_minute", sa.Float),
        sa.Column("bucket_tokens", sa.Float),
        sa.Column("bucket_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("last_used_at", sa.DateTime),
    )
    op.create_table(
        "owners",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("webhook_secret", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.add_column("predictions", sa.Column("api_key", sa.String(64)))
    op.add_column("files", sa.Column("owner", sa.String(64)))
    predictions = sa.table("predictions", sa.column("owner", sa.String))
    files = sa.table("files", sa.column("owner", sa.String))
    op.execute(predictions.update().values(owner=BOOTSTRAP_OWNER))
    op.execute(files.update().values(owner=BOOTSTRAP_OWNER))
    op.drop_index("ix_predictions_owner", "predictions")  # the page index below starts with the owner
    op.create_index("ix_predictions_owner_page", "predictions", ["owner", "origin", "created_at", "id"])
    op.create_index("ix_predictions_api_key_status", "predictions", ["api_key", "status"])
    op.create_index("ix_predictions_status_owner", "predictions", ["status", "owner", "created_at"])
    op.create_index("ix_files_owner", "files", ["owner", "created_at"])
