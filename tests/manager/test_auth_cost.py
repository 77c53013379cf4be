"""What worker authentication costs: scrypt once per worker, and never many at once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flamenco_manager.manager import Manager
from flamenco_manager.services import auth
from flamenco_manager.storage import workers as worker_store
from flamenco_protocol.documents import WorkerRegistration

from .harness import Farm, WorkerHandle, make_settings, spec


def test_a_new_worker_is_not_hashed_again_on_its_first_request(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = Manager(make_settings(tmp_path, database=database_url))
    try:
        worker = manager.workers.register(
            WorkerRegistration(secret="s3cret", platform="linux", nickname="w"), "10.0.0.5:1"
        )

        def no_scrypt(*args: Any, **kwargs: Any) -> bool:
            raise AssertionError("the secret was verified with scrypt again")

        monkeypatch.setattr(auth, "verify_secret", no_scrypt)
        authenticator = manager.workers.authenticator
        assert authenticator.authenticate(str(worker.id), "s3cret")
        with pytest.raises(AssertionError, match="scrypt again"):
            authenticator.authenticate(str(worker.id), "wrong")
    finally:
        manager.close()


def test_a_burst_of_hashes_runs_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    running = peak = 0
    lock = threading.Lock()
    real_scrypt = auth.hashlib.scrypt

    def counting_scrypt(*args: Any, **kwargs: Any) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        try:
            return real_scrypt(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(auth.hashlib, "scrypt", counting_scrypt)
    with ThreadPoolExecutor(32) as pool:
        hashes = list(pool.map(auth.hash_secret, [f"secret-{i}" for i in range(32)]))
    assert peak <= auth.HASHING_THREADS
    assert auth.verify_secret("secret-7", hashes[7])
    assert not auth.verify_secret("secret-8", hashes[7])


def test_hashes_made_with_other_costs_still_verify() -> None:
    import base64
    import hashlib

    from flamenco_manager.services.auth import hash_secret, verify_secret

    salt = b"0123456789abcdef"
    older = hashlib.scrypt(b"s3cret", salt=salt, n=2**14, r=8, p=1, dklen=64)
    stored = "$".join(
        [
            "scrypt",
            str(2**14),
            "8",
            "1",
            base64.b64encode(salt).decode(),
            base64.b64encode(older).decode(),
        ]
    )
    assert verify_secret("s3cret", stored)
    assert not verify_secret("wrong", stored)
    assert hash_secret("s3cret").startswith("scrypt$4096$8$1$")


@pytest.mark.anyio
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_checking_a_new_worker_never_holds_up_the_event_loops_writes(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's first request is checked on a thread, which reads its stored hash. That read
    must not take SQLite's write lock: the event loop's next write would wait for it, and every
    request on the loop with it."""
    manager = Manager(make_settings(tmp_path, database=database_url))
    try:
        worker = manager.workers.register(
            WorkerRegistration(secret="s3cret", platform="linux", nickname="w"), "10.0.0.5:1"
        )
        manager.workers.authenticator.forget(str(worker.id))
        reading, release = threading.Event(), threading.Event()
        real_lookup = worker_store.secret_hash

        def slow_lookup(connection: Any, worker_id: str) -> str | None:
            reading.set()
            release.wait(10)
            return real_lookup(connection, worker_id)

        monkeypatch.setattr(worker_store, "secret_hash", slow_lookup)
        check = asyncio.create_task(
            asyncio.to_thread(manager.workers.authenticator.authenticate, str(worker.id), "s3cret")
        )
        assert await asyncio.to_thread(reading.wait, 10)
        letting_go = threading.Timer(2, release.set)
        letting_go.start()
        started = time.monotonic()
        with manager.database.grouping() as wait:
            manager.workers.sign_off(str(worker.id))  # a write, on the event loop's thread
            took = time.monotonic() - started
            await wait.committed()
        release.set()
        letting_go.cancel()
        assert await check
        assert took < 1, f"the write waited {took:.1f} s for the credential check"
    finally:
        manager.close()


@pytest.mark.anyio
async def test_a_workers_next_requests_are_recognised_by_their_header_alone(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one checked request, the same ``Authorization`` header is a dictionary lookup: no
    decoding, no digest, no thread. Any other header is still checked."""
    worker = await farm.register()
    farm.job(spec())
    assert (await farm.fetch(worker)).status_code == 200
    authenticator = farm.manager.workers.authenticator

    def not_again(*args: Any) -> bool:
        raise AssertionError("the credentials were checked again")

    monkeypatch.setattr(authenticator, "is_remembered", not_again)
    monkeypatch.setattr(authenticator, "authenticate", not_again)
    assert (await farm.fetch(worker)).status_code == 200
    task = farm.worker(worker).current_task
    assert (await farm.update(worker, str(task), activity="rendering")).status_code == 204
    assert (await farm.may_i_run(worker, str(task)))["may_keep_running"]
    monkeypatch.undo()

    for wrong in (
        WorkerHandle(worker.id, worker.secret + "x", worker.nickname),  # another secret
        WorkerHandle("5f1e0c0a2b3c4d5e6f708192", worker.secret, "ghost"),  # another worker
    ):
        assert (await farm.fetch(wrong)).status_code == 401


@pytest.mark.anyio
async def test_a_remembered_header_goes_with_its_worker_and_its_verification(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = await farm.register()
    assert (await farm.fetch(worker)).status_code == 204
    checks: list[str] = []
    real_verify = auth.verify_secret

    def counting_verify(secret: str, stored: str) -> bool:
        checks.append(secret)
        return real_verify(secret, stored)

    monkeypatch.setattr(auth, "verify_secret", counting_verify)
    assert (await farm.fetch(worker)).status_code == 204
    assert checks == []

    # The verification expires, and the header with it: the secret goes through scrypt again.
    later = time.monotonic() + auth.CACHE_SECONDS + 1
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    assert (await farm.fetch(worker)).status_code == 204
    assert checks == [worker.secret]
    assert (await farm.fetch(worker)).status_code == 204
    assert checks == [worker.secret]

    # Credentials forgotten take their header along: the next request is checked again.
    farm.manager.workers.authenticator.forget(worker.id)
    assert (await farm.fetch(worker)).status_code == 204
    assert checks == [worker.secret, worker.secret]
    # A deleted worker is refused.
    farm.manager.workers.forget(worker.id)
    assert (await farm.fetch(worker)).status_code == 401


def test_a_header_is_remembered_only_for_credentials_still_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CACHE_SIZE", 1)
    authenticator = auth.WorkerAuthenticator(lambda worker_id: None)
    authenticator.remember("a" * 24, "secret-a")
    authenticator.remember_header("Basic aaa", "a" * 24, "wrong")  # not what was verified
    assert authenticator.remembered_header("Basic aaa") is None
    authenticator.remember_header("Basic aaa", "a" * 24, "secret-a")
    assert authenticator.remembered_header("Basic aaa") == "a" * 24
    # Another secret verified for the same worker: the old header goes.
    authenticator.remember("a" * 24, "secret-a2")
    assert authenticator.remembered_header("Basic aaa") is None
    authenticator.remember_header("Basic aaa2", "a" * 24, "secret-a2")
    # A worker pushed out of the cache takes its header along.
    authenticator.remember("b" * 24, "secret-b")
    assert authenticator.remembered_header("Basic aaa2") is None
    authenticator.remember_header("Basic bbb", "b" * 24, "secret-b")
    assert authenticator.remembered_header("Basic bbb") == "b" * 24
