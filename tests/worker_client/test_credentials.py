"""Credentials: secrets, the 0600 file, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flamenco_protocol import ObjectId
from flamenco_worker_client import Credentials, CredentialStore, generate_secret
from flamenco_worker_client.credentials import CredentialsFileError

WORKER_ID = ObjectId("5f1e0c0a2b3c4d5e6f708192")


def test_secrets_are_64_alphanumerics_and_differ() -> None:
    first, second = generate_secret(), generate_secret()
    assert len(first) == 64
    assert first.isalnum()
    assert first.isascii()
    assert first != second


def test_a_saved_secret_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        store = CredentialStore(tmp_path / "sub" / "credentials.json")
        store.save(Credentials(WORKER_ID, "secret"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == Credentials(WORKER_ID, "secret")
    assert [p.name for p in store.path.parent.iterdir()] == ["credentials.json"]


def test_saving_again_replaces_the_credentials(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(Credentials(WORKER_ID, "one"))
    store.save(Credentials(ObjectId("5f1e0c0a2b3c4d5e6f708193"), "two"))
    loaded = store.load()
    assert loaded is not None
    assert loaded.secret == "two"


def test_no_file_means_no_credentials_and_forget_removes_them(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    assert store.load() is None
    store.save(Credentials(WORKER_ID, "x"))
    store.forget()
    assert store.load() is None
    store.forget()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        '{"worker_id": "nothex", "worker_secret": "x"}',
        '{"worker_id": null}',
        '{"worker_id": "5f1e0c0a2b3c4d5e6f708192", "worker_secret": ""}',
    ],
)
def test_a_damaged_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(CredentialsFileError, match="no valid credentials"):
        CredentialStore(path).load()


def test_the_secret_stays_out_of_repr() -> None:
    assert "hunter2" not in repr(Credentials(WORKER_ID, "hunter2"))
