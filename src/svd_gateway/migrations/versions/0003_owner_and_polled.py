"""Owners, whether a job is polled, its progress as data, its mode, and statuses in the gateway's own words.

Each job records the fingerprint of the key that created it, so what only its creator may see (a webhook URL's
query string, which often carries the receiver's token) is shown to that key alone; jobs from before have no
owner, and their webhook URLs are shown without query strings to everyone.

Each job records whether its client polls (or is called back) or waits on the line, which the store decided from
the origin's name before: a polled job lost with its replica is queued again, a waited-for one fails.

Each job records its mode: image (image-to-video) or text (text-to-video, the prompt in its params), which was
read from its params before. Statuses become the gateway's own: queued and running (Replicate's starting and
processing, which the Replicate family still answers); the finished ones keep their names.

A job whose image later jobs start from (an OpenAI video, for remix and extend) keeps its input as long as its
video (`keep_input`), instead of a second copy as an uploaded file; videos from before keep their copy.

Each running job records its latest progress (phase, step, total, segment, segments, elapsed) as data, which
each API family renders its own way (a percentage, fal's logs) instead of reading it back from log text.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
WAITED_FOR = ("tir", "forge", "openai")
"""The origins whose clients waited on the line, when origins said so."""


def upgrade() -> None:
    op.add_column("predictions", sa.Column("owner", sa.String(64)))
    op.create_index("ix_predictions_owner", "predictions", ["owner"])
    op.add_column("predictions", sa.Column("polled", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("predictions", sa.Column("progress", sa.JSON))
    op.add_column("predictions", sa.Column("mode", sa.String(8), nullable=False, server_default="image"))
    op.add_column("predictions", sa.Column("keep_input", sa.Boolean, nullable=False, server_default=sa.false()))
    predictions = sa.table(
        "predictions",
        sa.column("id", sa.String),
        sa.column("origin", sa.String),
        sa.column("polled", sa.Boolean),
        sa.column("status", sa.String),
        sa.column("mode", sa.String),
        sa.column("params", sa.JSON),
    )
    op.execute(predictions.update().where(predictions.c.origin.in_(WAITED_FOR)).values(polled=False))
    for old, new in (("starting", "queued"), ("processing", "running")):
        op.execute(predictions.update().where(predictions.c.status == old).values(status=new))
    connection = op.get_bind()
    texts = [
        row.id
        for row in connection.execute(sa.select(predictions.c.id, predictions.c.params))
        if "prompt" in (row.params or {})
    ]
    for start in range(0, len(texts), 500):
        op.execute(predictions.update().where(predictions.c.id.in_(texts[start : start + 500])).values(mode="text"))
