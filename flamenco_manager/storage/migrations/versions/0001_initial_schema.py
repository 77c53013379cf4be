"""Initial schema: workers, jobs, tasks, dependencies, failures, blocklist.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flamenco_manager.storage.schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("job_type", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("status_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("start_paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("submitter", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_status", ["status"], unique=False)

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("secret_hash", sa.String(length=200), nullable=False),
        sa.Column("nickname", sa.Text(), server_default="", nullable=False),
        sa.Column("address", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=40), server_default="", nullable=False),
        sa.Column("platform", sa.String(length=40), server_default="", nullable=False),
        sa.Column("supported_task_types", sa.JSON(), nullable=False),
        sa.Column("software", sa.Text(), server_default="", nullable=False),
        sa.Column("current_task", sa.String(length=24), nullable=True),
        sa.Column("current_task_status", sa.String(length=40), server_default="", nullable=False),
        sa.Column(
            "current_task_updated",
            flamenco_manager.storage.schema.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "last_activity",
            flamenco_manager.storage.schema.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("status_requested", sa.String(length=40), server_default="", nullable=False),
        sa.Column("lazy_status_request", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sleep_schedule", sa.JSON(), nullable=True),
        sa.Column(
            "sleep_next_check",
            flamenco_manager.storage.schema.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "registered", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_sleep_next_check", ["sleep_next_check"], unique=False)
        batch_op.create_index(
            "ix_workers_status_last_activity", ["status", "last_activity"], unique=False
        )

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("job_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("job_priority", sa.Integer(), nullable=False),
        sa.Column("job_type", sa.String(length=100), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column("commands", sa.JSON(), nullable=False),
        sa.Column("activity", sa.Text(), server_default="", nullable=False),
        sa.Column("worker_nickname", sa.Text(), server_default="", nullable=False),
        sa.Column("worker_id", sa.String(length=24), nullable=True),
        sa.Column(
            "last_worker_ping",
            flamenco_manager.storage.schema.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "last_updated",
            flamenco_manager.storage.schema.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("task_progress_percentage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("current_command_idx", sa.Integer(), server_default="0", nullable=False),
        sa.Column("command_progress_percentage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unfinished_parents", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "runnable",
            sa.Boolean(),
            sa.Computed(
                "status IN ('claimed-by-manager', 'queued', 'soft-failed')"
                " AND unfinished_parents = 0",
                persisted=True,
            ),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_tasks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_job_id_status", ["job_id", "status"], unique=False)
        batch_op.create_index(
            "ix_tasks_status_last_worker_ping", ["status", "last_worker_ping"], unique=False
        )
        batch_op.create_index("ix_tasks_worker_id_status", ["worker_id", "status"], unique=False)
        batch_op.create_index(
            "ix_tasks_schedule",
            ["runnable", "task_type", sa.text("job_priority DESC"), sa.text("priority DESC"), "id"],
            unique=False,
        )

    op.create_table(
        "worker_blocklist",
        sa.Column("worker_id", sa.String(length=24), nullable=False),
        sa.Column("job_id", sa.String(length=24), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column(
            "created", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_worker_blocklist_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "worker_id", "job_id", "task_type", name=op.f("pk_worker_blocklist")
        ),
    )
    with op.batch_alter_table("worker_blocklist", schema=None) as batch_op:
        batch_op.create_index(
            "ix_worker_blocklist_job_id_task_type", ["job_id", "task_type"], unique=False
        )

    op.create_table(
        "task_failures",
        sa.Column("task_id", sa.String(length=24), nullable=False),
        sa.Column("worker_id", sa.String(length=24), nullable=False),
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column(
            "failed", flamenco_manager.storage.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_failures_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "worker_id", name=op.f("pk_task_failures")),
    )
    op.create_table(
        "task_parents",
        sa.Column("task_id", sa.String(length=24), nullable=False),
        sa.Column("parent_id", sa.String(length=24), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["tasks.id"],
            name=op.f("fk_task_parents_parent_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_parents_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "parent_id", name=op.f("pk_task_parents")),
    )
    with op.batch_alter_table("task_parents", schema=None) as batch_op:
        batch_op.create_index("ix_task_parents_parent_id", ["parent_id"], unique=False)


def downgrade() -> None:
    """Drop every table."""
    with op.batch_alter_table("task_parents", schema=None) as batch_op:
        batch_op.drop_index("ix_task_parents_parent_id")

    op.drop_table("task_parents")
    op.drop_table("task_failures")
    with op.batch_alter_table("worker_blocklist", schema=None) as batch_op:
        batch_op.drop_index("ix_worker_blocklist_job_id_task_type")

    op.drop_table("worker_blocklist")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_schedule")
        batch_op.drop_index("ix_tasks_worker_id_status")
        batch_op.drop_index("ix_tasks_status_last_worker_ping")
        batch_op.drop_index("ix_tasks_job_id_status")

    op.drop_table("tasks")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_status_last_activity")
        batch_op.drop_index("ix_workers_sleep_next_check")

    op.drop_table("workers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status")

    op.drop_table("jobs")
