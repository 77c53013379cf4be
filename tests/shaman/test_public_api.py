"""The public names of `shaman_core`, and that its core stays free of the HTTP stack."""

from __future__ import annotations

import subprocess
import sys

import shaman_core

EXPECTED = {
    "AllowEveryone", "Authenticator", "BlobStatus", "BlobUpload", "CheckoutBuilder",
    "CheckoutConflictError", "CheckoutEntry", "CheckoutExistsError", "ChecksumCache",
    "DefinitionError", "DefinitionReader", "FileStore", "GCReport", "GarbageCollectionError",
    "InvalidRequestError", "JWTAuthenticator", "KeyStore", "MissingFilesError", "Progress",
    "ProgressBar", "Shaman", "ShamanConfig", "ShamanError", "TokenError", "UploadMismatchError",
    "VerifiedToken", "WriteBuffer", "checkout_relpath", "collect_garbage", "format_definition",
    "format_requirements", "generate_key_pair", "hash_file", "hash_files", "mint_token",
    "parse_definition", "requirements", "run_periodically", "token_from_request",
    "validate_checkout_id", "validate_checksum", "validate_path",
}  # fmt: skip


def test_public_names() -> None:
    assert set(shaman_core.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(shaman_core, name).__doc__, f"{name} has no docstring"


def test_core_imports_without_the_http_stack() -> None:
    code = (
        "import sys, shaman_core; "
        "print(sorted(m for m in ('starlette', 'httpx', 'uvicorn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
