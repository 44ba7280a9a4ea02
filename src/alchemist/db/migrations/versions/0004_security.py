"""security: canonical binary account keys, token versions, shared login limiter, token deny list

Revision ID: 0004_security
Revises: 0003_reliability
Create Date: 2026-11-24
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_security"
down_revision: str | None = "0003_reliability"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOMENT = sa.DateTime(timezone=True).with_variant(sa.dialects.mysql.DATETIME(fsp=6), "mysql")
# Binary on MySQL: its default collations match `víctim@` to `victim@`; SQLite compares bytes already.
ACCOUNT_KEY = sa.String(255).with_variant(
    sa.dialects.mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql"
)


def _canonical(email: str) -> str:
    # Frozen copy of alchemist.auth.users.canonical_email as of this revision (migrations never change).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).strip().lower())


def _canonicalise_emails() -> None:
    """Rewrite stored emails (and the jobs that name them) in canonical form; refuse on collisions."""
    bind = op.get_bind()
    users = sa.table("user", sa.column("id", sa.Integer), sa.column("email", sa.String))
    jobs = sa.table("job", sa.column("owner", sa.String))
    rows = bind.execute(sa.select(users.c.id, users.c.email)).all()
    owners: dict[str, list[str]] = {}
    for _id, email in rows:
        owners.setdefault(_canonical(email), []).append(email)
    clashes = {key: found for key, found in owners.items() if len(found) > 1}
    if clashes:
        raise RuntimeError(
            "these users are one account once emails are canonical (NFKC, lower-case); remove or "
            f"rename all but one of each, then migrate again: {sorted(clashes.values())}"
        )
    for user_id, email in rows:
        canonical = _canonical(email)
        if canonical != email:
            bind.execute(sa.update(users).where(users.c.id == user_id).values(email=canonical))
            bind.execute(sa.update(jobs).where(jobs.c.owner == email).values(owner=canonical))


def upgrade() -> None:
    _canonicalise_emails()
    if op.get_bind().dialect.name == "sqlite":
        # AUTOINCREMENT: SQLite would otherwise reuse a removed newest user's id for the next one,
        # and a token names its user by id. Only a rebuilt table can get it.
        with op.batch_alter_table(
            "user", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    else:
        with op.batch_alter_table("user") as batch:
            batch.add_column(sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
            batch.alter_column("email", existing_type=sa.String(255), type_=ACCOUNT_KEY, nullable=False)
        with op.batch_alter_table("job") as batch:
            batch.alter_column("owner", existing_type=sa.String(255), type_=ACCOUNT_KEY, nullable=False)
    op.create_table(
        "login_failure",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("account", ACCOUNT_KEY, nullable=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("window_start", MOMENT, nullable=False),
    )
    op.create_index("ix_login_failure_account", "login_failure", ["account"])
    op.create_index("ix_login_failure_window_start", "login_failure", ["window_start"])
    op.create_table(
        "revoked_token",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", MOMENT, nullable=False),
    )
    op.create_index("ix_revoked_token_expires_at", "revoked_token", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_revoked_token_expires_at", "revoked_token")
    op.drop_table("revoked_token")
    op.drop_index("ix_login_failure_window_start", "login_failure")
    op.drop_index("ix_login_failure_account", "login_failure")
    op.drop_table("login_failure")
    if op.get_bind().dialect.name != "sqlite":
        with op.batch_alter_table("job") as batch:
            batch.alter_column("owner", existing_type=ACCOUNT_KEY, type_=sa.String(255), nullable=False)
        with op.batch_alter_table("user") as batch:
            batch.alter_column("email", existing_type=ACCOUNT_KEY, type_=sa.String(255), nullable=False)
    with op.batch_alter_table("user") as batch:
        batch.drop_column("token_version")
