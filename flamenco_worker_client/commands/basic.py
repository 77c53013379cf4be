"""Commands that need nothing but the worker: ``echo``, ``sleep``, ``log_a_lot``."""

from __future__ import annotations

import asyncio

from .context import TaskContext
from .registry import CommandRegistry, InvalidSettings

__all__ = ["register"]


def register(registry: CommandRegistry) -> None:
    """Add ``echo``, ``sleep`` and ``log_a_lot`` to ``registry``."""

    @registry.command("echo")
    async def echo(ctx: TaskContext, message: str) -> None:
        """Add ``message`` to the task log."""
        ctx.log(message)

    @registry.command("sleep")
    async def sleep(ctx: TaskContext, time_in_seconds: float) -> None:
        """Wait ``time_in_seconds``, reporting progress every second."""
        if time_in_seconds < 0:
            raise InvalidSettings("'time_in_seconds' may not be negative")
        ctx.log(f"Sleeping for {time_in_seconds} seconds")
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + time_in_seconds
        while (now := loop.time()) < end:
            ctx.set_progress(100 * (now - start) / max(time_in_seconds, 1e-9))
            await asyncio.sleep(min(1.0, end - now))
        ctx.log(f"Done sleeping for {time_in_seconds} seconds")

    @registry.command("log_a_lot")
    async def log_a_lot(ctx: TaskContext, lines: int = 20000) -> None:
        """Log ``lines`` long lines (to test log handling on the manager)."""
        if lines < 0:
            raise InvalidSettings("'lines' may not be negative")
        ctx.set_activity(f"logging {lines} lines")
        filler = "This is a line of text that makes the log a little longer. " * 3
        for index in range(lines):
            ctx.log(f"{index + 1}/{lines}: {filler}")
            if index % 1000 == 999:
                ctx.set_progress(100 * (index + 1) / lines)
                await asyncio.sleep(0)
