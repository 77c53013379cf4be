"""A worker with a command of its own: ``greet``.

Run: ``python examples/custom_worker.py http://manager:8080/ [DATA_DIR] [--single]``. It
registers (keeping its credentials in DATA_DIR), runs tasks of type ``greeting`` with the
built-in commands plus ``greet``, and with ``--single`` signs off after one task.
"""

from __future__ import annotations

import sys

from flamenco_worker_client import TaskContext, Worker


def build(manager_url: str, data_dir: str | None = None, single: bool = False) -> Worker:
    """The worker, with the ``greet`` command registered."""
    worker = Worker(
        manager_url, task_types=["greeting"], nickname="greeter", data_dir=data_dir, single=single
    )

    @worker.command("greet")
    async def greet(ctx: TaskContext, name: str, times: int = 1) -> None:
        """Log a greeting ``times`` times, reporting progress."""
        for done in range(1, times + 1):
            ctx.log(f"Hello, {name}!")
            ctx.set_progress(100 * done / times)
        ctx.set_activity(f"greeted {name} {times} times")

    return worker


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--single"]
    data_dir = arguments[1] if len(arguments) > 1 else None
    sys.exit(build(arguments[0], data_dir, single="--single" in sys.argv).run())
