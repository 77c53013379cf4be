"""``flamenco-manager backup``: a copy of the farm taken while it runs, that a manager restores."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from flamenco_manager.cli import main
from flamenco_manager.config import Settings
from flamenco_manager.manager import Manager
from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.storage.backup import BackupError, copy_sqlite

TASKS_PER_JOB = 200


def _job(manager: Manager, name: str) -> str:
    specs = [
        TaskSpec(name=f"{name}-{number}", task_type="sleep", commands=[{"name": "sleep"}])
        for number in range(TASKS_PER_JOB)
    ]
    return str(manager.jobs.create_job(name=name, job_type="test", tasks=specs).id)


def test_a_backup_taken_while_jobs_arrive_restores_a_whole_farm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "flamenco-manager.toml").write_text('worker_registration_secret = "farm secret"\n')
    manager = Manager(Settings(data_dir=data))
    token = manager.mint_user_token("alice", timedelta(hours=1))
    first = _job(manager, "before")
    stop, created = threading.Event(), []

    def arrive() -> None:  # another writer, committing jobs all through the copy
        while not stop.is_set():
            created.append(_job(manager, f"during-{len(created)}"))

    writer = threading.Thread(target=arrive)
    writer.start()
    try:
        while len(created) < 3:
            stop.wait(0.01)
        assert main(["backup", "--data-dir", str(data), str(tmp_path / "backup")]) == 0
    finally:
        stop.set()
        writer.join()
        manager.close()
    printed = capsys.readouterr().out
    assert "checked" in printed
    assert "farm secret" in (tmp_path / "backup" / "flamenco-manager.toml").read_text()
    backup = tmp_path / "backup"
    assert {path.name for path in backup.iterdir()} == {
        "flamenco-manager.sqlite",
        "jwt-keys",
        "flamenco-manager.toml",
    }

    restored_dir = tmp_path / "restored"
    shutil.copytree(backup, restored_dir)
    restored = Manager(Settings(data_dir=restored_dir))
    try:
        jobs = {summary.job.name: summary for summary in restored.jobs.page(limit=500).jobs}
        assert "before" in jobs
        assert len(jobs) > 1  # some of the jobs committed during the copy
        # Each job went in with one transaction: the copy has all of a job's tasks, or no job.
        sizes = {len(restored.jobs.tasks(str(summary.job.id))) for summary in jobs.values()}
        assert sizes == {TASKS_PER_JOB}
        assert len(restored.jobs.tasks(first)) == TASKS_PER_JOB
        assert restored.user_auth.authenticate({"authorization": f"Bearer {token}"}, {}) == "alice"
    finally:
        restored.close()


def test_a_backup_never_overwrites_one_already_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Manager(Settings(data_dir=data)).close()
    target = tmp_path / "backup"
    assert main(["backup", "--data-dir", str(data), str(target)]) == 0
    kept = (target / "flamenco-manager.sqlite").read_bytes()
    assert main(["backup", "--data-dir", str(data), str(target)]) == 2
    assert (target / "flamenco-manager.sqlite").read_bytes() == kept


def test_what_is_not_a_database_is_not_copied(tmp_path: Path) -> None:
    garbage = tmp_path / "flamenco-manager.sqlite"
    garbage.write_bytes(b"not a database, but sixteen bytes and more\n" * 100)
    with pytest.raises(BackupError, match="cannot copy"):
        copy_sqlite(garbage, tmp_path / "copy" / "flamenco-manager.sqlite")
    assert list((tmp_path / "copy").iterdir()) == []  # no partial file, no temporary left
    with pytest.raises(BackupError, match="no database"):
        copy_sqlite(tmp_path / "missing.sqlite", tmp_path / "copy" / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()  # not created by looking for it


def test_a_postgresql_farm_is_left_to_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No connection is made: the database is named, not reached.
    url = "postgresql://flamenco@db.invalid/flamenco"
    target = tmp_path / "backup"
    assert main(["backup", "--data-dir", str(tmp_path), "--database", url, str(target)]) == 0
    assert "pg_dump" in capsys.readouterr().out
    assert not target.exists() or list(target.iterdir()) == []
