"""Garbage collection: delete old stored blobs that no checkout links to.

A blob is deleted only when all of these hold: its mtime is older than ``max_age``; no symlink
in any checkout tree resolves to it (both sides compared as fully resolved real paths, so a
symlinked or relative store path cannot make an in-use blob look unused); and its mtime did not
change while the sweep ran (a blob touched by a concurrent requirements or checkout call is
kept). A checkout tree that cannot be scanned aborts the sweep before anything is deleted.

Each sweep first removes what dead processes left behind: temp files of uploads
(`FileStore.remove_stale_uploads`) and half-built checkouts (`remove_stale_builds`), whose links
then keep nothing alive. Builds in progress count like checkouts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Container, Iterable, Sequence
from pathlib import Path

import attrs

from shaman_core.checkout import is_build_name, remove_stale_builds
from shaman_core.errors import GarbageCollectionError
from shaman_core.store import FileStore

__all__ = ["GCReport", "collect_garbage", "run_periodically"]

log = logging.getLogger(__name__)


@attrs.define
class GCReport:
    """What one sweep found and did. In a dry run `deleted` lists what would be deleted, and
    `stale_uploads` and `stale_builds` count the crash leftovers that would be removed."""

    dry_run: bool
    old_blobs: int = 0
    symlinks_checked: int = 0
    still_used: int = 0
    deleted: list[Path] = attrs.Factory(list)
    kept_touched: int = 0
    bytes_freed: int = 0
    stale_uploads: int = 0
    stale_builds: int = 0


def collect_garbage(
    store: FileStore,
    checkout_roots: Sequence[str | os.PathLike[str]],
    *,
    max_age: float,
    dry_run: bool = False,
    now: float | None = None,
) -> GCReport:
    """Run one sweep over `store`, keeping every blob linked from `checkout_roots`.

    `max_age` is in seconds, zero or more: a negative age would take blobs being uploaded
    right now for a checkout not yet made. Crash leftovers (unheld upload temp files and build
    directories) are removed first. Raises `GarbageCollectionError` (deleting no blob) when a
    checkout root cannot be walked.
    """
    if not 0 <= max_age < math.inf:  # NaN fails every comparison
        raise ValueError(f"max_age must be a finite number of seconds, 0 or more, not {max_age}")
    report = GCReport(dry_run=dry_run)
    report.stale_uploads = store.remove_stale_uploads(dry_run=dry_run)
    stale_builds = {
        str(path) for root in checkout_roots for path in remove_stale_builds(root, dry_run=dry_run)
    }
    report.stale_builds = len(stale_builds)
    threshold = round((time.time() if now is None else now) - max_age)
    candidates = _old_blobs(store, threshold)
    report.old_blobs = len(candidates)
    if not candidates:
        return report
    for root in checkout_roots:
        for target in _symlink_targets(Path(root), skip=stale_builds):
            report.symlinks_checked += 1
            if candidates.pop(target, None) is not None:
                report.still_used += 1
        if not candidates:
            return report
    for walked_path, mtime in sorted(candidates.values()):
        try:
            stat = os.stat(walked_path)
        except FileNotFoundError:
            continue
        if stat.st_mtime_ns > mtime:
            report.kept_touched += 1
            continue
        report.bytes_freed += stat.st_size
        report.deleted.append(Path(walked_path))
        if dry_run:
            log.info("GC would delete %s", walked_path)
            continue
        try:
            os.unlink(walked_path)
        except FileNotFoundError:
            continue
        store._remove_empty_parents(Path(walked_path).parent, store.stored_dir)
    log.info(
        "GC %s: %d old blobs, %d still used, %d deleted, %d bytes freed; "
        "crash leftovers: %d upload temp files, %d half-built checkouts",
        "dry run" if dry_run else "sweep",
        report.old_blobs,
        report.still_used,
        len(report.deleted),
        report.bytes_freed,
        report.stale_uploads,
        report.stale_builds,
    )
    return report


def _old_blobs(store: FileStore, threshold: float) -> dict[str, tuple[str, int]]:
    """Map real path -> (walked path, mtime_ns) for every stored file older than threshold."""
    threshold_ns = int(threshold * 1_000_000_000)
    real_stored = os.path.realpath(store.stored_dir)
    found: dict[str, tuple[str, int]] = {}
    for dirpath, _dirnames, filenames in os.walk(store.stored_dir):
        real_dir = real_stored + dirpath[len(str(store.stored_dir)) :]
        for name in filenames:
            walked = os.path.join(dirpath, name)
            try:
                stat = os.lstat(walked)
            except FileNotFoundError:
                continue
            if stat.st_mtime_ns < threshold_ns:
                found[os.path.join(real_dir, name)] = (walked, stat.st_mtime_ns)
    return found


def _symlink_targets(root: Path, skip: Container[str] = ()) -> Iterable[str]:
    """Real paths of every symlink under `root`, except in the directories in `skip` (absolute)."""

    def fail(error: OSError) -> None:
        if isinstance(error, FileNotFoundError) and _in_build(root, error.filename):
            # Moved into place (or given up) since it was listed. Its create touched its blobs
            # before linking them, so they are younger than any candidate or kept as touched.
            return
        raise GarbageCollectionError(f"cannot scan checkout tree {root}: {error}") from error

    if not root.is_dir():
        raise GarbageCollectionError(f"checkout tree {root} does not exist")
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        # os.walk lists symlinks to directories among dirnames but does not descend into them.
        for name in (*filenames, *dirnames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                yield os.path.realpath(path)
        if skip:
            dirnames[:] = [
                name
                for name in dirnames
                if os.path.abspath(os.path.join(dirpath, name)) not in skip
            ]


def _in_build(root: Path, path: object) -> bool:
    """Whether `path` is a checkout build directory (``{fan-out}/.build-*``) or inside one."""
    if not isinstance(path, str):
        return False
    parts = Path(os.path.relpath(path, root)).parts
    return len(parts) >= 2 and is_build_name(parts[1])


async def run_periodically(
    store: FileStore,
    checkout_roots: Sequence[str | os.PathLike[str]],
    *,
    max_age: float,
    period: float,
    dry_run: bool = False,
) -> None:
    """Sweep now, then again `period` seconds after each sweep ends; cancel the task to stop.

    Sweeps run in a worker thread; a failed sweep is logged and retried next period.
    """
    while True:
        try:
            await asyncio.to_thread(
                collect_garbage, store, checkout_roots, max_age=max_age, dry_run=dry_run
            )
        except GarbageCollectionError as error:
            log.error("GC sweep aborted, nothing deleted: %s", error)
        await asyncio.sleep(period)
