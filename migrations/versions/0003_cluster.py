"""instances sharing one database: camera leases, heartbeats, instance on events and outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_instances",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_instances"),
    )
    op.create_table(
        "camera_leases",
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("camera", name="pk_camera_leases"),
    )
    # Batch mode: SQLite cannot add an indexed column in place on every version.
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("instance", sa.String(64), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("instance", sa.String(64), nullable=True))
        batch.create_index("ix_outbox_instance_sent_at", ["instance", "sent_at"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_instance_sent_at")
        batch.drop_column("instance")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("instance")
    op.drop_table("camera_leases")
    op.drop_table("cluster_instances")
