"""Submit a job through the user API and follow it until it finishes.

Run: ``python examples/submit_job.py http://manager:8080/ TOKEN`` (the token from
``flamenco-manager token create``; any text with ``--no-auth``). Submits a ``custom`` job of
three tasks — two greetings, then a summary that waits for both — prints each status change, and
exits 0 when the job completed.
"""

from __future__ import annotations

import sys
import time

import httpx

JOB = {
    "name": "example: greetings",
    "type": "custom",
    "priority": 50,
    "settings": {
        "tasks": [
            {
                "name": "greet-alice",
                "task_type": "greeting",
                "commands": [{"name": "greet", "settings": {"name": "Alice", "times": 2}}],
            },
            {
                "name": "greet-bob",
                "task_type": "greeting",
                "commands": [{"name": "greet", "settings": {"name": "Bob"}}],
            },
            {
                "name": "summary",
                "task_type": "greeting",
                "parents": ["greet-alice", "greet-bob"],
                "commands": [{"name": "echo", "settings": {"message": "everyone was greeted"}}],
            },
        ]
    },
}


def main(url: str, token: str, timeout: float = 120.0) -> int:
    """Submit the job and wait for it; 0 when it completed."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as api:
        created = api.post("/api/jobs", json=JOB)
        created.raise_for_status()
        job = created.json()
        print(f"submitted job {job['_id']}: {job['status']}")
        deadline = time.monotonic() + timeout
        status = job["status"]
        while status not in ("completed", "failed", "canceled"):
            if time.monotonic() > deadline:
                print("gave up waiting", file=sys.stderr)
                return 1
            time.sleep(0.5)
            current = api.get(f"/api/jobs/{job['_id']}").json()["status"]
            if current != status:
                print(f"job {job['_id']}: {current}")
                status = current
        for task in api.get(f"/api/jobs/{job['_id']}/tasks").json()["tasks"]:
            print(f"  {task['name']}: {task['status']}")
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
