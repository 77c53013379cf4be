"""JWT verification and minting (spec/shaman.md §3, §12 items 46-58)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shaman_core.asgi import create_app
from shaman_core.config import ShamanConfig
from shaman_core.errors import TokenError
from shaman_core.jwt import JWTAuthenticator, KeyStore, generate_key_pair, mint_token

pytestmark = pytest.mark.anyio


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_minting_without_private_key_fails(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "missing")
    assert keys.private_key is None
    assert keys.public_keys == []
    with pytest.raises(ValueError, match="No private key loaded"):
        mint_token(keys, "someone")


def test_minted_token_verifies_and_one_changed_character_fails(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    token = mint_token(keys, "user-ID")
    verified = JWTAuthenticator(keys).verify(token)
    assert verified.subject == "user-ID"
    assert verified.raw == token
    changed = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    with pytest.raises(TokenError) as caught:
        JWTAuthenticator(keys).verify(changed)
    assert caught.value.status == 401


def test_second_key_in_multi_key_file_is_trusted(tmp_path: Path) -> None:
    generate_key_pair(tmp_path / "a")
    other = ec.generate_private_key(ec.SECP256R1())
    third = ec.generate_private_key(ec.SECP256R1())
    pems = b"".join(
        k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k in (third, other)
    )
    (tmp_path / "a" / "extra-public-keys.pem").write_bytes(pems)
    (tmp_path / "a" / "broken-public.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nxx\n")
    keys = KeyStore(tmp_path / "a")
    assert len(keys.public_keys) == 3
    assert JWTAuthenticator(keys).verify(mint_token(other, "second")).subject == "second"


def _forge(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


def test_alg_none_and_hmac_confusion_refused(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    authenticator = JWTAuthenticator(keys)
    claims = {"sub": "mallory", "exp": time.time() + 3600}
    none_token = _forge({"alg": "none", "typ": "JWT"}, claims, b"")
    public_pem = (key_dir / "es256-public.pem").read_bytes()
    # HS256 "signed" with our public key as the HMAC secret.
    import hashlib
    import hmac

    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256'}).encode())}.{_b64(json.dumps(claims).encode())}"
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    hs256 = pyjwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256")
    for token in (none_token, confused, hs256):
        with pytest.raises(TokenError) as caught:
            authenticator.verify(token)
        assert caught.value.status == 401


def test_expired_token_is_498_and_future_iat_401(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    assert keys.private_key is not None
    now = int(time.time())
    expired = pyjwt.encode(
        {"sub": "x", "iat": now - 4000, "exp": now - 600}, keys.private_key, algorithm="ES256"
    )
    with pytest.raises(TokenError) as caught:
        JWTAuthenticator(keys).verify(expired)
    assert caught.value.status == 498
    assert caught.value.message == "JWT token expired"
    future = pyjwt.encode({"sub": "x", "iat": now + 600}, keys.private_key, algorithm="ES256")
    with pytest.raises(TokenError) as caught:
        JWTAuthenticator(keys).verify(future)
    assert caught.value.status == 401
    assert JWTAuthenticator(keys, leeway=900).verify(future).subject == "x"


def test_cached_token_still_expires(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    authenticator = JWTAuthenticator(keys)
    token = mint_token(keys, "x", lifetime=dt.timedelta(seconds=1))
    assert authenticator.verify(token).subject == "x"
    time.sleep(2.1)
    with pytest.raises(TokenError) as caught:
        authenticator.verify(token)
    assert caught.value.status == 498


def test_token_without_string_subject_refused(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    assert keys.private_key is not None
    for claims in ({"exp": time.time() + 60}, {"sub": 42}):
        token = pyjwt.encode(claims, keys.private_key, algorithm="ES256")
        with pytest.raises(TokenError) as caught:
            JWTAuthenticator(keys).verify(token)
        assert caught.value.status == 401


def test_float_times_from_flamenco_server_accepted(key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    assert keys.private_key is not None
    now = time.time()
    token = pyjwt.encode(
        {"sub": "5a1b", "aud": "other-manager", "iat": now - 1.5, "exp": now + 4 * 3600.0},
        keys.private_key,
        algorithm="ES256",
    )
    assert JWTAuthenticator(keys).verify(token).subject == "5a1b"


@pytest.fixture
async def app_client(config: ShamanConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, run_gc=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s.test"
    ) as http:
        yield http


URL = "/checkout/requirements"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "JWT token authorization required: Authentication token is required\n"),
        ({"Authorization": "Basic username:password"}, None),
        ({"Authorization": "Baa"}, None),
        ({"Authorization": "Bearer 123.abc.327"}, None),
        (
            {"Authorization": "Bearer onlyonepart"},
            "JWT token authorization required: token is malformed\n",
        ),
    ],
)
async def test_http_refuses_without_valid_token(
    app_client: httpx.AsyncClient, headers: dict[str, str], message: str | None
) -> None:
    response = await app_client.post(
        URL, content=b"", headers={**headers, "Content-Type": "text/plain"}
    )
    assert response.status_code == 401
    if message is not None:
        assert response.text == message


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER "])
async def test_http_accepts_bearer_any_case_and_cookie(
    app_client: httpx.AsyncClient, token: str, prefix: str
) -> None:
    response = await app_client.post(
        URL, content=b"", headers={"Authorization": prefix + token, "Content-Type": "text/plain"}
    )
    assert response.status_code == 200
    assert response.headers["x-user-id-from-token"] == "user-ID"
    app_client.cookies.set("jwtToken", token)
    response = await app_client.post(
        URL, content=b"", headers={"Authorization": "Basic nope", "Content-Type": "text/plain"}
    )
    assert response.status_code == 200


async def test_http_expired_is_498(app_client: httpx.AsyncClient, key_dir: Path) -> None:
    keys = KeyStore(key_dir)
    assert keys.private_key is not None
    expired = pyjwt.encode(
        {"sub": "x", "exp": int(time.time()) - 600}, keys.private_key, algorithm="ES256"
    )
    response = await app_client.post(
        URL, content=b"", headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 498
    assert response.text == "JWT token expired\n"


async def test_auth_disabled_and_get_token(tmp_path: Path, key_dir: Path) -> None:
    open_config = ShamanConfig(
        store_dir=tmp_path / "s", checkout_dir=tmp_path / "c", auth_disabled=True, gc_period=0
    )
    app = create_app(open_config, run_gc=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.post(URL, content=b"", headers={"Content-Type": "text/plain"})
        assert response.status_code == 200
        assert "x-user-id-from-token" not in response.headers
        assert (await c.get("/get-token")).status_code == 404
    with pytest.raises(ValueError, match="jwt_key_dir"):
        ShamanConfig(store_dir=tmp_path / "s", checkout_dir=tmp_path / "c")
    token_config = ShamanConfig(
        store_dir=tmp_path / "s",
        checkout_dir=tmp_path / "c",
        jwt_key_dir=key_dir,
        serve_get_token=True,
        gc_period=0,
    )
    app = create_app(token_config, run_gc=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        minted = await c.get("/get-token")
        assert minted.status_code == 200
        info = await c.get("/my-info", headers={"Authorization": f"Bearer {minted.text}"})
        assert info.text == "You are subject user-ID"


async def test_host_application_supplies_its_own_authenticator(tmp_path: Path) -> None:
    from collections.abc import Mapping

    class ApiKeys:
        def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
            if headers.get("authorization") != "Bearer manager-token":
                raise TokenError("JWT token authorization required: unknown token")
            return "alice"

    config = ShamanConfig(
        store_dir=tmp_path / "s", checkout_dir=tmp_path / "c", auth_disabled=True, gc_period=0
    )
    app = create_app(config, run_gc=False, authenticator=ApiKeys())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        headers = {"Content-Type": "text/plain"}
        refused = await c.post(URL, content=b"", headers=headers)
        assert refused.status_code == 401
        accepted = await c.post(
            URL, content=b"", headers={**headers, "Authorization": "Bearer manager-token"}
        )
        assert accepted.status_code == 200
        assert accepted.headers["x-user-id-from-token"] == "alice"
