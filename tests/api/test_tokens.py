"""Token revocation: the denylist, the authenticator that reads it, and ``token revoke``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from flamenco_manager.cli import main
from flamenco_manager.services import tokens
from tests.manager.harness import Farm

from .conftest import User

pytestmark = pytest.mark.anyio


async def test_a_revoked_token_is_refused_everywhere(farm: Farm, user: User) -> None:
    other = User(farm, "bob")
    assert (await user.get("/api/jobs")).status_code == 200
    identifier, new = farm.manager.revocations.revoke(user.token)
    assert new
    assert identifier == jwt.decode(user.token, options={"verify_signature": False})["jti"]
    refused = await user.get("/api/jobs")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]
    assert (await user.post("/checkout/requirements", content=b"")).status_code == 401
    login = await farm.client.get("/login", params={"token": user.token}, follow_redirects=False)
    assert login.status_code == 401
    assert (await other.get("/api/jobs")).status_code == 200
    assert farm.manager.revocations.revoke(identifier) == (identifier, False)


async def test_revoking_by_id_and_tokens_without_one(farm: Farm, user: User) -> None:
    from shaman_core.jwt import mint_token

    assert farm.manager.keys is not None
    old_style = mint_token(farm.manager.keys, "legacy", lifetime=timedelta(hours=1))
    headers = {"Authorization": f"Bearer {old_style}"}
    assert (await farm.client.get("/api/farm", headers=headers)).status_code == 200
    farm.manager.revocations.revoke(old_style)
    assert (await farm.client.get("/api/farm", headers=headers)).status_code == 401
    jti = jwt.decode(user.token, options={"verify_signature": False})["jti"]
    farm.manager.revocations.revoke(jti)
    assert (await user.get("/api/farm")).status_code == 401
    for garbage in ("", "a.b.c", "x" * 100):
        with pytest.raises(ValueError, match="token"):
            farm.manager.revocations.revoke(garbage)


def test_another_process_sees_a_revocation_within_seconds(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flamenco_manager.manager import Manager
    from tests.manager.harness import make_settings

    manager = Manager(make_settings(tmp_path, database=database_url))
    # ``token revoke`` finds the database as the manager does: the data directory's SQLite file,
    # or the URL given.
    where = ["--data-dir", str(tmp_path / "data")]
    if database_url:
        where += ["--database", database_url]
    token = manager.mint_user_token("carol", timedelta(hours=1))
    headers = {"authorization": f"Bearer {token}"}
    assert manager.user_auth.authenticate(headers, {}) == "carol"
    status = main(["token", "revoke", *where, token])
    assert status == 0
    assert "Revoked token" in capsys.readouterr().out
    # The manager re-reads the denylist after RELOAD_SECONDS.
    monkeypatch.setattr(tokens, "RELOAD_SECONDS", 0.0)
    from shaman_core.errors import TokenError

    with pytest.raises(TokenError, match="revoked"):
        manager.user_auth.authenticate(headers, {})
    assert main(["token", "revoke", *where, "not a token!"]) == 2
    manager.close()
    if not database_url:
        # A mistyped data directory: revoking there made a new database and said it had worked.
        capsys.readouterr()
        assert main(["token", "revoke", "--data-dir", str(tmp_path / "dta"), token]) == 2
        assert "no manager database in" in capsys.readouterr().err
        assert not (tmp_path / "dta").exists()
