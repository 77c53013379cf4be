"""PostgreSQL: a job's task counts are kept per statement, not per row.

Migration 0002's row triggers changed the same ``job_task_counts`` row once per task. In one
transaction, PostgreSQL keeps every version of a row it changes, and each change first looks
for the row's newest version along all the older ones: a statement changing a job's 60,000
tasks took time growing with the square of their number. Submitting such a job took 17.6 s,
cancelling it 38.6 s, requeueing it 42.4 s and deleting it 20.0 s, a transaction holding its
locks all along. Statement triggers see all the rows a statement changed at once (transition
tables) and change each count once, by the number of tasks that moved. The counts stay
increments and decrements, so concurrent statements add up as before.

SQLite changes a row in place: its row triggers stay (a job of 60,000 tasks is cancelled in
well under a second there).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Adds signed numbers of tasks per (job, status) to the counts; used by all three functions.
_ADD = """
    INSERT INTO job_task_counts (job_id, status, task_count)
    SELECT job_id, status, sum(task_count) FROM changes GROUP BY job_id, status
    ON CONFLICT (job_id, status)
    DO UPDATE SET task_count = job_task_counts.task_count + EXCLUDED.task_count;
"""

_UPGRADE = [
    "DROP TRIGGER tr_tasks_count ON tasks",
    "DROP TRIGGER tr_tasks_count_status ON tasks",
    "DROP FUNCTION flamenco_count_tasks()",
    f"""
    CREATE FUNCTION flamenco_count_inserted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WITH changes AS (
            SELECT job_id, status, count(*) AS task_count FROM inserted GROUP BY job_id, status
        ) {_ADD}
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION flamenco_count_deleted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WITH changes AS (
            SELECT job_id, status, -count(*) AS task_count FROM deleted GROUP BY job_id, status
        ) {_ADD}
        RETURN NULL;
    END $$
    """,
    # No join of the two tables (they have no index, and a plan cached for one-row updates
    # made a join of 20,000 rows take more than 30 s): the rows before count down, the rows after
    # count up, and only what does not cancel out is written (a progress update writes nothing).
    f"""
    CREATE FUNCTION flamenco_count_updated_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WITH moves AS (
            SELECT job_id, status, -1 AS task_count FROM old_rows
            UNION ALL
            SELECT job_id, status, 1 FROM new_rows
        ), changes AS (
            SELECT job_id, status, sum(task_count) AS task_count FROM moves
            GROUP BY job_id, status HAVING sum(task_count) <> 0
        ) {_ADD}
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER tr_tasks_count_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted "
    "FOR EACH STATEMENT EXECUTE FUNCTION flamenco_count_inserted_tasks()",
    "CREATE TRIGGER tr_tasks_count_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS deleted "
    "FOR EACH STATEMENT EXECUTE FUNCTION flamenco_count_deleted_tasks()",
    # Transition tables take no column list (UPDATE OF status): every UPDATE fires it, and
    # one that moves no task (a progress update) changes no count.
    "CREATE TRIGGER tr_tasks_count_update AFTER UPDATE ON tasks "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION flamenco_count_updated_tasks()",
]

_DOWNGRADE = [
    "DROP TRIGGER tr_tasks_count_insert ON tasks",
    "DROP TRIGGER tr_tasks_count_delete ON tasks",
    "DROP TRIGGER tr_tasks_count_update ON tasks",
    "DROP FUNCTION flamenco_count_inserted_tasks()",
    "DROP FUNCTION flamenco_count_deleted_tasks()",
    "DROP FUNCTION flamenco_count_updated_tasks()",
    """
    CREATE FUNCTION flamenco_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE job_task_counts SET task_count = task_count - 1
            WHERE job_id = OLD.job_id AND status = OLD.status;
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            INSERT INTO job_task_counts (job_id, status, task_count)
            VALUES (NEW.job_id, NEW.status, 1)
            ON CONFLICT (job_id, status)
            DO UPDATE SET task_count = job_task_counts.task_count + 1;
        END IF;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER tr_tasks_count AFTER INSERT OR DELETE ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION flamenco_count_tasks()",
    "CREATE TRIGGER tr_tasks_count_status AFTER UPDATE OF status ON tasks "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION flamenco_count_tasks()",
]


def upgrade() -> None:
    """On PostgreSQL, replace the row triggers of the counts with statement triggers."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    """Back to 0002's row triggers."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in _DOWNGRADE:
            op.execute(statement)
