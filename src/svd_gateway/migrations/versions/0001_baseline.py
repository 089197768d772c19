"""The schema as the gateway created it before migrations existed (Base.metadata.create_all): a database
made by that code is stamped at this revision and upgraded from here.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("logs", sa.Text, nullable=False),
        sa.Column("output_key", sa.String(64)),
        sa.Column("output_format", sa.String(16)),
        sa.Column("output_bytes", sa.BigInteger),
        sa.Column("output_removed", sa.Boolean, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error_field", sa.String(64)),
        sa.Column("webhook", sa.String(2000)),
        sa.Column("webhook_events", sa.JSON, nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("predict_time", sa.Float),
    )
    op.create_index("ix_predictions_status", "predictions", ["status"])
    op.create_index("ix_predictions_output_key", "predictions", ["output_key"])
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_table(
        "files",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
