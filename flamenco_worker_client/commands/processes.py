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
from typing import Final

from flamenco_worker_client.reporter import MAX_LINE_BYTES, cut_marker

from .context import TaskContext
from .registry import CommandFailed, CommandRegistry, InvalidSettings

__all__ = ["LineHandler", "register", "run_process", "stop_process"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
# Longest output line kept; below the reporter's cap, leaving room for the "pid=N > " prefix
# and the marker, so the reporter does not cut the line again.
_MAX_OUTPUT_LINE = MAX_LINE_BYTES - 4096

_LAST_OUTPUT_WAIT: Final = 1.0
"""Seconds to read what a stopped subprocess left in its pipe."""

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

    async def log_output(stream: asyncio.StreamReader) -> None:
        async for line in _output_lines(stream, context.limits.line_timeout):
            text = on_line(line) if on_line is not None else line
            if text is not None:
                context.log(f"pid={pid} > {text}")

    # A task of its own, so that it goes on reading while a cancelled command stops the
    # subprocess: what a program says as it is stopped ("Blender quit", an error) is logged.
    reader = asyncio.ensure_future(log_output(process.stdout))
    try:
        await asyncio.shield(reader)
        status = await process.wait()
    except _Silent:
        raise CommandFailed(
            f"Command {command_line} (pid={pid}) produced no output for "
            f"{context.limits.line_timeout:g} seconds"
        ) from None
    finally:
        # Cancelled, timed out or failed while reading: the subprocess must not outlive us.
        await asyncio.shield(_stop(process, reader, context.limits.terminate_grace))
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"failed with status {status}"
        raise CommandFailed(f"Command {command_line} (pid={pid}) {how}")


async def _stop(
    process: asyncio.subprocess.Process, reader: asyncio.Future[None], grace: float
) -> None:
    """Stop ``process`` (:func:`stop_process`) while ``reader`` logs its last output; then give
    the reader a moment for what is still in the pipe, and no more: a process started in a
    session of its own elsewhere may hold the pipe open for ever."""
    await stop_process(process, grace)
    done, _ = await asyncio.wait({reader}, timeout=_LAST_OUTPUT_WAIT)
    if not done:
        reader.cancel()
    with contextlib.suppress(asyncio.CancelledError, _Silent):
        await reader


async def _output_lines(stream: asyncio.StreamReader, timeout: float) -> AsyncIterator[str]:
    """Lines of ``stream``, split at ``\n``, ``\r\n`` *and* a lone ``\r``.

    Programs that redraw a progress line (FFmpeg, curl) end it with ``\r``; splitting there
    makes every redraw a line of its own instead of one line that never ends. Only each new
    chunk is searched for line breaks, and a line keeps at most ``_MAX_OUTPUT_LINE`` bytes;
    the rest is counted and named in a marker at its end.
    """
    pending: list[bytes] = []  # the unfinished line, without line breaks
    kept = 0  # bytes in ``pending``
    cut = 0  # bytes of the unfinished line dropped beyond the cap
    held_cr = False  # the last chunk ended in "\r", maybe the first half of "\r\n"

    def keep(piece: bytes) -> None:
        nonlocal kept, cut
        room = max(0, _MAX_OUTPUT_LINE - kept)
        pending.append(piece[:room])
        kept += min(room, len(piece))
        cut += max(0, len(piece) - room)

    def line(last: bytes) -> str:
        nonlocal kept, cut
        keep(last)
        text = b"".join(pending).decode("utf-8", errors="replace") + cut_marker(cut)
        pending.clear()
        kept = cut = 0
        return text

    while True:
        try:
            chunk = await asyncio.wait_for(stream.read(1 << 16), timeout)
        except TimeoutError:
            raise _Silent() from None
        if not chunk:
            break
        if held_cr:
            chunk = b"\r" + chunk
        held_cr = chunk.endswith(b"\r")
        parts = _LINE_BREAK.split(chunk[:-1] if held_cr else chunk)
        for part in parts[:-1]:
            yield line(part)
        keep(parts[-1])
    if pending or cut:
        text = line(b"")
        if text:
            yield text


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
