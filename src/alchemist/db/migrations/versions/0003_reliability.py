"""outbox, heartbeats, notification leases, retention

Revision ID: 0003_reliability
Revises: 0002_jobs
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_reliability"
down_revision: str | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Microsecond timestamps on MySQL (plain DATETIME keeps whole seconds): leases and
# heartbeats compare times a second apart.
MOMENT = sa.DateTime(timezone=True).with_variant(sa.dialects.mysql.DATETIME(fsp=6), "mysql")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("available_at", MOMENT, nullable=False),
        sa.Column("claimed_until", MOMENT, nullable=True),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("created_at", MOMENT, nullable=True),
    )
    op.create_index("ix_outbox_available_at", "outbox", ["available_at"])
    op.create_index("ix_outbox_claimed_by", "outbox", ["claimed_by"])
    with op.batch_alter_table("job") as batch:
        batch.alter_column("video_fid", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("heartbeat_at", MOMENT, nullable=True))
        batch.add_column(sa.Column("notify_lease_until", MOMENT, nullable=True))
        batch.add_column(sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("expires_at", MOMENT, nullable=True))
        batch.add_column(sa.Column("output_bytes", sa.BigInteger(), nullable=True))
    op.create_index("ix_job_expires_at", "job", ["expires_at"])
    op.create_index("ix_job_updated_at", "job", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_job_updated_at", "job")
    op.drop_index("ix_job_expires_at", "job")
    with op.batch_alter_table("job") as batch:
        for column in ("output_bytes", "expires_at", "notify_attempts", "notify_lease_until", "heartbeat_at"):
            batch.drop_column(column)
        batch.alter_column("video_fid", existing_type=sa.String(64), nullable=False)
    op.drop_table("outbox")
