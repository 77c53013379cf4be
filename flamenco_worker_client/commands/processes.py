"""Running subprocesses for commands: output logged line by line, stopped cleanly when told.

A subprocess runs in its own session (process group), so stopping it reaches whatever it
started too: ``/bin/sh -c '...'`` and its children go together. Stopping sends SIGTERM to the
group, waits ``terminate_grace`` seconds, then sends SIGKILL. The same happens when the command
is cancelled (the manager said stop, the worker shuts down) and when the subprocess stays silent
longer than ``line_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from .context import TaskContext
from .registry import CommandFailed, CommandRegistry, InvalidSettings

__all__ = ["LineHandler", "register", "run_process", "stop_process"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

LineHandler = Callable[[str], str | None]
"""Called with each output line; returns the text to log (after ``pid=<pid> >``), or ``None``."""


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace`` seconds; wait until it is gone."""
    if process.returncode is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        _signal_group(process, signal.SIGKILL)
        await process.wait()


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":  # pragma: no cover - process groups are POSIX
            process.send_signal(signum)
        else:
            os.killpg(process.pid, signum)


async def run_process(
    context: TaskContext,
    args: Sequence[str],
    *,
    on_line: LineHandler | None = None,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``args`` (no shell), log its merged stdout/stderr, fail on a non-zero exit.

    Each output line is logged as ``pid=<pid> > <line>``; ``on_line`` may change or drop it. Output
    that is not UTF-8 is logged with replacement characters rather than failing the task.

    :raises CommandFailed: the program could not start, exited non-zero, was killed, or stayed
        silent for longer than ``context.limits.line_timeout``.
    """
    command_line = shlex.join(args)
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            limit=1 << 20,
        )
    except OSError as error:
        raise CommandFailed(f"unable to start {command_line}: {error}") from None
    assert process.stdout is not None
    pid = process.pid
    context.log(f"{context.command_name}: started {command_line} (pid={pid})")
    try:
        async for line in _output_lines(process.stdout, context.limits.line_timeout):
            text = on_line(line) if on_line is not None else line
            if text is not None:
                context.log(f"pid={pid} > {text}")
        status = await process.wait()
    except _Silent:
        raise CommandFailed(
            f"Command {command_line} (pid={pid}) produced no output for "
            f"{context.limits.line_timeout:g} seconds"
        ) from None
    finally:
        # Cancelled, timed out or failed while reading: the subprocess must not outlive us.
        await asyncio.shield(stop_process(process, context.limits.terminate_grace))
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"failed with status {status}"
        raise CommandFailed(f"Command {command_line} (pid={pid}) {how}")


async def _output_lines(stream: asyncio.StreamReader, timeout: float) -> AsyncIterator[str]:
    """Lines of ``stream``, split at ``\n``, ``\r\n`` *and* a lone ``\r``.

    Programs that redraw a progress line (FFmpeg, curl) end it with ``\r``; splitting there
    makes every redraw a line of its own instead of one line that never ends.
    """
    pending = b""
    while True:
        try:
            chunk = await asyncio.wait_for(stream.read(1 << 16), timeout)
        except TimeoutError:
            raise _Silent() from None
        if not chunk:
            break
        pending += chunk
        # A trailing "\r" may be the first half of "\r\n": keep it until more arrives.
        hold = pending.endswith(b"\r")
        parts = _LINE_BREAK.split(pending[:-1] if hold else pending)
        pending = parts.pop() + (b"\r" if hold else b"")
        for part in parts:
            yield part.decode("utf-8", errors="replace")
    pending = pending.rstrip(b"\r")
    if pending:
        yield pending.decode("utf-8", errors="replace")


class _Silent(Exception):
    """The subprocess wrote nothing for too long."""


def register(registry: CommandRegistry) -> None:
    """Add ``exec`` to ``registry``."""

    @registry.command("exec")
    async def exec_command(ctx: TaskContext, cmd: str) -> None:
        """Run ``cmd`` split like a shell would, but without a shell."""
        try:
            args = shlex.split(cmd)
        except ValueError as error:
            raise InvalidSettings(f"'cmd' cannot be split into arguments: {error}") from None
        if not args:
            raise InvalidSettings("'cmd' may not be empty")
        await run_process(ctx, args)
