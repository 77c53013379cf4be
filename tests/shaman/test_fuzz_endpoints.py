"""Hypothesis fuzzing of every Shaman endpoint: never a 500, nothing outside the roots, no
blob whose content does not match its name."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
import urllib.parse
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaman_core.asgi import create_app
from shaman_core.config import ShamanConfig

from .conftest import sha256

KNOWN = [b"", b"known blob", b"another one \x00\xff"]
path_text = st.lists(
    st.sampled_from([*"ab./ \\:\x00\t\r-_éü", "..", "../", "C:"]), max_size=12
).map("".join)
checksums = st.one_of(
    st.sampled_from([sha256(b) for b in KNOWN]),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    st.text(max_size=80),
    st.just(".." * 20),
)
sizes = st.one_of(
    st.sampled_from([str(len(b)) for b in KNOWN]),
    st.integers(-5, 2**64).map(str),
    st.text(max_size=6),
)


@st.composite
def definitions(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        blob = draw(st.sampled_from(KNOWN))
        checksum = draw(st.one_of(st.just(sha256(blob)), checksums))
        size = draw(st.one_of(st.just(str(len(blob))), sizes))
        separator = draw(st.sampled_from([" ", "  ", "\t"]))
        lines.append(f"{checksum}{separator}{size} {draw(path_text)}")
    ending = draw(st.sampled_from(["\n", "\r\n", ""]))
    return ending.join(lines).encode("utf-8", "surrogatepass")


class Harness:
    def __init__(self, base: Path, key_dir: Path) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        config = ShamanConfig(
            store_dir=base / "store",
            checkout_dir=base / "checkouts",
            jwt_key_dir=key_dir,
            gc_period=0,
            create_waits_for_uploads=0,
        )
        self.app = create_app(config, run_gc=False)
        shaman = self.app.state.shaman
        for data in KNOWN:
            with shaman.store.begin_upload(sha256(data), len(data)) as upload:
                upload.write(data)
                upload.finish()
        self.stored = shaman.store.stored_dir

    def request(
        self, token: str, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                return await client.request(
                    method,
                    path,
                    content=body,
                    headers={"Authorization": f"Bearer {token}", **headers},
                )

        return asyncio.run(send())

    def check_invariants(self, response: httpx.Response) -> None:
        assert response.status_code < 500, response.text
        assert set(os.listdir(self.base)) <= {"store", "checkouts", "outside"}
        assert os.listdir(self.outside) == []
        for dirpath, _dirs, files in os.walk(self.stored):
            for name in files:
                data = Path(dirpath, name).read_bytes()
                checksum = os.path.relpath(dirpath, self.stored).replace(os.sep, "")
                assert name == f"{len(data)}.blob"
                assert hashlib.sha256(data).hexdigest() == checksum
        real_stored = os.path.realpath(self.stored)
        for dirpath, dirs, files in os.walk(self.base / "checkouts"):
            for name in (*dirs, *files):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    assert os.path.realpath(path).startswith(real_stored + os.sep)


@pytest.fixture
def harness(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> Harness:
    return Harness(tmp_path_factory.mktemp("fuzz"), key_dir)


def _maybe_gzip(body: bytes, gzipped: bool) -> tuple[bytes, dict[str, str]]:
    return (gzip.compress(body), {"Content-Encoding": "gzip"}) if gzipped else (body, {})


@given(
    method=st.sampled_from(["POST", "OPTIONS", "GET"]),
    checksum=checksums,
    size=sizes,
    body=st.one_of(st.sampled_from(KNOWN), st.binary(max_size=300)),
    gzipped=st.booleans(),
    defer=st.booleans(),
    correct=st.booleans(),
)
def test_fuzz_files(
    harness: Harness,
    token: str,
    method: str,
    checksum: str,
    size: str,
    body: bytes,
    gzipped: bool,
    defer: bool,
    correct: bool,
) -> None:
    if correct:
        checksum, size = sha256(body), str(len(body))
    url = f"/files/{urllib.parse.quote(checksum, safe='')}/{urllib.parse.quote(size, safe='')}"
    content, headers = _maybe_gzip(body, gzipped)
    if defer:
        headers["X-Shaman-Can-Defer-Upload"] = "true"
    response = harness.request(token, method, url, content, headers)
    harness.check_invariants(response)
    if correct and method == "POST":
        assert response.status_code in (204, 208)


@given(
    definition=definitions(),
    gzipped=st.booleans(),
    content_type=st.sampled_from(["text/plain", "text/plain; charset=utf-8", "application/json"]),
)
def test_fuzz_requirements(
    harness: Harness, token: str, definition: bytes, gzipped: bool, content_type: str
) -> None:
    content, headers = _maybe_gzip(definition, gzipped)
    response = harness.request(
        token, "POST", "/checkout/requirements", content, {**headers, "Content-Type": content_type}
    )
    harness.check_invariants(response)
    if response.status_code == 200:
        for line in response.content.split(b"\n")[:-1]:
            assert line.split(b" ", 1)[0] in (b"file-unknown", b"already-uploading")


@given(
    definition=definitions(),
    gzipped=st.booleans(),
    checkout_id=st.one_of(
        st.from_regex(r"[A-Za-z0-9_]{2,10}", fullmatch=True), st.text(min_size=1, max_size=12)
    ),
)
def test_fuzz_create(
    harness: Harness, token: str, definition: bytes, gzipped: bool, checkout_id: str
) -> None:
    content, headers = _maybe_gzip(definition, gzipped)
    url = f"/checkout/create/{urllib.parse.quote(checkout_id, safe='')}"
    response = harness.request(
        token, "POST", url, content, {**headers, "Content-Type": "text/plain"}
    )
    harness.check_invariants(response)
    if response.status_code not in (200, 409) and re.fullmatch(r"\w{2,200}", checkout_id, re.ASCII):
        # A refused checkout leaves no directory of its own behind.
        assert not (harness.base / "checkouts" / checkout_id[-2:] / checkout_id).exists()
