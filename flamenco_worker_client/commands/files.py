"""File-management commands, with the settings and behaviour of Flamenco Worker 2.x.

``copy_file``, ``move_out_of_way``, ``move_to_final``, ``move_with_counter``, ``remove_file``,
``remove_tree`` and ``create_python_file``. Paths are used as given, on the worker's machine.
Slow operations (copies, tree removal) run in a thread so the worker keeps answering.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import datetime
from pathlib import Path

from .context import TaskContext
from .registry import CommandFailed, CommandRegistry, InvalidSettings

__all__ = ["numbered_path", "out_of_the_way_path", "register"]

_LEADING_COUNTER = re.compile(r"(?P<prefix>[0-9_]+)(?P<rest>.*)")


def _non_empty(name: str, value: str) -> Path:
    if not value:
        raise InvalidSettings(f"{name!r} may not be empty")
    return Path(value)


def out_of_the_way_path(path: Path) -> Path:
    """Where ``path`` goes to make room: ``<name>-YYYY-MM-DD_HHMMSS`` after its mtime (local
    time), with ``~N`` added while that name is taken."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d_%H%M%S")
    candidate = path.with_name(f"{path.name}-{stamp}")
    counter = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{stamp}~{counter}")
        counter += 1
    return candidate


def numbered_path(dest: Path) -> Path:
    """``dest`` with a three-digit counter one higher than any existing sibling's.

    ``2018_12_06-spring.mkv`` becomes ``2018_12_06_001-spring.mkv`` (a leading ``[0-9_]+``
    prefix is kept apart); ``video.mkv`` becomes ``video_001.mkv``.
    """
    match = _LEADING_COUNTER.fullmatch(dest.name)
    if match:
        prefix, rest = match["prefix"], match["rest"]
    else:
        prefix, rest = dest.stem, dest.suffix
    pattern = re.compile(re.escape(prefix) + r"_(\d+)" + re.escape(rest))
    highest = 0
    if dest.parent.is_dir():
        for sibling in dest.parent.iterdir():
            found = pattern.fullmatch(sibling.name)
            if found:
                highest = max(highest, int(found[1]))
    return dest.with_name(f"{prefix}_{highest + 1:03d}{rest}")


def _rename(src: Path, dest: Path) -> None:
    try:
        src.rename(dest)
    except OSError as error:
        raise CommandFailed(str(error)) from None


def register(registry: CommandRegistry) -> None:
    """Add the file-management commands to ``registry``."""

    @registry.command("copy_file")
    async def copy_file(ctx: TaskContext, src: str, dest: str) -> None:
        """Copy a file (data and mode), creating the destination's directory."""
        source, target = _non_empty("src", src), _non_empty("dest", dest)
        if not source.exists():
            raise CommandFailed(f"Path {source} does not exist, unable to copy")
        ctx.log(f"{ctx.command_name}: Copying {source} to {target}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.copy, source, target)
        except OSError as error:
            raise CommandFailed(str(error)) from None
        ctx.output_produced(target)

    @registry.command("move_out_of_way")
    async def move_out_of_way(ctx: TaskContext, src: str) -> None:
        """Rename ``src`` after its modification time, if it exists."""
        source = _non_empty("src", src)
        if not source.exists():
            ctx.log(f"{ctx.command_name}: {source} does not exist, nothing to do")
            return
        target = out_of_the_way_path(source)
        ctx.log(f"{ctx.command_name}: Moving {source} to {target}")
        _rename(source, target)

    @registry.command("move_to_final")
    async def move_to_final(ctx: TaskContext, src: str, dest: str) -> None:
        """Rename ``src`` to ``dest``, first moving an existing ``dest`` out of the way."""
        source, target = _non_empty("src", src), _non_empty("dest", dest)
        if not source.exists():
            ctx.log(f"{ctx.command_name}: {source} does not exist, not moving anything")
            return
        if target.exists():
            aside = out_of_the_way_path(target)
            ctx.log(f"{ctx.command_name}: Moving {target} to {aside}")
            _rename(target, aside)
        ctx.log(f"{ctx.command_name}: Moving {source} to {target}")
        _rename(source, target)

    @registry.command("move_with_counter")
    async def move_with_counter(ctx: TaskContext, src: str, dest: str) -> None:
        """Move ``src`` to ``dest`` with the next free three-digit counter in its name."""
        source, target = _non_empty("src", src), _non_empty("dest", dest)
        if not source.exists():
            raise CommandFailed(f"Path {source} does not exist, unable to move")
        target.parent.mkdir(parents=True, exist_ok=True)
        numbered = numbered_path(target)
        ctx.log(f"{ctx.command_name}: Moving {source} to {numbered}")
        try:
            await asyncio.to_thread(shutil.move, source, numbered)
        except OSError as error:
            raise CommandFailed(str(error)) from None
        ctx.output_produced(numbered)

    @registry.command("remove_file")
    async def remove_file(ctx: TaskContext, path: str) -> None:
        """Delete a file; a missing one is fine, a directory is an error."""
        target = _non_empty("path", path)
        if target.is_dir() and not target.is_symlink():
            raise CommandFailed(f"{target} is a directory; use remove_tree")
        ctx.log(f"{ctx.command_name}: Removing {target}")
        target.unlink(missing_ok=True)

    @registry.command("remove_tree")
    async def remove_tree(ctx: TaskContext, path: str) -> None:
        """Delete a directory tree, or a single file; a missing one is fine."""
        target = _non_empty("path", path)
        if not target.exists() and not target.is_symlink():
            ctx.log(f"{ctx.command_name}: {target} does not exist, nothing to remove")
            return
        ctx.log(f"{ctx.command_name}: Removing {target}")
        try:
            if target.is_dir() and not target.is_symlink():
                await asyncio.to_thread(shutil.rmtree, target)
            else:
                target.unlink()
        except OSError as error:
            raise CommandFailed(str(error)) from None

    @registry.command("create_python_file")
    async def create_python_file(ctx: TaskContext, filepath: str, contents: str) -> None:
        """Write a Python file (UTF-8), creating its directory."""
        target = _non_empty("filepath", filepath)
        if target.suffix != ".py":
            raise InvalidSettings("'filepath' must end in .py")
        verb = "Overwriting" if target.exists() else "Creating"
        ctx.log(f"{ctx.command_name}: {verb} Python file {target}")
        ctx.log(f"{ctx.command_name}: contents:\n{contents}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(contents, encoding="utf-8")
        except OSError as error:
            raise CommandFailed(str(error)) from None
