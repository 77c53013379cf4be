"""A stateful model of the store: uploads (good, corrupt, abandoned, interleaved), checkouts
and garbage collection in any order keep the store, the checkouts and the model in step."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from shaman_core.cdf import CheckoutEntry
from shaman_core.checkout import CheckoutBuilder
from shaman_core.errors import MissingFilesError, UploadMismatchError
from shaman_core.gc import collect_garbage
from shaman_core.store import BlobStatus, BlobUpload, FileStore

from .conftest import sha256

CONTENTS = [b"", b"a", b"hello world", bytes(range(256)) * 40]


class StoreMachine(RuleBasedStateMachine):
    uploads = Bundle("uploads")

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="shaman-state-"))
        self.store = FileStore(self.base / "store")
        self.builder = CheckoutBuilder(self.store, self.base / "co", wait_for_uploads=0)
        self.stored: dict[tuple[str, int], bytes] = {}
        self.open: dict[int, tuple[BlobUpload, bytes, bool]] = {}
        self.checkouts: dict[str, list[tuple[str, bytes]]] = {}
        self.next_id = 0

    def teardown(self) -> None:
        for upload, _data, _corrupt in self.open.values():
            upload.discard()
        shutil.rmtree(self.base)

    @rule(target=uploads, content=st.sampled_from(CONTENTS), corrupt=st.booleans())
    def start_upload(self, content: bytes, corrupt: bool) -> int:
        self.next_id += 1
        upload = self.store.begin_upload(sha256(content), len(content))
        sent = (content[:-1] + b"!") if corrupt and content else content
        self.open[self.next_id] = (upload, sent, corrupt and bool(content))
        half = len(sent) // 2
        upload.write(sent[:half])
        return self.next_id

    @rule(ticket=uploads)
    def finish_upload(self, ticket: int) -> None:
        if ticket not in self.open:
            return
        upload, sent, corrupt = self.open.pop(ticket)
        upload.write(sent[len(sent) // 2 :])
        if corrupt:
            with pytest.raises(UploadMismatchError):
                upload.finish()
            upload.discard()
        else:
            upload.finish()
            self.stored[(upload.checksum, upload.size)] = sent

    @rule(ticket=uploads)
    def abandon_upload(self, ticket: int) -> None:
        if ticket in self.open:
            self.open.pop(ticket)[0].discard()

    @rule(picks=st.lists(st.sampled_from(CONTENTS), min_size=1, max_size=4))
    def create_checkout(self, picks: list[bytes]) -> None:
        checkout_id = f"co_{len(self.checkouts) + 100}"
        entries = [CheckoutEntry(sha256(d), len(d), f"dir{i}/f{i}") for i, d in enumerate(picks)]
        if all(entry.key in self.stored for entry in entries):
            self.builder.create(checkout_id, entries)
            self.checkouts[checkout_id] = [(e.path, self.stored[e.key]) for e in entries]
        else:
            with pytest.raises(MissingFilesError):
                self.builder.create(checkout_id, entries)
            assert not self.builder.path_of(checkout_id).exists()

    @rule()
    def collect_everything_unlinked(self) -> None:
        collect_garbage(self.store, [self.builder.root], max_age=0, now=time.time() + 10)
        linked = {
            (sha256(data), len(data)) for files in self.checkouts.values() for _p, data in files
        }
        self.stored = {key: data for key, data in self.stored.items() if key in linked}

    @invariant()
    def store_matches_model(self) -> None:
        for data in CONTENTS:
            key = (sha256(data), len(data))
            status = self.store.status(*key)
            if key in self.stored:
                assert status is BlobStatus.STORED
                assert self.store.blob_path(*key).read_bytes() == data
            elif any((u.checksum, u.size) == key for u, _s, _c in self.open.values()):
                assert status is BlobStatus.UPLOADING
            else:
                assert status is BlobStatus.UNKNOWN

    @invariant()
    def checkouts_resolve(self) -> None:
        for checkout_id, files in self.checkouts.items():
            root = self.builder.path_of(checkout_id)
            for path, data in files:
                assert (root / path).read_bytes() == data


StoreMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestStoreMachine = StoreMachine.TestCase
