"""Shaman: the content-addressed file store of Flamenco 2.x, as a library.

The names below need nothing beyond attrs, pyjwt and cryptography. The HTTP side lives in
submodules that import their own stack: `shaman_core.asgi` (Starlette: ``create_app``,
``shaman_routes``), `shaman_core.client` (httpx: ``pack``, ``ShamanClient``) and
`shaman_core.cli` (the ``shaman`` command, uvicorn).
"""

from shaman_core.cdf import (
    CheckoutEntry,
    DefinitionReader,
    format_definition,
    parse_definition,
    validate_path,
)
from shaman_core.checkout import (
    CheckoutBuilder,
    checkout_relpath,
    format_requirements,
    requirements,
    validate_checkout_id,
)
from shaman_core.checksums import ChecksumCache, hash_file, hash_files
from shaman_core.config import AllowEveryone, Authenticator, Shaman, ShamanConfig
from shaman_core.errors import (
    CheckoutConflictError,
    CheckoutExistsError,
    DefinitionError,
    GarbageCollectionError,
    InvalidRequestError,
    MissingFilesError,
    ShamanError,
    TokenError,
    UploadMismatchError,
)
from shaman_core.gc import GCReport, collect_garbage, run_periodically
from shaman_core.jwt import (
    JWTAuthenticator,
    KeyStore,
    VerifiedToken,
    generate_key_pair,
    mint_token,
    token_from_request,
)
from shaman_core.progress import Progress, ProgressBar
from shaman_core.store import BlobStatus, BlobUpload, FileStore, WriteBuffer, validate_checksum

__all__ = [
    "AllowEveryone",
    "Authenticator",
    "BlobStatus",
    "BlobUpload",
    "CheckoutBuilder",
    "CheckoutConflictError",
    "CheckoutEntry",
    "CheckoutExistsError",
    "ChecksumCache",
    "DefinitionError",
    "DefinitionReader",
    "FileStore",
    "GCReport",
    "GarbageCollectionError",
    "InvalidRequestError",
    "JWTAuthenticator",
    "KeyStore",
    "MissingFilesError",
    "Progress",
    "ProgressBar",
    "Shaman",
    "ShamanConfig",
    "ShamanError",
    "TokenError",
    "UploadMismatchError",
    "VerifiedToken",
    "WriteBuffer",
    "checkout_relpath",
    "collect_garbage",
    "format_definition",
    "format_requirements",
    "generate_key_pair",
    "hash_file",
    "hash_files",
    "mint_token",
    "parse_definition",
    "requirements",
    "run_periodically",
    "token_from_request",
    "validate_checkout_id",
    "validate_checksum",
    "validate_path",
]
