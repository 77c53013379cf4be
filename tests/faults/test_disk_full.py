"""The task-log directory and the Shaman store run out of space while the manager serves.

The manager runs as ``flamenco-manager serve`` in a subprocess, its task logs or its Shaman
store on a tiny file system (see ``conftest.TinyDisk``). What must hold:

* a task update that cannot be logged gets ``507`` with a message naming the cause; nothing of
  it is stored (not half a log line, not the status it carried), and the same update sent again
  once there is space is taken as if nothing had happened;
* an upload that cannot be written gets a ``5xx`` answer; no partial blob is ever visible as
  stored (the store answers ``404`` for it), no temp file is left behind, and the same upload
  succeeds once there is space.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from flamenco_manager.services.jobs import TaskSpec
from flamenco_manager.services.task_logs import TaskLogStore
from flamenco_protocol.statuses import TaskStatus
from tests.e2e.farm import Farm

from .conftest import TinyDisk

pytestmark = pytest.mark.slow

BIG_LOG = "rendering tile 17 of 64 ... sample 512/1024, 3.1 GiB used\n" * 2048  # ~120 KiB


def _register(client: httpx.Client) -> dict[str, str]:
    response = client.post(
        "/register-worker",
        json={"secret": "s3cret", "platform": "linux", "supported_task_types": ["sleep"]},
    )
    assert response.status_code == 200, response.text
    token = base64.b64encode(f"{response.json()['_id']}:s3cret".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_task_log_directory_out_of_space(
    database_url: str, tmp_path: Path, tiny_disk: TinyDisk
) -> None:
    farm = Farm(tmp_path)
    farm.database = database_url
    try:
        farm.start_manager("--task-logs-path", str(tiny_disk.path))
        assert farm.manager_process is not None
        tiny_disk.writer_pid = farm.manager_process.pid
        job = farm.manager.jobs.create_job(
            name="disk full",
            job_type="test",
            tasks=[TaskSpec(name="t", task_type="sleep", commands=[{"name": "echo"}])],
        )
        job_id = str(job.id)
        with httpx.Client(base_url=farm.url, timeout=30) as client:
            auth = _register(client)
            task = client.post("/task", headers=auth)
            assert task.status_code == 200, task.text
            task_id = task.json()["_id"]
            path = f"/tasks/{task_id}/update"
            first = client.post(path, headers=auth, json={"task_status": "active", "log": "one"})
            assert first.status_code == 204, first.text
            log_path = TaskLogStore(tiny_disk.path).path(job_id, task_id)
            before = log_path.read_bytes()

            tiny_disk.fill()
            update = {"task_status": "completed", "activity": "done", "log": BIG_LOG}
            refused = client.post(path, headers=auth, json=update)
            assert refused.status_code == 507, refused.text
            assert "Unable to store update" in refused.text
            assert "space" in refused.text or "too large" in refused.text
            # Nothing of the refused update was stored: not its log, not its status.
            assert log_path.read_bytes() == before
            (stored,) = farm.tasks(job_id)
            assert stored.status == TaskStatus.ACTIVE
            assert stored.activity != "done"
            if tiny_disk.mounted or database_url:  # (RLIMIT_FSIZE would stop SQLite too)
                # The manager goes on answering what needs no room in the log directory.
                may = client.get(f"/may-i-run/{task_id}", headers=auth)
                assert may.status_code == 200
                assert may.json()["may_keep_running"] is True

            tiny_disk.free()
            retried = client.post(path, headers=auth, json=update)
            assert retried.status_code == 204, retried.text
        log = log_path.read_text()
        assert log.startswith(before.decode())
        assert log.count(BIG_LOG) == 1
        assert log.endswith(BIG_LOG)
        (stored,) = farm.tasks(job_id)
        assert stored.status == TaskStatus.COMPLETED
        assert farm.job_status(job_id) == "completed"
    finally:
        farm.kill_all()
        tiny_disk.free()


def test_shaman_store_out_of_space(tmp_path: Path, tiny_disk: TinyDisk) -> None:
    farm = Farm(tmp_path)
    try:
        farm.start_manager("--no-auth", "true", "--shaman-file-store-path", str(tiny_disk.path))
        assert farm.manager_process is not None
        tiny_disk.writer_pid = farm.manager_process.pid
        blob = os.urandom(3 * 1024 * 1024)
        checksum, size = hashlib.sha256(blob).hexdigest(), len(blob)
        files = f"/files/{checksum}/{size}"
        stored_path = tiny_disk.path / "stored" / checksum[:2] / checksum[2:] / f"{size}.blob"
        with httpx.Client(base_url=farm.url, timeout=60) as client:
            # A small file goes in while there is space.
            small = b"small file\n"
            small_path = f"/files/{hashlib.sha256(small).hexdigest()}/{len(small)}"
            assert client.post(small_path, content=small).status_code == 204

            tiny_disk.fill()
            refused = client.post(files, content=blob)
            assert 500 <= refused.status_code < 600, refused.text
            assert client.options(files).status_code == 404, "a partial blob looks stored"
            assert not stored_path.exists()
            assert not list((tiny_disk.path / "uploading").rglob("*.tmp")), "temp file left"
            # What was stored before is intact.
            assert client.get(small_path).content == small

            tiny_disk.free()
            accepted = client.post(files, content=blob)
            assert accepted.status_code == 204, accepted.text
            assert client.options(files).status_code == 200
            assert client.get(files).content == blob
        assert stored_path.read_bytes() == blob
        print(f"full store answered {refused.status_code}: {refused.text.strip()!r}")
    finally:
        farm.kill_all()
        tiny_disk.free()
