"""jobs

Revision ID: 0002_jobs
Revises: 0001_users
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_jobs"
down_revision: str | None = "0001_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("video_fid", sa.String(64), nullable=False),
        sa.Column("video_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("mp3_fid", sa.String(64), nullable=True),
        sa.Column("pending_mp3_fid", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("warning", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("conversion_seconds", sa.Float(), nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_job_owner", "job", ["owner"])
    op.create_index("ix_job_status", "job", ["status"])
    op.create_index("ix_job_mp3_fid", "job", ["mp3_fid"])


def downgrade() -> None:
    op.drop_table("job")
