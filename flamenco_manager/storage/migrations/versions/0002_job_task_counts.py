"""Per-job task counts by status, kept by triggers.

A job's status follows from how many of its tasks are in each status; counting them on every
task change cost a scan of the job's tasks (20 ms at 60,000 tasks, on every ``/task`` and
update). Triggers on ``tasks`` keep ``job_task_counts`` right whichever statement changes a
status, so reading the counts is an index lookup.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_INCREMENT = """
    INSERT INTO job_task_counts (job_id, status, task_count) VALUES (NEW.job_id, NEW.status, 1)
    ON CONFLICT (job_id, status) DO UPDATE SET task_count = job_task_counts.task_count + 1;
"""
_DECREMENT = """
    UPDATE job_task_counts SET task_count = task_count - 1
    WHERE job_id = OLD.job_id AND status = OLD.status;
"""

_SQLITE = [
    f"CREATE TRIGGER tr_tasks_count_insert AFTER INSERT ON tasks BEGIN {_INCREMENT} END",
    f"CREATE TRIGGER tr_tasks_count_delete AFTER DELETE ON tasks BEGIN {_DECREMENT} END",
    "CREATE TRIGGER tr_tasks_count_status AFTER UPDATE OF status ON tasks "
    f"WHEN OLD.status != NEW.status BEGIN {_DECREMENT} {_INCREMENT} END",
    "CREATE TRIGGER tr_jobs_count_delete AFTER DELETE ON jobs "
    "BEGIN DELETE FROM job_task_counts WHERE job_id = OLD.id; END",
]

_POSTGRESQL = [
    f"""
    CREATE FUNCTION flamenco_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN {_DECREMENT} END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN {_INCREMENT} END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION flamenco_forget_job_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM job_task_counts WHERE job_id = OLD.id;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER tr_tasks_count AFTER INSERT OR DELETE ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION flamenco_count_tasks()",
    "CREATE TRIGGER tr_tasks_count_status AFTER UPDATE OF status ON tasks "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION flamenco_count_tasks()",
    "CREATE TRIGGER tr_jobs_count_delete AFTER DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION flamenco_forget_job_counts()",
]


def upgrade() -> None:
    """Create the counts table, fill it from the tasks, and add the triggers."""
    op.create_table(
        "job_task_counts",
        sa.Column("job_id", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "status", name=op.f("pk_job_task_counts")),
    )
    op.execute(
        "INSERT INTO job_task_counts (job_id, status, task_count) "
        "SELECT job_id, status, count(*) FROM tasks GROUP BY job_id, status"
    )
    statements = _POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop the triggers and the table."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tr_tasks_count ON tasks")
        op.execute("DROP TRIGGER tr_tasks_count_status ON tasks")
        op.execute("DROP TRIGGER tr_jobs_count_delete ON jobs")
        op.execute("DROP FUNCTION flamenco_count_tasks()")
        op.execute("DROP FUNCTION flamenco_forget_job_counts()")
    else:
        for name in ("insert", "delete", "status"):
            op.execute(f"DROP TRIGGER tr_tasks_count_{name}")
        op.execute("DROP TRIGGER tr_jobs_count_delete")
    op.drop_table("job_task_counts")
