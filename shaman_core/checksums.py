"""Hashing source files for a pack: SHA-256 in parallel threads, with a persistent cache.

The cache is one SQLite file mapping an absolute path to (size, mtime in ns, checksum); an entry
is used only while size and mtime both still match, so an edited file is always hashed again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["ChecksumCache", "default_cache_path", "hash_file", "hash_files"]

_BLOCK = 1 << 20


def hash_file(path: str | os.PathLike[str]) -> str:
    """Lowercase hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as source:
        buffer = bytearray(_BLOCK)
        view = memoryview(buffer)
        while read := source.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/flamenco-sdk/shaman-checksums.sqlite`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flamenco-sdk" / "shaman-checksums.sqlite"


class ChecksumCache:
    """Checksums of files keyed by absolute path, size and mtime. Use from one thread."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS checksums ("
            " path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, checksum TEXT)"
        )

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The cached checksum, or None when unknown or the file changed."""
        row = self._db.execute(
            "SELECT checksum FROM checksums WHERE path = ? AND size = ? AND mtime_ns = ?",
            (path, size, mtime_ns),
        ).fetchone()
        return None if row is None else str(row[0])

    def put_many(self, rows: Sequence[tuple[str, int, int, str]]) -> None:
        """Remember (path, size, mtime_ns, checksum) rows."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def hash_files(
    paths: Sequence[Path],
    *,
    cache: ChecksumCache | None = None,
    workers: int | None = None,
    on_hashed: Callable[[int], None] | None = None,
) -> list[tuple[str, int]]:
    """(checksum, size) of each path, in order; cached ones are not read again.

    Hashing runs on `workers` threads (hashlib releases the GIL); `on_hashed(size)` is called
    once per file that had to be read.
    """
    results: list[tuple[str, int] | None] = [None] * len(paths)
    to_hash: list[tuple[int, str, int, int]] = []
    for index, path in enumerate(paths):
        absolute = os.path.abspath(path)
        stat = os.stat(absolute)
        cached = cache.get(absolute, stat.st_size, stat.st_mtime_ns) if cache else None
        if cached is not None:
            results[index] = (cached, stat.st_size)
        else:
            to_hash.append((index, absolute, stat.st_size, stat.st_mtime_ns))

    def work(item: tuple[int, str, int, int]) -> str:
        checksum = hash_file(item[1])
        if on_hashed is not None:
            on_hashed(item[2])
        return checksum

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        checksums = list(pool.map(work, to_hash))
    for (index, _absolute, size, _mtime), checksum in zip(to_hash, checksums, strict=True):
        results[index] = (checksum, size)
    if cache is not None and to_hash:
        cache.put_many(
            [
                (a, size, mtime, cs)
                for (_i, a, size, mtime), cs in zip(to_hash, checksums, strict=True)
            ]
        )
    return [r for r in results if r is not None]
