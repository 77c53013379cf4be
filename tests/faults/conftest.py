"""Fixtures of the fault tests: each database backend, a disk that can run full."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manager.harness import database_url  # noqa: F401  (each backend, a schema per test)


class TinyDisk:
    """A directory that can be made to run out of space, and given space back.

    A 4 MiB tmpfs mounted on it when this process may mount one (root): :meth:`fill` writes a
    filler file until the file system is full, :meth:`free` deletes it. Without mount rights,
    ``RLIMIT_FSIZE`` of the process writing there (set from outside with ``prlimit``) stands in
    for the full disk: every write past a few bytes fails (``EFBIG`` instead of ``ENOSPC``).
    """

    SIZE = 4 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer_pid: int | None = None
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        if not os.environ.get("FLAMENCO_TEST_NO_TMPFS"):  # set it to try the fallback
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.SIZE},mode=0755", "tmpfs", str(path)],
                capture_output=True,
                check=False,
                timeout=10,
            )
            self.mounted = result.returncode == 0
        self._filler = path / f".filler-{uuid.uuid4().hex}"

    def fill(self) -> None:
        """Leave no space for another write."""
        if not self.mounted:
            assert self.writer_pid is not None, "tell the disk which process writes to it"
            resource.prlimit(self.writer_pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            return
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 512):  # Big blocks, then the last few bytes.
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.path).free < 64 * 1024

    def free(self) -> None:
        """Give the space back."""
        if not self.mounted:
            assert self.writer_pid is not None
            limit = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            with contextlib.suppress(ProcessLookupError):  # It was killed at the end of a test.
                resource.prlimit(self.writer_pid, resource.RLIMIT_FSIZE, limit)
            return
        with contextlib.suppress(FileNotFoundError):
            self._filler.unlink()

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, timeout=10)
            self.mounted = False


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    """A directory on a file system that the test can fill up (see :class:`TinyDisk`)."""
    if os.name != "posix":
        pytest.skip("needs a POSIX system")
    disk = TinyDisk(tmp_path / "tiny-disk")
    try:
        yield disk
    finally:
        disk.unmount()
